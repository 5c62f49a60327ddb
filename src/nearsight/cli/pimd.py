"""``nearsight pimd``: path-integral MD with i-PI, nearsight giving the forces in-process.

    nearsight pimd STRUCTURE MODEL --beads 32 --temperature-K 300 --steps 20000 --timestep-fs 0.25
                   [--output-dir pimd] [--write-input-only] [--resume | --overwrite]
                   [--estimator kinetic_td --estimator 'r_gyration(H)' ...] [--rdf O-H --rdf H-H]

writes ``DIR/input.xml`` (i-PI's input; with --write-input-only nothing else runs, and
``cd DIR && i-pi input.xml`` runs it), runs it, and prints the centroid-virial kinetic energy per
atom of each species with its block-average standard error, beside the classical 3/2 k_B T;
``DIR/summary.json`` holds the same numbers.  ``--rdf A-B`` writes ``DIR/rdf_A-B.txt``
(r in Å, g(r)) from every bead's frames (periodic structures).  An estimator the model cannot
give (``pressure_cv`` for a molecule, ``dipole`` from a model without charges) is an error that
names it and the model.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _pair(text: str) -> tuple[str, str]:
    a, sep, b = text.partition("-")
    if not sep or not a or not b:
        raise argparse.ArgumentTypeError(f"--rdf {text!r}: write a species pair as A-B, e.g. O-H")
    return a, b


def pimd_command(args: argparse.Namespace) -> int:
    import numpy as np
    from ase import units
    from ase.io import read

    from .._files import atomic_write
    from ..simulate.pimd import run_pimd
    from ..simulate.rdf import radial_distribution

    if not Path(args.structure).is_file():
        raise ValueError(f"structure file {args.structure} does not exist")
    try:
        atoms = read(args.structure, index=args.index)
    except Exception as exc:  # noqa: BLE001 - ASE raises many kinds for a file it cannot parse
        raise ValueError(f"cannot read frame {args.index} of {args.structure} as a structure: {exc}") from exc
    _check_species(atoms, args)
    if args.rdf and not all(atoms.pbc):
        raise ValueError(f"--rdf needs a structure periodic in all three directions; {args.structure} is not")
    if args.rdf and args.trajectory != "beads":
        raise ValueError("--rdf needs the bead trajectories (--trajectory beads)")
    out = run_pimd(
        atoms,
        args.model,
        n_beads=args.beads,
        temperature_K=args.temperature_K,
        steps=args.steps,
        timestep_fs=args.timestep_fs,
        output_dir=args.output_dir,
        thermostat=args.thermostat,
        tau_fs=args.tau_fs,
        pile_lambda=args.pile_lambda,
        seed=args.seed,
        stride=args.stride,
        trajectory=args.trajectory,
        trajectory_stride=args.trajectory_stride,
        checkpoint_stride=args.checkpoint_stride,
        estimators=tuple(args.estimator),
        fixcom=args.fixcom,
        resume=args.resume,
        overwrite=args.overwrite,
        write_input_only=args.write_input_only,
        dtype=args.dtype,
        device=args.device,
    )
    if args.write_input_only:
        print(f"i-PI input written (not run): {out}; run it with: cd {Path(out).parent} && i-pi input.xml")
        return 0
    result = out
    kt = units.kB * args.temperature_K
    per_step = result.wall_time_s / result.steps_run if result.steps_run else float("nan")
    print(
        f"{len(atoms)} atoms, {args.beads} beads, {args.temperature_K:g} K: {result.steps_run} new steps "
        f"(of {args.steps}) in {result.wall_time_s:.1f} s ({per_step * 1e3:.1f} ms/step); "
        f"outputs in {args.output_dir}"
    )
    estimates = result.kinetic_energy_per_atom(discard=args.discard, n_blocks=args.blocks)
    print(
        f"centroid-virial kinetic energy per atom (first {args.discard:.0%} discarded, {args.blocks} blocks), "
        f"classical 3/2 kT = {1.5 * kt * 1e3:.2f} meV:"
    )
    for symbol, (mean, sem) in estimates.items():
        print(
            f"  {symbol:>3}  {mean * 1e3:10.2f} ± {sem * 1e3:.2f} meV  ({mean / (1.5 * kt):.3f} × classical)"
        )
    summary = {
        "kinetic_cv_per_atom_eV": {s: {"mean": m, "sem": e} for s, (m, e) in estimates.items()},
        "classical_kinetic_per_atom_eV": 1.5 * kt,
        "potential_eV": dict(zip(("mean", "sem"), result.estimate("potential", args.discard, args.blocks))),
        "temperature_K": dict(
            zip(("mean", "sem"), result.estimate("temperature", args.discard, args.blocks))
        ),
        "steps": int(result.step[-1]) if len(result.step) else 0,
        "n_beads": args.beads,
        "discard": args.discard,
        "blocks": args.blocks,
    }
    if args.rdf:
        frames = result.trajectory(discard=args.discard)  # every bead's frames: the quantum g(r)
        summary["rdf_first_peak_A"] = {}
        for a, b in args.rdf:
            r, g = radial_distribution(frames, (a, b), r_max=args.rdf_r_max, bins=args.rdf_bins)
            path = Path(args.output_dir) / f"rdf_{a}-{b}.txt"
            atomic_write(
                path, lambda fh, r=r, g=g: np.savetxt(fh, np.column_stack([r, g]), header="r_A g(r)")
            )
            summary["rdf_first_peak_A"][f"{a}-{b}"] = float(r[np.argmax(g)])
            print(f"  g_{a}{b}(r): {path} (highest peak at {r[np.argmax(g)]:.3f} Å)")
    json_path = Path(args.output_dir) / "summary.json"
    atomic_write(json_path, lambda fh: json.dump(summary, fh, indent=1))
    print(json_path)
    return 0


def _check_species(atoms, args: argparse.Namespace) -> None:
    """Every element of the structure must be one the model file knows."""
    from ..data.frame import Frame
    from ..data.validate import validate_frame
    from ..models.forcefield import ForceField
    from ..models.io import load_model

    species = ForceField(load_model(args.model)).species
    frame = Frame.from_atoms(atoms, source=args.structure, index=args.index)
    validate_frame(frame, require=(), min_distance=0.0, known_species=species)


def add_pimd_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pimd", help="path-integral MD with i-PI (quantum nuclei), nearsight forces in-process"
    )
    p.add_argument("structure", help="any file ASE reads")
    p.add_argument("model", help="a model file")
    p.add_argument("--index", type=int, default=0, help="frame of the structure file (default 0)")
    p.add_argument("--beads", type=int, default=32, help="ring-polymer beads P (default 32; 1: classical)")
    p.add_argument("--temperature-K", type=float, default=300.0)
    p.add_argument("--steps", type=int, default=10000, help="total steps (a resumed run continues up to it)")
    p.add_argument("--timestep-fs", type=float, default=0.25)
    p.add_argument("--thermostat", default="pile_l", choices=["pile_l", "pile_g", "svr", "langevin"])
    p.add_argument("--tau-fs", type=float, default=100.0, help="centroid thermostat time constant (fs)")
    p.add_argument(
        "--pile-lambda", type=float, default=1.0, help="internal-mode friction / critical damping (PILE)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stride", type=int, default=1, help="write the properties every N steps")
    p.add_argument("--trajectory", default="beads", choices=["beads", "centroid", "none"])
    p.add_argument("--trajectory-stride", type=int, default=10, help="write positions every N steps")
    p.add_argument("--checkpoint-stride", type=int, default=1000, help="write a checkpoint every N steps")
    p.add_argument(
        "--estimator",
        action="append",
        default=[],
        help="a further i-PI property (kinetic_td, 'r_gyration(H)', pressure_cv, ...) or the model's "
        "dipole / charges; repeat for several",
    )
    p.add_argument(
        "--fixcom",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="remove the centre-of-mass momentum (default: yes)",
    )
    p.add_argument("--output-dir", default="pimd", help="run directory (default pimd)")
    p.add_argument("--write-input-only", action="store_true", help="write input.xml and stop")
    p.add_argument("--resume", action="store_true", help="continue from OUTPUT_DIR/RESTART up to --steps")
    p.add_argument("--overwrite", action="store_true", help="start afresh in a directory that holds a run")
    p.add_argument("--discard", type=float, default=0.2, help="fraction discarded as equilibration")
    p.add_argument("--blocks", type=int, default=20, help="blocks of the standard error")
    p.add_argument("--rdf", type=_pair, action="append", default=[], help="g(r) of a species pair A-B")
    p.add_argument("--rdf-r-max", type=float, default=6.0, help="g(r) range (Å)")
    p.add_argument("--rdf-bins", type=int, default=120)
    p.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (where the model runs)")
    p.set_defaults(func=pimd_command)
