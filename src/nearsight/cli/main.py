"""The ``nearsight`` command: thin wrappers over library code.

nearsight train CONFIG.yaml [--resume]  # last line of output: the saved model path
nearsight train CONFIG.yaml --members K  # a committee: one model path per line
torchrun --nproc_per_node N -m nearsight train CONFIG.yaml   # data-parallel
nearsight evaluate MODEL [MODEL ...] DATA --json OUT.json [--plot parity.png]
nearsight md STRUCTURE MODEL [MODEL ...] --steps N [--ensemble nve|langevin] ...
nearsight demo CONFIG.yaml             # train, evaluate on held-out data, MD, table, plot
nearsight active-learn CONFIG.yaml [--resume]  # committee + QM oracle loop (nearsight.active_learning)
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def _train(args: argparse.Namespace) -> int:
    from ..training.config import load_config
    from ..training.trainer import Trainer

    config = load_config(args.config)
    if args.output_dir:
        config["output_dir"] = str(Path(args.output_dir).resolve())
    if args.members != 1:
        return _train_committee(config, args)
    trainer = Trainer(config, resume=args.resume)
    path = trainer.train()
    if trainer.dist.is_main:  # under torchrun, one line from rank 0
        print(path.resolve())
    return 0


def _train_committee(config: dict, args: argparse.Namespace) -> int:
    from ..uncertainty import train_committee

    if args.members < 2:
        raise ValueError(f"--members {args.members}: a committee needs at least 2 members")
    if args.resume:
        raise ValueError(
            "--resume continues one model; with --members, run the same command again: finished "
            "members are kept and an interrupted one is trained again from the start"
        )
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError(
            "--members under torchrun is not supported: run one torchrun per member "
            "(seed k, --output-dir DIR/member_k) or train the committee without torchrun"
        )
    if config["data"]["split_seed"] is None:  # every member validates on the same frames
        config["data"]["split_seed"] = config["seed"]
    for path in train_committee(config, args.members):
        print(path.resolve())
    return 0


def _active_learn(args: argparse.Namespace) -> int:
    from ..active_learning import load_al_config, run_active_learning

    config = load_al_config(args.config)
    if args.output_dir:
        config["output_dir"] = str(Path(args.output_dir).resolve())
    state = run_active_learning(config, resume=args.resume)
    print(f"{state['status']} after {len(state['history'])} iteration(s): {config['output_dir']}")
    return 0


def _read(path: str, fmt: str | None, args: argparse.Namespace):
    from ..data.readers import read_frames

    return read_frames(
        path, format=fmt, energy_key=args.energy_key, forces_key=args.forces_key, stress_key=args.stress_key
    )


def evaluate_files(model_path: str | list[str], data: str, args: argparse.Namespace) -> dict:
    """Metrics of one model, or of a committee's mean (several paths) with its mean force σ."""
    import numpy as np
    import torch

    from ..data.validate import validate_frames
    from ..models.io import load_model
    from ..training.metrics import compute_metrics, parity_plot, predict, write_json
    from ..uncertainty import predict_committee

    dtype = getattr(torch, args.dtype)
    paths = [model_path] if isinstance(model_path, str) else list(model_path)
    models = [load_model(p, dtype=dtype) for p in paths]
    frames = _read(data, args.format, args)
    for model in models:
        validate_frames(frames, require=(), known_species=list(model.species))
    if len(models) == 1:
        preds = predict(models[0], frames, batch_size=args.batch_size, dtype=dtype)
    else:
        preds = predict_committee(models, frames, batch_size=args.batch_size, dtype=dtype)
    metrics = compute_metrics(frames, preds)
    metrics.update(model=str(paths[0]) if len(paths) == 1 else [str(p) for p in paths])
    if len(models) > 1:
        metrics["committee_size"] = len(models)
        metrics["forces_std_mean"] = float(np.mean(np.concatenate([p["forces_std"].ravel() for p in preds])))
    metrics.update(data=str(data), dtype=args.dtype)
    if args.json:
        write_json(metrics, args.json)
    if args.plot:
        parity_plot(frames, preds, args.plot, title=Path(data).name)
    return metrics


def format_metrics(rows: dict[str, dict]) -> str:
    """A table: one row per dataset, errors in meV, meV/atom, meV/Å."""
    head = f"{'dataset':<28}{'frames':>7}{'E MAE':>10}{'E RMSE':>10}{'E/atom MAE':>12}{'F MAE':>10}{'F RMSE':>10}"
    unit = f"{'':<28}{'':>7}{'meV':>10}{'meV':>10}{'meV/atom':>12}{'meV/Å':>10}{'meV/Å':>10}"
    lines = [head, unit]
    for name, m in rows.items():
        lines.append(
            f"{name:<28}{m['n_frames']:>7}{1e3 * m['energy_mae']:>10.2f}{1e3 * m['energy_rmse']:>10.2f}"
            f"{1e3 * m['energy_per_atom_mae']:>12.3f}{1e3 * m['forces_mae']:>10.2f}{1e3 * m['forces_rmse']:>10.2f}"
        )
        if "stress_mae" in m:
            lines[-1] += f"   stress MAE {1e3 * m['stress_mae']:.3f} meV/Å³"
    return "\n".join(lines)


def _evaluate(args: argparse.Namespace) -> int:
    metrics = evaluate_files(args.model, args.data, args)
    print(format_metrics({Path(args.data).name: metrics}))
    if "committee_size" in metrics:
        print(
            f"committee mean of {metrics['committee_size']} models; "
            f"mean force σ {1e3 * metrics['forces_std_mean']:.2f} meV/Å (per component)"
        )
    return 0


def _md(args: argparse.Namespace) -> int:
    from ase.io import read

    from ..calculator import NearsightCalculator
    from ..simulate.md import run_md

    try:
        atoms = read(args.structure, index=args.index)
    except Exception as exc:  # noqa: BLE001 - re-raised naming the file
        raise ValueError(f"{args.structure!r}: cannot read structure ({exc})") from exc
    from ..data.frame import Frame
    from ..data.validate import validate_frame

    if len(args.model) == 1:
        calc = NearsightCalculator(args.model[0], dtype=args.dtype)
        species = calc.forcefield.species
    else:  # a committee: mean energy and forces (σ in calc.results)
        from ..uncertainty import EnsembleCalculator

        calc = EnsembleCalculator(args.model, dtype=args.dtype)
        species = sorted(set.intersection(*(set(ff.species) for ff in calc.members)))
    validate_frame(Frame.from_atoms(atoms, source=args.structure, index=0), require=(), known_species=species)
    result = run_md(
        atoms,
        calc,
        steps=args.steps,
        timestep_fs=args.timestep_fs,
        temperature_K=args.temperature_K,
        ensemble=args.ensemble,
        friction_per_fs=args.friction_per_fs,
        seed=args.seed,
        trajectory=args.trajectory,
        logfile=args.log,
        interval=args.interval,
    )
    print(
        f"{result.steps} steps of {args.timestep_fs} fs ({args.ensemble}), {result.n_atoms} atoms, "
        f"{result.wall_time_s:.1f} s wall; mean T {result.temperature.mean():.1f} K; "
        f"energy drift {result.drift_ev_per_atom_ps:.3e} eV/atom/ps; trajectory {args.trajectory}"
    )
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(args.config, args.output_dir, md_steps=args.md_steps)
    return 0


def _add_label_keys(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", default=None, help="file format (default: from the extension)")
    p.add_argument("--energy-key", default="energy")
    p.add_argument("--forces-key", default="forces")
    p.add_argument("--stress-key", default="stress")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nearsight", description="nearsight: machine-learning interatomic potentials"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model from a YAML config")
    p.add_argument("config")
    p.add_argument("--output-dir", default=None, help="override output_dir of the config")
    p.add_argument(
        "--resume", action="store_true", help="continue exactly from output_dir/checkpoint.pt (same config)"
    )
    p.add_argument(
        "--members",
        type=int,
        default=1,
        help="train a committee of K models in output_dir/member_k (seeds seed ... seed+K-1, one "
        "train/validation split); a rerun keeps finished members",
    )
    p.set_defaults(func=_train)

    p = sub.add_parser("evaluate", help="errors of a model (or a committee's mean) on a labelled dataset")
    p.add_argument("model", nargs="+", help="a model file; several: a committee, scored by its mean")
    p.add_argument("data")
    p.add_argument("--json", default=None, help="write metrics to this JSON file")
    p.add_argument("--plot", default=None, help="write a parity plot (PNG)")
    p.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    p.add_argument("--batch-size", type=int, default=64)
    _add_label_keys(p)
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("md", help="molecular dynamics with a model (ASE integrators)")
    p.add_argument("structure", help="any file ASE reads")
    p.add_argument("model", nargs="+", help="a model file; several: a committee (mean forces)")
    p.add_argument("--index", default="0", help="frame of the structure file (default 0)")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--timestep-fs", type=float, default=0.5)
    p.add_argument("--temperature-K", type=float, default=300.0)
    p.add_argument("--ensemble", default="nve", choices=["nve", "langevin"])
    p.add_argument("--friction-per-fs", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--trajectory", default="md.traj")
    p.add_argument("--log", default="md.log")
    p.add_argument("--interval", type=int, default=10, help="write every N steps")
    p.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    p.set_defaults(func=_md)

    p = sub.add_parser("demo", help="train, evaluate, run MD and plot on a config's data")
    p.add_argument("config", nargs="?", default="examples/ethanol_bpnn.yaml")
    p.add_argument("--output-dir", default="outputs/demo")
    p.add_argument("--md-steps", type=int, default=400)
    p.set_defaults(func=_demo)

    p = sub.add_parser("active-learn", help="active learning: committee MD, QM oracle labels, retraining")
    p.add_argument("config")
    p.add_argument("--output-dir", default=None, help="override output_dir of the config")
    p.add_argument("--resume", action="store_true", help="continue the run in output_dir (after a crash)")
    p.set_defaults(func=_active_learn)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"nearsight {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
