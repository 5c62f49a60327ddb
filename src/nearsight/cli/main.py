"""The ``nearsight`` command: thin wrappers over library code.

nearsight train CONFIG.yaml [--resume | --overwrite]  # last line of output: the saved model path
nearsight train CONFIG.yaml --members K  # a committee: one model path per line
torchrun --nproc_per_node N -m nearsight train CONFIG.yaml   # data-parallel
nearsight evaluate MODEL [MODEL ...] DATA --json OUT.json [--plot parity.png]
nearsight md STRUCTURE MODEL [MODEL ...] --steps N [--ensemble nve|langevin] ...
nearsight demo CONFIG.yaml             # train, evaluate on held-out data, MD, table, plot
nearsight active-learn CONFIG.yaml [--resume] [--allow-python-oracle]  # committee + QM oracle loop

Errors reach the user as one line, ``nearsight COMMAND: error: MESSAGE``, and exit status 2;
``--traceback`` (or ``NEARSIGHT_TRACEBACK=1``) shows the Python traceback instead.  Heavy
packages (torch, ASE's calculators) are imported inside the commands, so ``--help`` and
``--version`` answer at once.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# what a training run writes in its output directory (removed by ``train --overwrite``)
RUN_FILES = (
    "checkpoint.pt",
    "best_model.pt",
    "final_model.pt",
    "training_summary.json",
    "training_log.csv",
    "learning_curve.png",
    "parity_valid.png",
    "parity_test.png",
)


def _is_main_rank() -> bool:
    return os.environ.get("RANK", "0") == "0"


def _clear_run(out_dir: Path) -> None:
    """Remove the files of an earlier run in ``out_dir`` (``--overwrite``); other files stay."""
    for name in RUN_FILES:
        (out_dir / name).unlink(missing_ok=True)
    for events in (out_dir / "tensorboard").glob("events.out.tfevents.*"):
        events.unlink(missing_ok=True)


def _check_fresh_output(out_dir: Path, args: argparse.Namespace) -> None:
    """A new run must not mix its files with an earlier run's: refuse unless --resume/--overwrite."""
    if args.resume and args.overwrite:
        raise ValueError(
            "--resume continues the run in the output directory, --overwrite replaces it: pick one"
        )
    if args.resume or args.members != 1:  # committees keep finished members (see _train_committee)
        return
    found = [name for name in ("best_model.pt", "checkpoint.pt") if (out_dir / name).is_file()]
    if not found:
        return
    if args.overwrite:
        if _is_main_rank():
            _clear_run(out_dir)
        return
    state = "finished" if (out_dir / "training_summary.json").is_file() else "started"
    raise ValueError(
        f"output directory {str(out_dir)!r} already holds a {state} run ({', '.join(found)}): pass --resume "
        "to continue it, --overwrite to replace it, or another --output-dir"
    )


def _train(args: argparse.Namespace) -> int:
    from ..training.config import load_config

    config = load_config(args.config)
    if args.output_dir:
        config["output_dir"] = str(Path(args.output_dir).resolve())
    out_dir = Path(config["output_dir"])
    _check_fresh_output(out_dir, args)
    if _is_main_rank():  # output_dir is relative to the working directory: say where it went
        print(f"output directory: {out_dir.resolve()}", flush=True)
    if args.members != 1:
        return _train_committee(config, args)
    from ..training.trainer import Trainer

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
    if args.overwrite and _is_main_rank():  # members without final_model.pt train again from scratch
        for k in range(args.members):
            _clear_run(Path(config["output_dir"]) / f"member_{k}")
    for path in train_committee(config, args.members):
        print(path.resolve())
    return 0


def _active_learn(args: argparse.Namespace) -> int:
    from ..active_learning import load_al_config, run_active_learning

    config = load_al_config(args.config)
    if args.output_dir:
        config["output_dir"] = str(Path(args.output_dir).resolve())
    state = run_active_learning(config, resume=args.resume, allow_python_oracle=args.allow_python_oracle)
    print(f"{state['status']} after {len(state['history'])} iteration(s): {config['output_dir']}")
    return 0


def _read(path: str, fmt: str | None, args: argparse.Namespace) -> tuple[list, dict[str, str | None]]:
    """The labelled frames of ``path`` and the label keys used (detected where not given)."""
    from ..data.readers import read_frames_and_keys

    return read_frames_and_keys(
        path,
        format=fmt,
        energy_key=args.energy_key,
        forces_key=args.forces_key,
        stress_key=args.stress_key,
        virial_key=args.virial_key,
        require_labels=True,
    )


def label_line(data: str, frames: list, used: dict[str, str | None]) -> str:
    """Which key each label came from and in how many frames, e.g. for ``REF_energy`` files."""
    counts = {
        "energy": sum(f.energy is not None for f in frames),
        "forces": sum(f.forces is not None for f in frames),
        "stress": sum(f.stress is not None for f in frames),
    }
    parts = []
    for label, count in counts.items():
        key = repr(used.get(label))
        if label == "stress" and used.get("virial"):  # a stress label may come from a virial
            key = (
                f"{key} or virial {used['virial']!r}" if used.get("stress") else f"virial {used['virial']!r}"
            )
        parts.append(f"{label} from {key} ({count} of {len(frames)} frames)" if count else f"no {label}")
    return f"labels of {Path(data).name}: " + ", ".join(parts)


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
    frames, used = _read(data, args.format, args)
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
    metrics.update(data=str(data), dtype=args.dtype, label_keys=used)
    metrics["labels"] = label_line(data, frames, used)
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

    def cell(m: dict, key: str, label: str, width: int, digits: int) -> str:
        if not m.get(f"n_{label}", 1):  # no frame has the label: "-", never a NaN
            return f"{'-':>{width}}"
        return f"{1e3 * m[key]:>{width}.{digits}f}"

    for name, m in rows.items():
        lines.append(
            f"{name:<28}{m['n_frames']:>7}{cell(m, 'energy_mae', 'energy', 10, 2)}"
            f"{cell(m, 'energy_rmse', 'energy', 10, 2)}{cell(m, 'energy_per_atom_mae', 'energy', 12, 3)}"
            f"{cell(m, 'forces_mae', 'forces', 10, 2)}{cell(m, 'forces_rmse', 'forces', 10, 2)}"
        )
        if "stress_mae" in m:
            lines[-1] += f"   stress MAE {1e3 * m['stress_mae']:.3f} meV/Å³"
    return "\n".join(lines)


def _evaluate(args: argparse.Namespace) -> int:
    metrics = evaluate_files(args.model, args.data, args)
    print(metrics["labels"])
    print(format_metrics({Path(args.data).name: metrics}))
    if "committee_size" in metrics:
        print(
            f"committee mean of {metrics['committee_size']} models; "
            f"mean force σ {1e3 * metrics['forces_std_mean']:.2f} meV/Å (per component)"
        )
    return 0


def _md_device(device: str) -> str:
    """``--device``: cpu, cuda or cuda:N, checked against what torch sees."""
    import torch

    kind, _, index = device.partition(":")
    if kind not in ("cpu", "cuda") or (index and (kind == "cpu" or not index.isdigit())):
        raise ValueError(f"--device {device!r}: must be cpu, cuda or cuda:N")
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {device!r}: torch sees no CUDA device on this machine")
        if index and int(index) >= torch.cuda.device_count():
            raise ValueError(f"--device {device!r}: only {torch.cuda.device_count()} CUDA device(s)")
    return device


def _md(args: argparse.Namespace) -> int:
    import warnings

    from ase.io import read

    from ..calculator import NearsightCalculator
    from ..guards import CloseAtomsError, ExtrapolationError, ExtrapolationWarning, NonFiniteOutputError
    from ..simulate.md import has_velocities, run_md

    device = _md_device(args.device)
    try:
        atoms = read(args.structure, index=args.index)
    except Exception as exc:  # noqa: BLE001 - re-raised naming the file
        raise ValueError(f"{args.structure!r}: cannot read structure ({exc})") from exc
    from ..data.frame import Frame
    from ..data.validate import validate_frame

    options = {"dtype": args.dtype, "device": device, "min_distance": args.min_distance}
    if len(args.model) == 1:
        calc = NearsightCalculator(args.model[0], **options)
        species = calc.forcefield.species
    else:  # a committee: mean energy and forces (σ in calc.results)
        from ..uncertainty import EnsembleCalculator

        calc = EnsembleCalculator(args.model, **options)
        species = sorted(set.intersection(*(set(ff.species) for ff in calc.members)))
    where = f"{args.structure} (frame {args.index})"
    validate_frame(Frame.from_atoms(atoms, source=args.structure, index=0), require=(), known_species=species)
    init = args.init_velocities if args.init_velocities is not None else not has_velocities(atoms)
    start = (
        f"Maxwell-Boltzmann velocities at {args.temperature_K:g} K (seed {args.seed})"
        if init
        else f"the velocities of {where} (T = {atoms.get_temperature():.1f} K)"
    )
    print(
        f"{len(atoms)} atoms, {args.ensemble}, {args.steps} steps of {args.timestep_fs} fs on {device}; "
        f"starting from {start}",
        flush=True,
    )

    def show(message: Warning | str, category: type[Warning], *_: object, **__: object) -> None:
        print(f"nearsight md: warning: {message}", file=sys.stderr, flush=True)

    with warnings.catch_warnings():
        warnings.showwarning = show
        warnings.simplefilter("always", ExtrapolationWarning)  # the calculator already warns once per episode
        try:
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
                init_velocities=init,
                progress=None if args.quiet else (lambda line: print(line, flush=True)),
                progress_interval=args.progress_every,
                stop_on_extrapolation=args.stop_on_extrapolation,
            )
        except (CloseAtomsError, NonFiniteOutputError, ExtrapolationError) as exc:
            raise ValueError(f"{where}: {exc}; the trajectory so far is in {args.trajectory}") from exc
    summary = (
        f"{result.steps} steps of {args.timestep_fs} fs ({args.ensemble}), {result.n_atoms} atoms, "
        f"{result.wall_time_s:.1f} s wall; T {result.temperature.mean():.1f} ± {result.temperature.std():.1f} K"
    )
    if args.ensemble == "nve":  # a thermostat exchanges energy: drift means something only in NVE
        summary += f"; energy drift {result.drift_ev_per_atom_ps:.3e} eV/atom/ps"
    print(f"{summary}; trajectory {args.trajectory}")
    if result.extrapolating_steps is None:
        print("extrapolation: not reported by this model")
    else:
        n_steps, worst = len(result.extrapolating_atoms), int(result.extrapolating_atoms.max())
        print(
            f"extrapolation: atoms outside the training data at {result.extrapolating_steps} of {n_steps} "
            "steps" + (f" (at most {worst} atoms)" if worst else "")
        )
    if result.stopped is not None:
        print(f"nearsight md: {result.stopped} (--stop-on-extrapolation)", file=sys.stderr)
        return 3
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(args.config, args.output_dir, md_steps=args.md_steps)
    return 0


def _add_label_keys(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", default=None, help="file format (default: from the extension)")
    detected = "default: detected (energy, REF_{0}, DFT_{0}, dft_{0}, ...); the output names the key used"
    p.add_argument("--energy-key", default=None, help=f"info key of the energy ({detected.format('energy')})")
    p.add_argument(
        "--forces-key", default=None, help=f"arrays key of the forces ({detected.format('forces')})"
    )
    p.add_argument("--stress-key", default=None, help=f"info key of the stress ({detected.format('stress')})")
    p.add_argument("--virial-key", default=None, help="info key of a virial (eV), used where no stress is")


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
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="start afresh in an output directory that holds a run (its model, checkpoint and log files "
        "are removed; without it such a directory is refused)",
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
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (where the model runs)")
    p.add_argument(
        "--init-velocities",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="draw Maxwell-Boltzmann velocities at --temperature-K (default: only if the frame has none; "
        "--no-init-velocities keeps the frame's, zero if it has none)",
    )
    p.add_argument("--progress-every", type=int, default=100, help="print a progress line every N steps")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument(
        "--min-distance",
        type=float,
        default=0.1,
        help="stop with an error when two atoms come closer than this (Å; 0: no check)",
    )
    p.add_argument(
        "--stop-on-extrapolation",
        action="store_true",
        help="stop (exit status 3) at the first step with atoms outside the training data",
    )
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
    p.add_argument(
        "--allow-python-oracle",
        action="store_true",
        help="allow oracle.type: python (imports and runs the named Python object); a config alone never runs code",
    )
    p.set_defaults(func=_active_learn)
    _add_common_options(parser, sub)
    return parser


def _add_common_options(parser: argparse.ArgumentParser, sub: argparse._SubParsersAction) -> None:
    """``--version`` on the command and ``--traceback`` on every subcommand."""
    from .. import __version__

    parser.add_argument("--version", action="version", version=f"nearsight {__version__}")
    for command in sub.choices.values():
        command.add_argument(
            "--traceback",
            action="store_true",
            help="on an error, show the Python traceback (also: NEARSIGHT_TRACEBACK=1)",
        )


# errors that describe the user's input or run: one line, no traceback
USER_ERRORS = (ValueError, TypeError, OSError, FloatingPointError, ImportError)


def main(argv: list[str] | None = None) -> int:
    """Run one command; an error is one line on stderr and exit status 2 (130 on Ctrl-C)."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        if args.traceback or os.environ.get("NEARSIGHT_TRACEBACK", "0") not in ("", "0"):
            raise
        print(f"nearsight {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - every error reaches the user as one line
        if args.traceback or os.environ.get("NEARSIGHT_TRACEBACK", "0") not in ("", "0"):
            raise
        message = " ".join(str(exc).split()) or type(exc).__name__
        if not isinstance(exc, USER_ERRORS):  # an unexpected error: its type says more
            message = f"{type(exc).__name__}: {message} (--traceback shows where)"
        print(f"nearsight {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
