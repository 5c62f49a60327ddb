"""Recipe ablation on mlearn silicon: one change at a time from a base config, the same CPU budget each.

    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python benchmarks/si_recipe_ablation.py \\
        --base examples/si_equivariant.yaml --minutes 15 --out runs/si_ablation_equivariant_15
    ... --base benchmarks/configs/si_bpnn_acsf.yaml --minutes 6 --out runs/si_ablation_bpnn

Each variant is the base config with a few keys replaced (``--variant "NAME:KEY=VALUE;KEY=VALUE"``,
dotted keys into the YAML, values parsed as YAML; without ``--variant``: the built-in set for the
base's model type, which covers cutoff, loss weights including stress, scheduler, EMA, learning rate
and batch size).  Every variant is trained by ``benchmarks/si_vs_mace_training.py --only nearsight``
on the same seeded train/valid split of ``training.json`` for the same CPU time (one thread), so a
variant that costs more per epoch runs fewer epochs: the budget, not the epoch count, is what a user
has.  The recipe is chosen on the **validation** cells (21 cells held out of ``training.json``);
the test cells' errors are printed beside them but are not used to choose.

Writes ``OUT/NAME/`` per variant (kept: a rerun skips finished variants) and ``OUT/ablation.json``
with both tables.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# one change each from the base; names say what changed
VARIANTS = {
    "equivariant": {
        "base": {},
        "energy_sigma_2meV": {"training.loss.energy_per_atom.sigma": 0.002},
        "no_stress": {"training.loss.stress.weight": 0.0},
        "stress_sigma_2meV": {"training.loss.stress.sigma": 0.002},
        "no_ema": {"training.ema_decay": None},
        "lr_0.005": {"training.lr": 0.005},
        "batch_4": {"training.batch_size": 4},
        "cutoff_5.5": {"model.cutoff": 5.5},
        "plateau": {"training.scheduler": "plateau"},
        "two_layers": {"model.equivariant.num_layers": 2},
        "forces_sigma_0.1": {"training.loss.forces.sigma": 0.1},
        "sh_l_max_2": {"model.equivariant.sh_l_max": 2},
        "weight_decay_0.01": {"training.optimizer": "adamw", "training.weight_decay": 0.01},
    },
    "bpnn": {
        "base": {},
        "energy_sigma_2meV": {"training.loss.energy_per_atom.sigma": 0.002},
        "no_stress": {"training.loss.stress.weight": 0.0},
        "no_ema": {"training.ema_decay": None},
        "lr_0.003": {"training.lr": 0.003},
        "batch_1": {"training.batch_size": 1},
        "hidden_64": {"model.hidden": [64, 64]},
        "cutoff_6": {"model.cutoff": 6.0},
        "plateau": {"training.scheduler": "plateau"},
        "soap_6_4": {"model.descriptor": "soap", "model.n_max": 6, "model.l_max": 4},
        "soap_8_6": {"model.descriptor": "soap", "model.n_max": 8, "model.l_max": 6},
    },
}


def parse_variant(text: str) -> tuple[str, dict]:
    """``NAME:KEY=VALUE;KEY=VALUE`` (values as YAML, so lists keep their commas) into a name and overrides."""
    import yaml

    name, _, rest = text.partition(":")
    overrides = {}
    for item in filter(None, (x.strip() for x in rest.split(";"))):
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise argparse.ArgumentTypeError(f"--variant {text!r}: write NAME:KEY=VALUE[;KEY=VALUE]")
        overrides[key.strip()] = yaml.safe_load(value)
    if not name:
        raise argparse.ArgumentTypeError(f"--variant {text!r}: the variant needs a name before ':'")
    return name, overrides


def apply(config: dict, overrides: dict) -> dict:
    """A deep copy of ``config`` with each dotted key set; a missing parent is an error."""
    import copy

    out = copy.deepcopy(config)
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split(".")
        node = out
        for key in parents:
            if not isinstance(node.get(key), dict):
                raise KeyError(f"{dotted}: the config has no section {key!r}")
            node = node[key]
        node[leaf] = value
    return out


def model_type(config: dict) -> str:
    return "equivariant" if config["model"].get("type") == "equivariant" else "bpnn"


def run_variant(name: str, config: dict, args, out: Path) -> dict:
    """Train one variant (unless already done) and return its summary of validation and test errors."""
    import yaml

    vdir = out / name
    result = vdir / "results.json"
    if not result.exists():
        vdir.mkdir(parents=True, exist_ok=True)
        cfg_path = vdir / "config.yaml"
        cfg_path.write_text(yaml.safe_dump(config, sort_keys=False))
        cmd = [sys.executable, str(ROOT / "benchmarks" / "si_vs_mace_training.py"), "--only", "nearsight",
               "--config", str(cfg_path), "--minutes", str(args.minutes), "--out", str(vdir),
               "--seed", str(args.seed)]  # fmt: skip
        with open(vdir / "run.log", "w") as log:
            rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=False).returncode
        if rc != 0 or not result.exists():
            raise SystemExit(f"variant {name} failed (rc {rc}): see {vdir / 'run.log'}")
    res = json.loads(result.read_text())["nearsight"]
    valid = json.loads((vdir / "nearsight" / "training_summary.json").read_text())["valid_metrics"]
    return {"epochs": res["epochs"], "epochs_per_cpu_minute": res["epochs_per_cpu_minute"],
            "valid": valid, "test": res["test"]}  # fmt: skip


def row(name: str, r: dict) -> str:
    v, t = r["valid"], r["test"]
    surface = t.get("by_config_type", {}).get("Surface", {})
    return (
        f"{name:>20} {r['epochs']:6d} {1e3 * v['energy_per_atom_mae']:8.2f} {1e3 * v['forces_mae']:7.1f} "
        f"{v.get('stress_mae_GPa', float('nan')):6.3f} | {1e3 * t['energy_per_atom_mae']:8.2f} "
        f"{1e3 * t['forces_mae']:7.1f} {t.get('stress_mae_GPa', float('nan')):6.3f} "
        f"{1e3 * surface.get('energy_per_atom_mae', float('nan')):8.2f}"
    )


def main(argv=None) -> int:
    import yaml

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", default=str(ROOT / "examples" / "si_equivariant.yaml"))
    p.add_argument("--minutes", type=float, default=10.0, help="CPU-time budget of each variant")
    p.add_argument("--out", default="runs/si_ablation")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--variant", type=parse_variant, action="append", help="NAME:KEY=VALUE[;KEY=VALUE]")
    p.add_argument("--only", nargs="+", help="run only these built-in variants (names)")
    args = p.parse_args(argv)

    base = yaml.safe_load(Path(args.base).read_text())
    variants = dict(args.variant) if args.variant else dict(VARIANTS[model_type(base)])
    if args.only:
        unknown = set(args.only) - set(variants)
        if unknown:
            p.error(f"--only: no variants {sorted(unknown)}; known: {sorted(variants)}")
        variants = {k: v for k, v in variants.items() if k in args.only}
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    header = (
        f"{'variant':>20} {'epochs':>6} {'val E':>8} {'val F':>7} {'val S':>6} | {'test E':>8} "
        f"{'test F':>7} {'test S':>6} {'surf E':>8}\n{'':>20} {'':>6} {'meV/at':>8} {'meV/Å':>7} "
        f"{'GPa':>6} | {'meV/at':>8} {'meV/Å':>7} {'GPa':>6} {'meV/at':>8}"
    )
    results = {}
    print(f"{model_type(base)} from {args.base}: {len(variants)} variants, {args.minutes:g} CPU min each")
    print(header, flush=True)
    for name, overrides in variants.items():
        results[name] = {"overrides": overrides, **run_variant(name, apply(base, overrides), args, out)}
        print(row(name, results[name]), flush=True)
        from nearsight.training.metrics import write_json

        write_json({"base": args.base, "minutes": args.minutes, "variants": results}, out / "ablation.json")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "src"))
    sys.exit(main())
