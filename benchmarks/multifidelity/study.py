"""Multi-fidelity study on the water dimer: test error against the number of high-level labels.

    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python benchmarks/multifidelity/study.py
    ... --sizes 25 50 100 200 300 --minutes 2      # the defaults

Data (``water_dimer.xyz``, see README.md): HF/6-31G* labels on 1000 geometries, MP2/6-31G**
on 500 of them (300 "pool", 200 "test").  The 200 test geometries are never trained on at
either level.  For each number N of MP2 labels (the first N of the pool) four ways of using
them are trained with the same Behler-Parrinello model and budget:

* ``direct``: MP2 labels alone;
* ``delta``: E = E_HF + ΔE_ML, ΔE_ML trained on MP2 − HF of the N frames (the HF energy and
  forces of a test geometry come from its stored HF label, i.e. the baseline calculation);
* ``finetune``: pre-trained once on the 800 non-test HF labels, then all layers trained on the
  N MP2 labels (per-element energies refitted to MP2);
* ``multihead``: one model, heads "hf" and "mp2", trained on the 800 HF and N MP2 labels
  together; the "mp2" head is evaluated.

Every run is written under ``--out`` (its config, model and metrics) and skipped when its
metrics exist, so the study resumes after a kill.  Results: ``results.json``, ``results.md``
(table) and ``results.png`` (test force and energy MAE against N).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "src"))

from ase.io import read, write  # noqa: E402

from nearsight.training.config import validate_config  # noqa: E402
from nearsight.training.metrics import write_json  # noqa: E402
from nearsight.training.trainer import Trainer  # noqa: E402

METHODS = ("direct", "delta", "finetune", "multihead")
MODEL = {"cutoff": 6.0, "n_radial": 12, "hidden": [64, 64]}


def training(minutes: float, **extra) -> dict:
    return {
        "epochs": 3000,
        "batch_size": 8,
        "lr": 2e-3,
        "scheduler_patience": 25,
        "early_stopping_patience": 150,
        "sigma_energy": 0.3,  # force-weighted, as measured best on ethanol
        "max_time_minutes": minutes,
        "log_every": 1000,
        "checkpoint_every": 0,
        **extra,
    }


def relabel(frames, energy_key: str, forces_key: str, level: str | None = None):
    """Copies with ``energy``/``forces`` taken from the given keys (and info['level'])."""
    out = []
    for atoms in frames:
        a = atoms.copy()
        a.calc = None
        for key in [k for k in a.info if k.endswith("_energy")]:
            del a.info[key]
        for key in [k for k in a.arrays if k.endswith("_forces")]:
            del a.arrays[key]
        a.info["energy"] = atoms.info[energy_key]
        a.arrays["forces"] = atoms.arrays[forces_key].copy()
        if level:
            a.info["level"] = level
        out.append(a)
    return out


def evaluate(model_path: Path, test, method: str) -> dict:
    """MAE/RMSE against the MP2 labels of the test geometries."""
    import torch

    from nearsight.models.io import load_model
    from nearsight.training.metrics import predict

    model = load_model(model_path)
    from nearsight.data.frame import Frame

    frames = [Frame.from_atoms(a, energy=a.info["mp2_energy"], forces=a.arrays["mp2_forces"]) for a in test]
    preds = predict(model, frames, dtype=torch.float64)
    e_err, f_err = [], []
    for atoms, frame, pred in zip(test, frames, preds):
        energy, forces = pred["energy"], pred["forces"]
        if method == "delta":  # the baseline: the HF calculation of this geometry
            energy, forces = energy + atoms.info["hf_energy"], forces + atoms.arrays["hf_forces"]
        e_err.append(energy - frame.energy)
        f_err.append((forces - frame.forces).ravel())
    e_err, f_err = np.asarray(e_err), np.concatenate(f_err)
    return {
        "energy_mae": float(np.abs(e_err).mean()),
        "energy_rmse": float(np.sqrt((e_err**2).mean())),
        "forces_mae": float(np.abs(f_err).mean()),
        "forces_rmse": float(np.sqrt((f_err**2).mean())),
        "n_test": len(test),
    }


def run(name: str, config: dict, out: Path, test, method: str) -> dict:
    metrics_path = out / name / "metrics.json"
    if metrics_path.is_file():
        return json.loads(metrics_path.read_text())
    config = validate_config(
        {"seed": 0, "dtype": "float32", "num_threads": 1, "output_dir": str(out / name), **config}
    )
    t0 = time.perf_counter()
    Trainer(config, log=lambda m: None).train()
    result = evaluate(out / name / "best_model.pt", test, method)
    result["train_wall_s"] = time.perf_counter() - t0
    write_json(result, metrics_path)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[25, 50, 100, 200, 300])
    parser.add_argument("--minutes", type=float, default=2.0, help="training time cap per run")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    out = args.out
    data_dir = out / "data"
    data_dir.mkdir(parents=True, exist_ok=True)

    frames = read(HERE / "water_dimer.xyz", ":")
    pool = [a for a in frames if a.info.get("split") == "pool"]
    test = [a for a in frames if a.info.get("split") == "test"]
    test_ids = {a.info["index"] for a in test}
    hf_train = [a for a in frames if a.info["index"] not in test_ids]
    print(f"{len(hf_train)} HF training geometries, {len(pool)} MP2 pool, {len(test)} MP2 test", flush=True)

    hf_file = data_dir / "hf_train.xyz"
    write(hf_file, relabel(hf_train, "hf_energy", "hf_forces", "hf"))
    results: dict[str, dict[int, dict]] = {m: {} for m in args.methods}
    pretrained = out / "pretrain_hf" / "best_model.pt"
    if "finetune" in args.methods:
        run("pretrain_hf", {"data": {"train": str(hf_file)}, "model": MODEL, "training": training(3 * args.minutes)},
            out, test, "direct")  # fmt: skip
    for n in args.sizes:
        subset = pool[:n]
        mp2_file = data_dir / f"mp2_{n}.xyz"
        write(mp2_file, relabel(subset, "mp2_energy", "mp2_forces", "mp2"))
        raw_file = data_dir / f"pool_{n}.xyz"
        write(raw_file, subset)
        mixed_file = data_dir / f"hf_and_mp2_{n}.xyz"
        write(mixed_file, read(hf_file, ":") + read(mp2_file, ":"))
        configs = {
            "direct": {"data": {"train": str(mp2_file)}, "model": MODEL, "training": training(args.minutes)},
            "delta": {
                "data": {
                    "train": str(raw_file),
                    "energy_key": "mp2_energy",
                    "forces_key": "mp2_forces",
                    "baseline_energy_key": "hf_energy",
                    "baseline_forces_key": "hf_forces",
                },
                "model": {**MODEL, "baseline": {"calculator": "pyscf", "method": "hf", "basis": "6-31g*"}},
                "training": training(args.minutes),
            },  # fmt: skip
            "finetune": {
                "data": {"train": str(mp2_file)},
                "model": {"init_from": str(pretrained)},
                "training": training(args.minutes, lr=5e-4),
            },
            "multihead": {
                "data": {"train": str(mixed_file), "head_key": "level"},
                "model": {**MODEL, "heads": ["hf", "mp2"]},
                "training": training(args.minutes),
            },
        }
        for method in args.methods:
            res = run(f"{method}_{n}", configs[method], out, test, method)
            results[method][n] = res
            print(
                f"{method:10s} N={n:4d}  E MAE {1e3 * res['energy_mae']:7.2f} meV  "
                f"F MAE {1e3 * res['forces_mae']:7.2f} meV/Å  ({res['train_wall_s']:.0f} s)",
                flush=True,
            )
    write_json(
        {"sizes": args.sizes, "minutes_per_run": args.minutes, "results": results}, out / "results.json"
    )
    table(results, args.sizes, out / "results.md")
    plot(results, args.sizes, out / "results.png")


def table(results: dict, sizes: list[int], path: Path) -> None:
    lines = [
        "Test errors against the MP2/6-31G** labels of 200 held-out water-dimer geometries "
        "(E MAE meV / F MAE meV/Å).",
        "",
        "| N MP2 labels | " + " | ".join(results) + " |",
        "|---|" + "---|" * len(results),
    ]
    for n in sizes:
        cells = [f"{1e3 * r[n]['energy_mae']:.1f} / {1e3 * r[n]['forces_mae']:.1f}" for r in results.values()]
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def plot(results: dict, sizes: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for method, res in results.items():
        axes[0].loglog(sizes, [1e3 * res[n]["forces_mae"] for n in sizes], "o-", label=method)
        axes[1].loglog(sizes, [1e3 * res[n]["energy_mae"] for n in sizes], "o-", label=method)
    axes[0].set_ylabel("test force MAE (meV/Å)")
    axes[1].set_ylabel("test energy MAE (meV)")
    for ax in axes:
        ax.set_xlabel("MP2 training labels")
        ax.set_xticks(sizes, [str(n) for n in sizes])
        ax.minorticks_off()
        ax.legend()
    fig.suptitle("water dimer: MP2/6-31G** from HF/6-31G* + few MP2 labels")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
