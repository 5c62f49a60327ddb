"""Equivariant potential on AcAc and 3BPA (bounded CPU time), both trainings side by side.

    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python benchmarks/equivariant_acac_3bpa.py \\
        [--minutes 8] [--out runs/equivariant_acac_3bpa]

AcAc: trained on ``acac/train_300K.xyz`` (500 frames, 5 % held out for validation), tested on
``test_MD_300K.xyz`` and ``test_MD_600K.xyz``.  3BPA: the shared data holds only the training
files, so ``3bpa/train_300K.xyz`` is split: frames 0–399 train (5 % validation), 400–499 test.
Model and optimiser: ``examples/ethanol_equivariant.yaml`` (small preset with l_max 2 and element
mixing, float32), isolated-atom reference energies.  Each training runs in its own process on one thread for ``--minutes`` of
CPU time (``training.time_limit_clock: cpu``); prints a table and writes ``results.json`` in ``--out``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from ethanol_equivariant import shared_data_dir  # noqa: E402


def config(train: Path, test: Path | None, ref: Path, out: Path, minutes: float) -> dict:
    base = yaml.safe_load((ROOT / "examples" / "ethanol_equivariant.yaml").read_text())
    base["output_dir"] = str(out)
    base["num_threads"] = 1
    base["data"] = {"train": str(train), "valid_fraction": 0.05, "reference_energies": str(ref)}
    if test is not None:
        base["data"]["test"] = str(test)
    base["training"]["max_time_minutes"] = minutes
    base["training"]["time_limit_clock"] = "cpu"  # the same compute budget however loaded the machine is
    return base


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=8.0)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "equivariant_acac_3bpa")
    parser.add_argument("--sequential", action="store_true", help="one training after the other (one core)")
    args = parser.parse_args()
    from ase.io import read, write

    data = shared_data_dir()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    frames = read(data / "3bpa" / "train_300K.xyz", ":")
    write(out / "3bpa_train400.xyz", frames[:400])
    write(out / "3bpa_test100.xyz", frames[400:])
    jobs = {
        "acac": config(data / "acac" / "train_300K.xyz", None, data / "acac" / "isolated_atoms.xyz",
                       out / "acac", args.minutes),
        "3bpa": config(out / "3bpa_train400.xyz", None, data / "3bpa" / "iso_atoms.xyz", out / "3bpa",
                       args.minutes),
    }  # fmt: skip
    procs = {}
    for name, cfg in jobs.items():
        path = out / f"{name}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        log = open(out / f"{name}.log", "w")
        procs[name] = subprocess.Popen(
            [sys.executable, "-m", "nearsight", "train", str(path)], stdout=log, stderr=subprocess.STDOUT
        )
        if args.sequential:
            procs[name].wait()
    for proc in procs.values():
        proc.wait()
    tests = {
        "acac": {"300K": data / "acac" / "test_MD_300K.xyz", "600K": data / "acac" / "test_MD_600K.xyz"},
        "3bpa": {"300K held-out": out / "3bpa_test100.xyz"},
    }
    results = {}
    for name, sets in tests.items():
        for label, path in sets.items():
            report = out / f"{name}_{label.split()[0]}.json"
            subprocess.run(
                [sys.executable, "-m", "nearsight", "evaluate", str(out / name / "best_model.pt"), str(path),
                 "--json", str(report), "--dtype", "float64"],
                check=True, capture_output=True,
            )  # fmt: skip
            m = json.loads(report.read_text())
            summary = json.loads((out / name / "training_summary.json").read_text())
            results[f"{name} {label}"] = {
                "n_test": m["n_frames"],
                "energy_mae_meV": 1e3 * m["energy_mae"],
                "forces_mae_meV_per_A": 1e3 * m["forces_mae"],
                "train_wall_s": summary["wall_time_s"],
                "best_epoch": summary["best_epoch"],
            }
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print(f"{'set':<22}{'frames':>7}{'E MAE meV':>12}{'F MAE meV/Å':>14}{'train s':>9}")
    for key, r in results.items():
        print(f"{key:<22}{r['n_test']:>7}{r['energy_mae_meV']:>12.1f}{r['forces_mae_meV_per_A']:>14.1f}"
              f"{r['train_wall_s']:>9.0f}")  # fmt: skip
    print(json.dumps(results))


if __name__ == "__main__":
    main()
