"""``nearsight neb``: a minimum-energy path and its barrier with a model (climbing-image NEB).

    nearsight neb INITIAL FINAL MODEL [--images 7] [--fmax 0.05] [--no-climb] [--steps 1000]
                  [--method improvedtangent|aseneb] [--interpolate idpp|linear] [--optimizer FIRE]
                  [--spring 0.1] [--no-relax-endpoints] [--output-dir DIR]

INITIAL and FINAL are any files ASE reads (``--initial-index``/``--final-index`` pick frames), with
the same atoms in the same order and the same cell; constraints of INITIAL (``FixAtoms`` of a slab's
bottom, as an extxyz or .traj file stores them) hold on every image. The end points are relaxed first.
Writes DIR/neb.json (barriers forward/backward, reaction energy, the saddle image, energies along the
path), DIR/neb.png (the energy profile) and DIR/neb.traj (the band, energies and forces included).
A band that does not converge in ``--steps`` is still written, and the command exits with status 3.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def neb_command(args: argparse.Namespace) -> int:
    from ..simulate.neb import run_neb
    from .crystal import _read_structure, _write_json

    initial = _read_structure(args.initial, args.initial_index, "neb")
    final = _read_structure(args.final, args.final_index, "neb")
    names = (f"{args.initial} (frame {args.initial_index})", f"{args.final} (frame {args.final_index})")
    out = Path(args.output_dir)
    result = run_neb(
        initial,
        final,
        args.model,
        n_images=args.images,
        climb=not args.no_climb,
        fmax=args.fmax,
        steps=args.steps,
        method=args.method,
        interpolate=args.interpolate,
        spring_constant=args.spring,
        optimizer=args.optimizer,
        relax_endpoints=not args.no_relax_endpoints,
        logfile=None if args.quiet else "-",
        dtype=args.dtype,
        device=args.device,
        names=names,
    )
    report = {
        "initial": names[0],
        "final": names[1],
        "model": str(args.model),
        "units": {"energies": "eV", "path": "Å", "forces": "eV/Å"},
        **result.summary(),
    }
    json_path = _write_json(out / "neb.json", report)
    png = result.plot(out / "neb.png")
    traj = result.write_trajectory(out / "neb.traj")
    kind = "climbing image" if result.climb else "highest image"
    print(
        f"barrier forward {result.barrier_forward:.4f} eV, backward {result.barrier_backward:.4f} eV, "
        f"reaction energy {result.reaction_energy:.4f} eV; saddle: {kind} {result.saddle_index} of "
        f"{len(result.images) - 1} (largest force {result.saddle_max_force:.3g} eV/Å); {result.n_steps} steps"
    )
    for path in (json_path, png, traj):
        print(path)
    if not result.converged:
        print(
            f"nearsight neb: the band did not converge in {args.steps} steps to fmax = {args.fmax:g} eV/Å "
            f"(largest NEB force {result.max_neb_force:.3g} eV/Å); its last state is in {traj}",
            file=sys.stderr,
        )
        return 3
    return 0


def add_neb_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``neb`` to the ``nearsight`` subcommands."""
    p = sub.add_parser("neb", help="minimum-energy path and barrier (climbing-image NEB) with a model")
    p.add_argument("initial", help="initial state: any file ASE reads")
    p.add_argument("final", help="final state: the same atoms in the same order, the same cell")
    p.add_argument("model", help="a model file")
    p.add_argument("--initial-index", type=int, default=0, help="frame of INITIAL (default 0)")
    p.add_argument("--final-index", type=int, default=0, help="frame of FINAL (default 0)")
    p.add_argument("--images", type=int, default=7, help="interior images (default 7)")
    p.add_argument(
        "--fmax", type=float, default=0.05, help="largest NEB force at convergence (eV/Å, default 0.05)"
    )
    p.add_argument("--no-climb", action="store_true", help="no climbing image (the saddle is interpolated)")
    p.add_argument("--steps", type=int, default=1000, help="most optimiser steps (default 1000)")
    p.add_argument("--method", choices=["improvedtangent", "aseneb"], default="improvedtangent")
    p.add_argument(
        "--interpolate", choices=["idpp", "linear"], default="idpp", help="initial band (default idpp)"
    )
    p.add_argument("--optimizer", choices=["FIRE", "BFGS", "LBFGS"], default="FIRE", help="default: FIRE")
    p.add_argument("--spring", type=float, default=0.1, help="spring constant (eV/Å², default 0.1)")
    p.add_argument("--no-relax-endpoints", action="store_true", help="use INITIAL and FINAL as they are")
    p.add_argument("--dtype", choices=["float64", "float32"], default="float64", help="default: float64")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--quiet", action="store_true", help="no optimiser log")
    p.add_argument("--output-dir", default=".", help="where neb.json, neb.png and neb.traj go (default .)")
    p.set_defaults(func=neb_command)
