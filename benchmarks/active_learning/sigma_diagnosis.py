"""Why the earlier loop did not converge: the committee σ with held-out validation per member.

    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python benchmarks/active_learning/sigma_diagnosis.py

    ... sigma_diagnosis.py --labels work/old_split_al/iter_024/train.xyz   # other label sets too

Needs ``run_demo.py`` to have run (``work/al``, ``work/test.xyz``, ``work/pool.xyz``).  On the
loop's final label set (and any ``--labels`` files, e.g. the earlier non-converging run's) it trains the committee twice with the demo's settings, differing only
in ``committee.valid_fraction``: 0.1 (each member holds out 10 % of the labels, a different 10 %
per member, and keeps its best epoch on them, validated every epoch: the earlier demo)
and 0 (every member trains on all labels).  For both it reports each member's best epoch, the
largest per-atom force σ (the loop's trigger) on the training labels, the oracle-MD test frames
(by temperature) and the random pool, the fraction of frames above the threshold, and the test
errors.  Writes ``SIGMA_DIAGNOSIS.md`` and ``sigma_diagnosis.json`` here.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import numpy as np
from ase import Atoms
from run_demo import read_labelled  # this folder is on sys.path when the script runs

from nearsight.active_learning import _train_config, _train_member, evaluate_committee, load_al_config
from nearsight.uncertainty import EnsembleCalculator, atomic_write

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
WORK = HERE / "work"


def labelled(path: Path) -> list[Atoms]:
    """Labelled frames with their MD temperature (NaN where the file has none)."""
    frames = read_labelled(path)
    for b in frames:
        b.info.setdefault("temperature", float("nan"))
    return frames


def max_sigma(calc: EnsembleCalculator, frames: list[Atoms]) -> np.ndarray:
    out = []
    for a in frames:
        calc.calculate(Atoms(numbers=a.numbers, positions=a.positions), ["energy", "forces"])
        out.append(calc.results["max_force_std"])
    return np.asarray(out)


def diagnose(cfg: dict, label_file: Path, sets: dict, test: list[Atoms]) -> dict:
    thr = float(cfg["select"]["threshold"])
    train = labelled(label_file)
    sets = {"training labels": train, **sets}
    name = label_file.parent.parent.name + "_" + label_file.parent.name
    results = {"labels": len(train), "label_file": str(label_file.relative_to(HERE)), "variants": {}}
    for vf in (0.1, 0.0):
        c = copy.deepcopy(cfg)
        c["committee"]["valid_fraction"] = vf
        if vf > 0:  # the earlier demo validated every epoch
            c["committee"]["train"].setdefault("training", {})["valid_every"] = 1
        out = WORK / "diagnosis" / name / f"valid_fraction_{vf:g}_every_{'1' if vf > 0 else 'cfg'}"
        t0 = time.perf_counter()
        paths, best = [], []
        for k in range(int(c["committee"]["n_members"])):
            tcfg = _train_config(c, label_file, out, None)
            tcfg["seed"] = int(c["seed"]) + k
            paths += _train_member(tcfg, out, k, bool(c["committee"]["bootstrap"]), None)
            summary = json.loads((out / f"member_{k}" / "training_summary.json").read_text())
            best.append([summary["best_epoch"], summary["steps"]])
        calc = EnsembleCalculator(paths)
        row = {"best_epoch_and_steps": best, "train_s": time.perf_counter() - t0, "sigma": {}}
        for set_name, frames in sets.items():
            s = max_sigma(calc, frames)
            row["sigma"][set_name] = {
                "n": len(frames),
                "median": float(np.median(s)),
                "p90": float(np.percentile(s, 90)),
                "max": float(s.max()),
                "frac_above_threshold": float(np.mean(s > thr)),
            }
        row["test"] = evaluate_committee(calc, test)
        results["variants"][f"{vf:g}"] = row
        print(f"{label_file}: valid_fraction {vf:g}: best epochs {best}", flush=True)
    return results


def main() -> None:
    import argparse

    import torch

    ap = argparse.ArgumentParser()
    ap.add_argument("--labels", nargs="*", default=[], help="further label files (extxyz), relative to here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = load_al_config(ROOT / "examples" / "active_learning.yaml")
    files = [sorted((WORK / "al").glob("iter_*/train.xyz"))[-1], *(HERE / f for f in args.labels)]
    test, pool = labelled(WORK / "test.xyz"), labelled(WORK / "pool.xyz")
    sets = {"random pool": pool}
    for t in sorted({a.info["temperature"] for a in test}):
        sets[f"test {t:g} K"] = [a for a in test if a.info["temperature"] == t]
    results = {
        "threshold": float(cfg["select"]["threshold"]),
        "label_sets": [diagnose(cfg, f, sets, test) for f in files],
    }
    atomic_write(HERE / "sigma_diagnosis.json", lambda fh: json.dump(results, fh, indent=1))
    _table(results)


def _table(r: dict) -> None:
    lines = [
        "# Committee σ with and without held-out validation per member (generated by sigma_diagnosis.py)",
        "",
        "The committee of `examples/active_learning.yaml` trained on a label set twice: "
        "`committee.valid_fraction` 0.1 (each member keeps its best epoch, validated every epoch, on its own "
        "held-out 10 %: the earlier demo's setting) and 0 (all labels train every member, this demo's "
        "setting). σ is the loop's trigger, the "
        f"largest per-atom force σ (eV/Å); threshold {r['threshold']} eV/Å.",
    ]
    for ls in r["label_sets"]:
        lines += [
            "",
            f"## {ls['labels']} labels of `{ls['label_file']}`",
            "",
            "| valid_fraction | member best epoch / steps | frames | median σ | p90 σ | max σ "
            "| frames with σ > threshold |",
            "|---|---|---|---|---|---|---|",
        ]
        for vf, row in ls["variants"].items():
            epochs = ", ".join(f"{e}/{s}" for e, s in row["best_epoch_and_steps"])
            for name, s in row["sigma"].items():
                lines.append(
                    f"| {vf} | {epochs} | {name} ({s['n']}) | {s['median']:.3f} | {s['p90']:.3f} | "
                    f"{s['max']:.3f} | {100 * s['frac_above_threshold']:.1f} % |"
                )
        lines += [
            "",
            "| valid_fraction | test E MAE (meV/atom) | test F MAE (eV/Å) | σ scale (test) |",
            "|---|---|---|---|",
        ]
        for vf, row in ls["variants"].items():
            t = row["test"]
            lines.append(
                f"| {vf} | {1000 * t['energy_mae_per_atom']:.2f} | {t['forces_mae']:.4f} | "
                f"{t['calib_sigma_scale']:.2f} |"
            )
    atomic_write(HERE / "SIGMA_DIAGNOSIS.md", lambda fh: fh.write("\n".join(lines) + "\n"))


if __name__ == "__main__":
    main()
