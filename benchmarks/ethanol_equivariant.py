"""Learning curve of the equivariant potential on rMD17 ethanol (bounded CPU time).

    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python benchmarks/ethanol_equivariant.py \\
        --frames 50 250 1000 --minutes 6 12 20 [--preset small] [--out runs/ethanol_eq_curve] [--resume]

For each training-set size N: the first N frames of ``ethanol/train.xyz`` (5 % of them held out
for validation, at least 2), ``examples/ethanol_equivariant.yaml``'s model and optimiser settings,
``training.max_time_minutes`` as given, one thread; then energy/force MAE of the best model on all
1000 frames of ``ethanol/test_MD.xyz``.  Prints a table and one JSON line per size.
``--resume`` continues each size from its ``OUT/nN/checkpoint.pt`` (same settings, a larger
``--minutes`` extends the budget: the minutes count from the start of the first run).
``--members K`` trains a committee instead (``nearsight.uncertainty.train_committee``): K models
with seeds seed, seed + 1, ... on the same split (``data.split_seed`` = seed), each with the full
budget, in ``OUT/nN/member_k`` (a member whose training finished is kept); reported: each
member's errors and those of the committee mean (what ``EnsembleCalculator`` predicts).
Published (MACE, 1000 / 50 frames): F MAE 2.1 / 32.6 meV/Å, E MAE 0.4 / 6.7 meV.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from nearsight.data.readers import read_frames  # noqa: E402
from nearsight.models.equivariant import PRESETS  # noqa: E402
from nearsight.models.io import load_model  # noqa: E402
from nearsight.training.config import validate_config  # noqa: E402
from nearsight.training.metrics import compute_metrics, predict  # noqa: E402
from nearsight.training.trainer import Trainer  # noqa: E402
from nearsight.uncertainty import predict_committee, train_committee  # noqa: E402


def shared_data_dir() -> Path:
    """``$NEARSIGHT_DATA``, else ``shared/data`` beside the repository, else /work/shared/data."""
    if "NEARSIGHT_DATA" in os.environ:
        return Path(os.environ["NEARSIGHT_DATA"])
    local = ROOT.parent / "shared" / "data"
    return local if local.is_dir() else Path("/work/shared/data")


def apply_overrides(cfg: dict, overrides: list[str]) -> None:
    """``SECTION.KEY=YAML`` items set in the config ``cfg`` (missing sections are created)."""
    for item in overrides:
        path, _, value = item.partition("=")
        *parents, leaf = path.split(".")
        node = cfg
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = yaml.safe_load(value)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, nargs="+", default=[50, 250, 1000])
    p.add_argument("--minutes", type=float, nargs="+", default=[6, 12, 20])
    p.add_argument("--preset", default=None, choices=sorted(PRESETS), help="use this preset's architecture")
    p.add_argument("--dtype", default=None, choices=["float32", "float64"])
    p.add_argument("--out", default="runs/ethanol_eq_curve")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=YAML",
        help="override a config value, e.g. --set training.sigma_energy=1.0 --set model.equivariant.preset=medium",
    )
    p.add_argument(
        "--resume", action="store_true", help="continue from OUT/nN/checkpoint.pt with a new budget"
    )
    p.add_argument("--members", type=int, default=1, help="train a committee of this many models")
    args = p.parse_args(argv)
    if args.members > 1 and args.resume:
        p.error("--members trains each missing member from scratch; --resume is for single models")
    if len(args.minutes) not in (1, len(args.frames)):
        p.error("--minutes takes one value or one per --frames")
    minutes = args.minutes * len(args.frames) if len(args.minutes) == 1 else args.minutes
    data = shared_data_dir() / "ethanol"
    base = yaml.safe_load((ROOT / "examples" / "ethanol_equivariant.yaml").read_text())
    torch.set_num_threads(1)
    test_frames = read_frames(str(data / "test_MD.xyz"))
    rows = []
    for n, budget in zip(args.frames, minutes):
        cfg = json.loads(json.dumps(base))
        cfg["output_dir"] = str(Path(args.out) / f"n{n}")
        cfg["num_threads"] = 1
        if args.dtype:
            cfg["dtype"] = args.dtype
        cfg["data"] = {
            "train": str(data / "train.xyz"),
            "max_train_frames": n,
            "valid_fraction": max(0.05, 2.0 / n),
            "reference_energies": str(data / "isolated_atoms.xyz"),
        }
        if args.preset:  # the preset's own architecture, not the example's explicit l_max etc.
            eq = cfg["model"]["equivariant"]
            for key in PRESETS[args.preset]:
                eq.pop(key, None)
            eq["preset"] = args.preset
        apply_overrides(cfg, args.overrides)
        cfg["training"]["max_time_minutes"] = budget
        cfg["training"]["log_every"] = 50
        t0 = time.perf_counter()
        members = []
        if args.members > 1:
            cfg["data"]["split_seed"] = cfg.get("seed", 0)
            paths = train_committee(validate_config(cfg, source=f"ethanol n={n}"), args.members)
            models = [load_model(path, dtype="float64") for path in paths]
            preds = [predict(model, test_frames) for model in models]
            for k, q in enumerate(preds):
                mk = compute_metrics(test_frames, q)
                members.append(
                    {
                        "seed": cfg["data"]["split_seed"] + k,
                        "energy_mae_meV": round(1000 * mk["energy_mae"], 2),
                        "forces_mae_meV_per_A": round(1000 * mk["forces_mae"], 2),
                    }
                )
            prediction = predict_committee(models, test_frames)  # the mean: what EnsembleCalculator gives
        else:
            best = Trainer(validate_config(cfg, source=f"ethanol n={n}"), resume=args.resume).train()
            prediction = predict(load_model(best, dtype="float64"), test_frames)
        train_s = time.perf_counter() - t0
        m = compute_metrics(test_frames, prediction)
        row = {
            "train_frames": n,
            "minutes": budget,
            "train_seconds": round(train_s, 1),
            "preset": cfg["model"]["equivariant"]["preset"],
            "overrides": args.overrides,
            "resumed": args.resume,
            "test_frames": len(test_frames),
            "energy_mae_meV": round(1000 * m["energy_mae"], 2),
            "forces_mae_meV_per_A": round(1000 * m["forces_mae"], 2),
        }
        if members:
            row["committee_of"] = len(members)
            row["members"] = members
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(f"{'N':>6} {'min':>5} {'E MAE meV':>10} {'F MAE meV/Å':>12}")
    for r in rows:
        print(
            f"{r['train_frames']:>6} {r['minutes']:>5} {r['energy_mae_meV']:>10} {r['forces_mae_meV_per_A']:>12}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
