"""``nearsight md``: molecular dynamics with one model or a committee, progress and extrapolation."""

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


def md_command(args: argparse.Namespace) -> int:
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
