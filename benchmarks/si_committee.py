"""A committee of four on mlearn silicon: each member's test error, and the committee's σ calibrated.

    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python benchmarks/si_committee.py \\
        [--config examples/si_bpnn.yaml] [--members 4] [--minutes 15] [--out runs/si_committee4]

The members are the config trained with seeds 0..K-1 (``nearsight train --members K``: the same
train/valid split as ``benchmarks/si_vs_mace_training.py``, members differ in initialisation and
batch order), each for ``--minutes`` CPU minutes on one thread.  Then, as a materials user would
check before trusting the committee in MD (``nearsight evaluate`` with several models):

* the σ scale of each quantity (energy per atom, force components, stress components) is fitted
  on the 21 **validation** cells (maximum likelihood, errors ~ N(0, (s σ)²));
* on the 25 **test** cells the committee's errors are compared with s·σ: Spearman rank
  correlation of |error| and σ, miscalibration area and Gaussian NLL with σ raw and scaled, and
  the scale test data would have fitted (a check of how well the validation scale transfers);
* each member's test MAE, so the seed spread of a single model is known.

Writes ``OUT/committee.json``.
"""

from __future__ import annotations

import argparse
import sys
from argparse import Namespace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "src"))

from si_vs_mace_training import KEYS, nearsight_config, write_split  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(ROOT / "examples" / "si_bpnn.yaml"))
    p.add_argument("--members", type=int, default=4)
    p.add_argument("--minutes", type=float, default=15.0, help="CPU-time budget of each member")
    p.add_argument("--out", default="runs/si_committee4")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    import numpy as np
    import torch
    from ethanol_equivariant import shared_data_dir

    from nearsight.cli.evaluate import format_calibration
    from nearsight.data.readers import read_frames
    from nearsight.models.io import load_model
    from nearsight.training.config import validate_config
    from nearsight.training.metrics import compute_metrics_by_type, predict, write_json
    from nearsight.uncertainty import predict_committee, train_committee
    from nearsight.uncertainty.calibration import committee_calibration

    torch.set_num_threads(1)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    split = write_split(shared_data_dir() / "si", out, valid_fraction=0.1, seed=args.seed)
    bench = Namespace(
        config=args.config, seed=args.seed, size="small", minutes=args.minutes, valid_fraction=0.1
    )
    cfg = validate_config(nearsight_config(bench, split, out / "members"), source=args.config)
    print(f"{args.members} members of {args.config}, {args.minutes:g} CPU min each", flush=True)
    paths = train_committee(cfg, args.members)

    def frames(name):
        return read_frames(str(split[name]), energy_key=KEYS["energy"], forces_key=KEYS["forces"],
                           stress_key=KEYS["stress"])  # fmt: skip

    valid, test = frames("valid"), frames("test")
    models = [load_model(p, dtype=torch.float64) for p in paths]
    members = []
    for k, model in enumerate(models):
        m = compute_metrics_by_type(test, predict(model, test, stress=True))
        members.append(m)
        print(f"member {k}: test {1e3 * m['energy_per_atom_mae']:.2f} meV/atom, "
              f"{1e3 * m['forces_mae']:.1f} meV/Å, {m['stress_mae_GPa']:.3f} GPa")  # fmt: skip
    shown = {
        "energy_per_atom_mae": (1e3, "meV/atom"),
        "forces_mae": (1e3, "meV/Å"),
        "stress_mae_GPa": (1.0, "GPa"),
    }
    spread = {key: (float(np.mean([m[key] for m in members])), float(np.std([m[key] for m in members])))
              for key in shown}  # fmt: skip
    print("members (mean ± std): " + ", ".join(
        f"{f * spread[k][0]:.3g} ± {f * spread[k][1]:.2g} {unit}" for k, (f, unit) in shown.items()))  # fmt: skip

    pred_valid = predict_committee(models, valid)
    fitted = committee_calibration(valid, pred_valid)
    scales = {name: rep["sigma_scale"] for name, rep in fitted.items()}
    pred_test = predict_committee(models, test)
    mean_metrics = compute_metrics_by_type(test, pred_test)
    checked = committee_calibration(test, pred_test, scales=scales)
    print(f"\ncommittee mean on test: {1e3 * mean_metrics['energy_per_atom_mae']:.2f} meV/atom, "
          f"{1e3 * mean_metrics['forces_mae']:.1f} meV/Å, {mean_metrics['stress_mae_GPa']:.3f} GPa")  # fmt: skip
    print("\nvalidation (scales fitted here):")
    print(format_calibration(fitted))
    print("\ntest (validation scales):")
    print(format_calibration(checked, scales_file="the validation fit"))
    write_json({"config": args.config, "minutes_per_member": args.minutes, "members": members,
                "member_spread": spread, "committee_test": mean_metrics, "calibration_valid": fitted,
                "calibration_test": checked, "models": [str(p) for p in paths]},
               out / "committee.json")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
