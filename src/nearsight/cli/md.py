"""``nearsight md``: molecular dynamics with one model or a committee, progress and extrapolation.

    nearsight md STRUCTURE MODEL [MODEL ...] --steps N [--ensemble nve|langevin|npt] [--timestep-fs 0.5]
                 [--temperature-K 300] [--friction-per-fs 0.01]                       # langevin
                 [--pressure-bar 1] [--barostat-time-fs T] [--thermostat-time-fs T] [--anisotropic]  # npt

NPT is the Martyna-Tobias-Klein barostat with Nosé-Hoover chains (:mod:`nearsight.simulate.npt`):
isotropic (the volume fluctuates, the cell keeps its shape) or with ``--anisotropic`` the whole cell;
it needs a structure periodic in three directions. The log then has the volume (Å³) and pressure
(GPa) columns, and the summary the mean volume and pressure and the drift of the conserved energy.
"""

from __future__ import annotations

import argparse
import sys


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


def _ensemble(args: argparse.Namespace) -> str:
    """The ensemble of :func:`run_md` from ``--ensemble`` and ``--anisotropic``; NPT options elsewhere
    are refused (they would be silently ignored)."""
    for name in ("pressure_bar", "barostat_time_fs", "thermostat_time_fs", "anisotropic"):
        vars(args).setdefault(name, None)  # a parser without the NPT options: none given
    if args.ensemble == "npt":
        return "npt-aniso" if args.anisotropic else "npt"
    given = [
        flag
        for flag, value in (
            ("--pressure-bar", args.pressure_bar),
            ("--barostat-time-fs", args.barostat_time_fs),
            ("--thermostat-time-fs", args.thermostat_time_fs),
            ("--anisotropic", args.anisotropic or None),
        )
        if value is not None
    ]
    if given:
        raise ValueError(f"{', '.join(given)}: only with --ensemble npt (got --ensemble {args.ensemble})")
    return args.ensemble


def md_command(args: argparse.Namespace) -> int:
    import warnings

    from ase.io import read

    from ..calculator import NearsightCalculator
    from ..guards import CloseAtomsError, ExtrapolationError, ExtrapolationWarning, NonFiniteOutputError
    from ..simulate.md import has_velocities, run_md

    device = _md_device(args.device)
    ensemble = _ensemble(args)
    try:
        atoms = read(args.structure, index=args.index)
    except Exception as exc:  # noqa: BLE001 - re-raised naming the file
        raise ValueError(f"{args.structure!r}: cannot read structure ({exc})") from exc
    if ensemble.startswith("npt"):
        from ..simulate.npt import require_npt_structure

        require_npt_structure(atoms, where=f"{args.structure} (frame {args.index})")
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
    conditions = ensemble
    if ensemble.startswith("npt"):
        pressure = 1.0 if args.pressure_bar is None else args.pressure_bar
        conditions += f" at {pressure:g} bar ({pressure * 1e-4:g} GPa) and {args.temperature_K:g} K"
    print(
        f"{len(atoms)} atoms, {conditions}, {args.steps} steps of {args.timestep_fs} fs on {device}; "
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
                ensemble=ensemble,
                friction_per_fs=args.friction_per_fs,
                seed=args.seed,
                trajectory=args.trajectory,
                logfile=args.log,
                interval=args.interval,
                init_velocities=init,
                progress=None if args.quiet else (lambda line: print(line, flush=True)),
                show_bar=False if args.quiet else None,
                progress_interval=args.progress_every,
                stop_on_extrapolation=args.stop_on_extrapolation,
                pressure_bar=args.pressure_bar,
                barostat_time_fs=args.barostat_time_fs,
                thermostat_time_fs=args.thermostat_time_fs,
            )
        except (CloseAtomsError, NonFiniteOutputError, ExtrapolationError) as exc:
            raise ValueError(f"{where}: {exc}; the trajectory so far is in {args.trajectory}") from exc
    summary = (
        f"{result.steps} steps of {args.timestep_fs} fs ({ensemble}), {result.n_atoms} atoms, "
        f"{result.wall_time_s:.1f} s wall; T {result.temperature.mean():.1f} ± {result.temperature.std():.1f} K"
    )
    if ensemble == "nve":  # Langevin exchanges energy with its bath: no conserved quantity
        summary += f"; energy drift {result.drift_ev_per_atom_ps:.3e} eV/atom/ps"
    elif result.volume is not None:
        v, p = result.volume, result.pressure_bar
        summary += (
            f"; V {v.mean():.3f} ± {v.std():.3f} Å³ ({v.mean() / result.n_atoms:.4f} Å³/atom), "
            f"P {p.mean():.1f} ± {p.std():.1f} bar; conserved-energy drift "
            f"{result.drift_ev_per_atom_ps:.3e} eV/atom/ps"
        )
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


def add_md_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``md`` to the ``nearsight`` subcommands."""
    p = sub.add_parser("md", help="molecular dynamics with a model (ASE integrators)")
    p.add_argument("structure", help="any file ASE reads")
    p.add_argument("model", nargs="+", help="a model file; several: a committee (mean forces)")
    p.add_argument("--index", default="0", help="frame of the structure file (default 0)")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--timestep-fs", type=float, default=0.5)
    p.add_argument("--temperature-K", type=float, default=300.0)
    p.add_argument(
        "--ensemble",
        default="nve",
        choices=["nve", "langevin", "npt"],
        help="nve (velocity Verlet), langevin (NVT) or npt (MTK barostat + Nosé-Hoover chains; "
        "a crystal periodic in three directions)",
    )
    p.add_argument("--friction-per-fs", type=float, default=0.01, help="langevin friction (1/fs)")
    p.add_argument(
        "--pressure-bar",
        type=float,
        default=None,
        help="npt: external pressure (bar; 1 GPa = 1e4 bar; default 1)",
    )
    p.add_argument(
        "--barostat-time-fs",
        type=float,
        default=None,
        help="npt: barostat time constant τ_p (fs; default 1000 timesteps; the volume of a solid "
        "oscillates much faster than τ_p, see nearsight.simulate.npt)",
    )
    p.add_argument(
        "--thermostat-time-fs",
        type=float,
        default=None,
        help="npt: Nosé-Hoover chain time constant (fs; default 100 timesteps)",
    )
    p.add_argument(
        "--anisotropic",
        action="store_true",
        help="npt: let the whole cell fluctuate (lengths and angles), not only the volume",
    )
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
    p.add_argument("--quiet", action="store_true", help="no progress lines and no progress bar")
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
    p.set_defaults(func=md_command)
