"""nearsight against MACE on the mlearn silicon benchmark, both trained for the same CPU time.

    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python benchmarks/si_vs_mace_training.py \\
        [--minutes 60] [--size small] [--config examples/si_equivariant.yaml] [--out runs/si_vs_mace] \\
        [--mace-python /tmp/macevenv/bin/python] [--sequential] [--only nearsight|mace] [--mace-extra ...]

Data: ``../shared/data/si`` (Zuo et al., J. Phys. Chem. A 124, 731 (2020); VASP PBE), 214 training
cells split 90/10 (seeded, ``--valid-fraction``; 0 trains on all 214, as the published fits did,
with the same 21 cells, now trained on too, to monitor and pick the model) into ``OUT/data/{train,valid}.xyz`` with
``REF_energy``, ``REF_forces``, ``REF_stress`` (ASE sign, eV/Å³) and ``config_type``; both codes
read these files.  Test: the 25 cells of ``test.json``, scored by the same
``compute_metrics_by_type`` for both (energy per atom, forces, stress in GPa, per config type).
Published test MAE: GAP 2.91 meV/atom and 0.07 eV/Å, MTP 2.21 meV/atom and 0.06 eV/Å.

Models: nearsight from ``--config`` (default ``examples/si_equivariant.yaml``); MACE
(``ScaleShiftMACE``, 0.3.16) with the same channels (``--size``), hidden ``max_L`` = the config's
``l_max``, and the config's spherical-harmonic order (``sh_l_max``, MACE's ``max_ell``), correlation,
number of layers (``num_interactions``), cutoff, radial functions and radial MLP; float32.  The
same loss on both sides: MACE's ``--loss=stress`` is E/atom, force and stress squared errors with
weights 1/σ² of the nearsight config's ``energy_per_atom``, ``forces`` and ``stress`` terms
(divided by the force weight: Adam is insensitive to the scale); the same batch size, learning
rate (AMSGrad), EMA 0.99.  MACE uses its ReduceLROnPlateau (patience ``auto``: 1/20 of the epochs
the budget allows), nearsight its config's scheduler.  The budget, the CPU-time accounting, the
subprocess workers and the stop at the first epoch after the budget are those of
``benchmarks/ethanol_vs_mace_training.py``.
Reported per side: test errors (overall and per config type), epochs, epochs per CPU-minute.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "src"))

from ethanol_vs_mace_training import (  # noqa: E402  (numpy-only at import: both venvs)
    MACE_NAME,
    Job,
    architecture,
    mace_to_float64,
    mace_worker,
    nearsight_worker,
    run_jobs,
    single_thread_env,
)
from vs_mace import SIZES  # noqa: E402

KEYS = {"energy": "REF_energy", "forces": "REF_forces", "stress": "REF_stress"}


def write_split(si: Path, out: Path, valid_fraction: float, seed: int) -> dict:
    """``training.json`` split into train/valid extxyz files, and ``test.json`` as extxyz."""
    import ase.io
    from ase import Atoms

    from nearsight.data.mlearn import read_mlearn

    def images(frames):
        out_images = []
        for f in frames:
            a = Atoms(f.numbers, positions=f.positions, cell=f.cell, pbc=f.pbc)
            a.info = {KEYS["energy"]: float(f.energy), KEYS["stress"]: np.asarray(f.stress, dtype=np.float64),
                      "config_type": f.config_type}  # fmt: skip
            a.arrays[KEYS["forces"]] = np.asarray(f.forces, dtype=np.float64)
            out_images.append(a)
        return out_images

    train = read_mlearn(si / "training.json")
    order = np.random.default_rng(seed).permutation(len(train))
    held_out = valid_fraction if valid_fraction > 0 else 0.1  # 0: the usual 10 % monitored, and trained on
    n_valid = max(2, int(round(held_out * len(train))))
    first = n_valid if valid_fraction > 0 else 0
    paths = {}
    parts = {
        "valid": [train[i] for i in order[:n_valid]],
        "train": [train[i] for i in order[first:]],
        "test": read_mlearn(si / "test.json"),
    }
    for name, frames in parts.items():
        paths[name] = out / "data" / f"{name}.xyz"
        paths[name].parent.mkdir(parents=True, exist_ok=True)
        ase.io.write(str(paths[name]), images(frames), format="extxyz")
        paths[f"n_{name}"] = len(frames)
    return paths


def nearsight_config(args, split: dict, ns_dir: Path) -> dict:
    import yaml

    cfg = yaml.safe_load(Path(args.config).read_text())
    cfg.update(seed=args.seed, num_threads=1, output_dir=str(ns_dir))
    cfg["data"] = {"train": str(split["train"]), "valid": str(split["valid"]),
                   **{f"{k}_key": v for k, v in KEYS.items()}}  # fmt: skip
    # valid fraction 0: every cell trains, the validation cells too (kept, not dropped as repeats)
    if args.valid_fraction <= 0:
        cfg["data"]["remove_duplicates"] = False
    if cfg["model"].get("type") == "equivariant":
        cfg["model"]["equivariant"]["preset"] = args.size
    t = cfg["training"]
    t.update(
        epochs=10**7, early_stopping_patience=10**9, max_time_minutes=args.minutes, time_limit_clock="cpu"
    )
    t.update(checkpoint_every=0)
    return cfg


def loss_weights(cfg: dict) -> tuple[float, float, float]:
    """MACE's energy (per atom), forces and stress weights from the config's σ: 1/σ², relative to forces."""
    loss = cfg["training"].get("loss") or {}
    missing = {"energy_per_atom", "forces", "stress"} - set(loss)
    if missing or any(loss[k].get("sigma") is None for k in ("energy_per_atom", "forces", "stress")):
        raise SystemExit(
            f"{cfg}: the config needs energy_per_atom, forces and stress terms with explicit sigma"
        )
    s_e, s_f, s_s = (float(loss[k]["sigma"]) for k in ("energy_per_atom", "forces", "stress"))
    w_s = float(loss["stress"].get("weight", 1.0))
    return (s_f / s_e) ** 2, 1.0, w_s * (s_f / s_s) ** 2


def mace_arguments(args, cfg: dict, split: dict, mace_dir: Path) -> list[str]:
    w_e, w_f, w_s = loss_weights(cfg)
    arch = architecture(cfg)
    t = cfg["training"]
    patience = args.mace_scheduler_patience
    argv = [
        f"--name={MACE_NAME}", f"--seed={args.seed}", f"--work_dir={mace_dir}", f"--log_dir={mace_dir / 'logs'}",
        f"--model_dir={mace_dir}", f"--checkpoints_dir={mace_dir / 'checkpoints'}",
        f"--results_dir={mace_dir / 'results'}", f"--train_file={split['train']}",
        f"--valid_file={split['valid']}", f"--energy_key={KEYS['energy']}", f"--forces_key={KEYS['forces']}",
        f"--stress_key={KEYS['stress']}", "--E0s=average", "--model=ScaleShiftMACE",
        "--scaling=rms_forces_scaling", f"--num_channels={SIZES[args.size]}", f"--max_L={arch['max_L']}",
        f"--max_ell={arch['max_ell']}", f"--correlation={arch['correlation']}",
        f"--num_interactions={arch['num_interactions']}", f"--r_max={float(cfg['model']['cutoff'])}",
        f"--num_radial_basis={arch['num_radial_basis']}", "--num_cutoff_basis=5",
        f"--radial_MLP={arch['radial_MLP']}", "--MLP_irreps=16x0e",
        "--loss=stress", "--compute_stress=True", f"--energy_weight={w_e:.6g}", f"--forces_weight={w_f:.6g}",
        f"--stress_weight={w_s:.6g}", f"--batch_size={int(t['batch_size'])}", "--valid_batch_size=8",
        f"--lr={float(t['lr'])}", "--amsgrad", "--weight_decay=5e-7", "--clip_grad=10.0", "--ema",
        "--ema_decay=0.99", "--scheduler=ReduceLROnPlateau", "--lr_factor=0.8",
        f"--scheduler_patience={50 if patience == 'auto' else int(patience)}", "--max_num_epochs=1000000",
        "--patience=1000000", "--eval_interval=1", "--default_dtype=float32", "--device=cpu",
        "--num_workers=0", "--pin_memory=False", "--plot=False", "--save_cpu",
    ]  # fmt: skip
    return argv + args.mace_extra.split()


def mace_predictions(args, model: Path, test_path: Path, mace_dir: Path) -> list[dict]:
    import subprocess

    import ase.io

    output, model64 = mace_dir / "test_predictions.xyz", mace_dir / f"{model.stem}_float64.model"
    here = str(Path(__file__).resolve())
    for cmd in (
        [args.mace_python, here, "--mace-float64", str(model), str(model64)],
        [args.mace_python, "-m", "mace.cli.eval_configs", f"--configs={test_path}", f"--model={model64}",
         f"--output={output}", "--default_dtype=float64", "--batch_size=8", "--device=cpu",
         "--compute_stress"],
    ):  # fmt: skip
        res = subprocess.run(cmd, env=single_thread_env(), capture_output=True, text=True, check=False)
        if res.returncode != 0:
            raise SystemExit(f"{' '.join(cmd[:4])} failed:\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}")
    preds = []
    for a in ase.io.read(str(output), index=":"):
        stress = np.asarray(a.info["MACE_stress"], dtype=np.float64)
        if stress.size == 6:
            from ase.stress import voigt_6_to_full_3x3_stress

            stress = voigt_6_to_full_3x3_stress(stress)
        preds.append({"energy": float(a.info["MACE_energy"]), "forces": a.arrays["MACE_forces"].astype(float),
                      "stress": stress.reshape(3, 3)})  # fmt: skip
    return preds


def nearsight_predictions(best_model: str, frames) -> list[dict]:
    import torch

    from nearsight.models.io import load_model
    from nearsight.training.metrics import predict

    torch.set_num_threads(1)
    return predict(load_model(best_model, dtype="float64"), frames, stress=True)


def table(rows: dict) -> str:
    lines = [f"{'side':>10} {'type':>10} {'frames':>6} {'E meV/atom':>11} {'F meV/Å':>9} {'S GPa':>7}"]
    for side, m in rows.items():
        for name, mm in [("all", m), *sorted(m.get("by_config_type", {}).items())]:
            lines.append(
                f"{side:>10} {name:>10} {mm['n_frames']:6d} {1e3 * mm['energy_per_atom_mae']:11.2f} "
                f"{1e3 * mm['forces_mae']:9.1f} {mm.get('stress_mae_GPa', float('nan')):7.3f}"
            )
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=60.0, help="CPU-time budget of each side's training loop")
    p.add_argument("--size", default="small", choices=list(SIZES))
    p.add_argument("--config", default=str(ROOT / "examples" / "si_equivariant.yaml"))
    p.add_argument("--out", default="runs/si_vs_mace")
    p.add_argument(
        "--valid-fraction", type=float, default=0.1,
        help="share of the 214 cells held out for validation; 0: all train (as in mlearn), 10 %% monitored",
    )  # fmt: skip
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", choices=["nearsight", "mace"], help="train one side only (the other is skipped)")
    p.add_argument(
        "--mace-python", default=os.environ.get("NEARSIGHT_MACE_PYTHON", "/tmp/macevenv/bin/python")
    )
    p.add_argument("--mace-scheduler-patience", default="auto", help="epochs, or auto (budget/20)")
    p.add_argument("--mace-extra", default="", help="extra mace_run_train options, appended last")
    p.add_argument(
        "--sequential", action="store_true", help="one side after the other (default: both at once)"
    )
    p.add_argument("--mace-worker", help=argparse.SUPPRESS)
    p.add_argument("--nearsight-worker", help=argparse.SUPPRESS)
    p.add_argument("--mace-float64", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.mace_worker:
        return mace_worker(json.loads(Path(args.mace_worker).read_text()))
    if args.nearsight_worker:
        return nearsight_worker(json.loads(Path(args.nearsight_worker).read_text()))
    if args.mace_float64:
        return mace_to_float64(*args.mace_float64)
    if args.only != "nearsight" and not Path(args.mace_python).exists():
        p.error(f"no MACE python at {args.mace_python!r}: see benchmarks/vs_mace.py for the venv")

    from ethanol_equivariant import shared_data_dir

    from nearsight.data.readers import read_frames
    from nearsight.training.metrics import compute_metrics_by_type, write_json

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    split = write_split(shared_data_dir() / "si", out, args.valid_fraction, args.seed)
    mace_dir, ns_dir = out / "mace", out / "nearsight"
    cfg = nearsight_config(args, split, ns_dir)
    budget_s = 60.0 * args.minutes
    specs = {
        "nearsight": {"config": cfg, "result": str(out / "nearsight_worker.json")},
    }
    if args.only != "nearsight":  # MACE's arguments need an equivariant config (its l_max)
        specs["mace"] = {"budget_s": budget_s, "argv": mace_arguments(args, cfg, split, mace_dir),
                         "scheduler_patience": args.mace_scheduler_patience,
                         "result": str(out / "mace_worker.json")}  # fmt: skip
    here, timeout_s = str(Path(__file__).resolve()), 4 * budget_s + 600
    python = {"mace": args.mace_python, "nearsight": sys.executable}
    jobs = []
    for name, spec in specs.items():
        (out / f"{name}_spec.json").write_text(json.dumps(spec, indent=1))
        if args.only in (None, name):
            cmd = [python[name], here, f"--{name}-worker", str(out / f"{name}_spec.json")]
            jobs.append(Job(name, cmd, out / f"{name}.log", timeout_s))
    print(f"silicon: {split['n_train']} train + {split['n_valid']} valid cells, {split['n_test']} test; "
          f"{args.minutes:g} CPU min per side", flush=True)  # fmt: skip
    run_jobs(jobs, args.sequential)

    test_frames = read_frames(str(split["test"]), energy_key=KEYS["energy"], forces_key=KEYS["forces"],
                              stress_key=KEYS["stress"])  # fmt: skip
    rows, summary = {}, {"budget_cpu_s": budget_s, "size": args.size, "config": args.config}
    for job in jobs:
        res = json.loads(Path(specs[job.name]["result"]).read_text())
        if job.name == "mace":
            preds = mace_predictions(args, mace_dir / f"{MACE_NAME}.model", split["test"], mace_dir)
        else:
            preds = nearsight_predictions(res["best_model"], test_frames)
        rows[job.name] = compute_metrics_by_type(test_frames, preds)
        epochs_per_cpu_min = res["epochs"] / (res["loop_cpu_s"] / 60.0)
        summary[job.name] = {"epochs": res["epochs"], "loop_cpu_s": res["loop_cpu_s"], "cpu_s": job.cpu_s,
                             "wall_s": job.wall_s, "epochs_per_cpu_minute": epochs_per_cpu_min,
                             "test": rows[job.name]}  # fmt: skip
    print(f"\ntest: {len(test_frames)} cells of test.json (MAE); published GAP 2.91 meV/atom, 70 meV/Å; "
          "MTP 2.21 meV/atom, 60 meV/Å")  # fmt: skip
    print(table(rows))
    for name in rows:
        s = summary[name]
        print(f"{name}: {s['epochs']} epochs in {s['loop_cpu_s']:.0f} CPU s: {s['epochs_per_cpu_minute']:.2f} "
              "epochs per CPU-minute")  # fmt: skip
    if len(rows) == 2:
        ratio = summary["nearsight"]["epochs_per_cpu_minute"] / summary["mace"]["epochs_per_cpu_minute"]
        summary["throughput_ratio"] = ratio
        print(f"training throughput nearsight/MACE: {ratio:.2f}x")
    write_json(summary, out / "results.json")
    print(json.dumps({k: v for k, v in summary.items() if k not in ("mace", "nearsight")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
