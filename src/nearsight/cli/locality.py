"""``nearsight locality``: is the reference local enough for a cutoff, and what does a model see?

    nearsight locality STRUCTURE [--method pbe --basis def2-svp | --calculator emt] [--model MODEL]
                       [--centres I [I ...]] [--delta 0.01] [--tolerance 0.01 [0.05 ...]]
                       [--amplitude 0.1] [--neglect sum|max] [--fit-window RMIN RMAX]
                       [--density-matrix [--electronic-temperature-K T [T ...]] [--kpts N N N]]
                       --output-dir DIR

The force response K_ij = ‖∂F_i/∂R_j‖ of the reference (finite differences, 6 calculations per
centre) and of the model (autograd), their exponential and power-law fits, the cutoff each force
tolerance needs, the model's cutoff and force range (2 × layers × r_c), and with
``--density-matrix`` the decay of the PySCF density matrix at each electronic temperature.
Writes locality.json and locality.png in the output directory and prints a table; the last line
is the JSON path.  See :mod:`nearsight.locality`.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

_PYSCF_METHODS = ("hf", "mp2", "ccsd", "ccsd(t)")


def _reference(args: argparse.Namespace):
    """The reference as a force provider, or None."""
    if args.calculator == "emt":
        from ase.calculators.emt import EMT

        return EMT()
    if args.method is None:
        return None
    from ..qm.oracles import PySCFOracle

    method = args.method.lower()
    if method in _PYSCF_METHODS:
        return PySCFOracle(
            method, basis=args.basis, charge=args.charge, spin=args.spin, conv_tol=args.conv_tol
        )
    return PySCFOracle(
        "dft", basis=args.basis, xc=method, charge=args.charge, spin=args.spin, conv_tol=args.conv_tol
    )


def _check(args: argparse.Namespace) -> None:
    for tol in args.tolerance:
        if not tol > 0 or not math.isfinite(tol):
            raise ValueError(f"--tolerance must be positive forces in eV/Å, got {tol!r}")
    if not args.amplitude > 0:
        raise ValueError(f"--amplitude must be a positive displacement in Å, got {args.amplitude!r}")
    if not args.delta > 0:
        raise ValueError(f"--delta must be a positive displacement in Å, got {args.delta!r}")
    for t in args.electronic_temperature_K:
        if not t >= 0 or not math.isfinite(t):
            raise ValueError(f"--electronic-temperature-K must be ≥ 0 K, got {t!r}")
    if args.density_matrix and args.method is None:
        raise ValueError("--density-matrix needs --method (hf or a DFT functional such as pbe) and --basis")
    if args.density_matrix and args.method.lower() in ("mp2", "ccsd", "ccsd(t)"):
        raise ValueError(
            f"--density-matrix: method {args.method!r} has no SCF density matrix; use hf or a functional"
        )
    if args.calculator is None and args.method is None and args.model is None:
        raise ValueError("nothing to analyse: give a reference (--method/--calculator), --model, or both")
    if args.model is not None and not Path(args.model).is_file():
        raise ValueError(f"model file {args.model!r} does not exist")


def locality_command(args: argparse.Namespace) -> int:
    _check(args)
    import ase.io

    from ..locality import (
        density_matrix_decay,
        force_response,
        format_table,
        locality_summary,
        model_force_response,
        plot_locality,
        receptive_field,
        write_json,
    )
    from ..locality.model_sensitivity import load_locality_model

    atoms = ase.io.read(args.structure, index=args.index)
    where = f"{args.structure} (frame {args.index})"
    if len(atoms) < 2:
        raise ValueError(f"{where}: {atoms.get_chemical_formula()} has {len(atoms)} atom(s); need at least 2")
    window = tuple(args.fit_window) if args.fit_window else (None, None)
    calc = load_locality_model(args.model) if args.model is not None else None  # fails early on a bad file
    reference = _reference(args)
    ref_result = model_result = None
    if reference is not None and not args.skip_forces:
        n = len(args.centres) if args.centres else len(atoms)
        print(f"{where}: force response of {n} centre(s), {6 * n} force calculations", flush=True)
        ref_result = force_response(
            atoms, reference, centres=args.centres, delta=args.delta, fit_window=window, progress=print
        )
    ranges = None
    if calc is not None:
        model_result = model_force_response(atoms, calc, centres=args.centres, fit_window=window)
        model_result.reference = f"{type(calc.forcefield.model).__name__} ({args.model})"
        ranges = receptive_field(calc.forcefield.model)
    density = []
    if args.density_matrix:
        method = "hf" if args.method.lower() == "hf" else "dft"
        for t in args.electronic_temperature_K:
            print(f"density matrix at T_e = {t:g} K", flush=True)
            density.append(
                density_matrix_decay(
                    atoms, method=method, xc=args.method.lower(), basis=args.basis, electronic_temperature_K=t,
                    kpts=args.kpts, centres=args.centres, charge=args.charge, spin=args.spin, fit_window=window,
                )
            )  # fmt: skip
    summary = locality_summary(
        ref_result, model_result, density, tolerances=args.tolerance, amplitude_A=args.amplitude,
        kind=args.neglect, receptive=ranges, structure=where,
    )  # fmt: skip
    out = Path(args.output_dir)
    cutoffs = {
        f"r_c for {c['tolerance_eV_per_A']:g} eV/Å: {c['cutoff_A']:.2f} Å": c["cutoff_A"]
        for c in summary.get("reference", {}).get("cutoffs", [])
    }
    plot_locality(out / "locality.png", ref_result, model_result, density, cutoffs, ranges, title=where)
    path = write_json(out / "locality.json", summary)
    print(format_table(summary))
    print(out / "locality.png")
    print(path)
    return 0


def add_locality_parser(sub: argparse._SubParsersAction) -> None:
    """The ``locality`` subcommand."""
    p = sub.add_parser(
        "locality", help="nearsightedness: force-response and density-matrix decay, the cutoff they imply"
    )
    p.add_argument("structure", help="a molecule or periodic cell, any file ASE reads")
    p.add_argument("--index", default="-1", help="frame of the structure file (default: the last)")
    ref = p.add_mutually_exclusive_group()
    ref.add_argument("--method", default=None,
                     help="PySCF reference: hf, mp2, ccsd, ccsd(t) or a DFT functional (pbe, b3lyp, 'lda,vwn')")  # fmt: skip
    ref.add_argument("--calculator", choices=["emt"], default=None, help="an ASE calculator as the reference")
    p.add_argument("--basis", default="def2-svp", help="PySCF basis (default def2-svp)")
    p.add_argument("--charge", type=int, default=0, help="total charge, e (default 0)")
    p.add_argument("--spin", type=int, default=0, help="unpaired electrons 2S (default 0)")
    p.add_argument("--conv-tol", type=float, default=1e-10, help="SCF convergence, Hartree (default 1e-10)")
    p.add_argument("--model", default=None, help="a nearsight model file: its own response, reported beside")
    p.add_argument("--centres", type=int, nargs="+", default=None,
                   help="atoms whose forces are watched (default all; each costs 6 reference calculations)")  # fmt: skip
    p.add_argument(
        "--delta", type=float, default=0.01, help="finite-difference displacement, Å (default 0.01)"
    )
    p.add_argument("--tolerance", type=float, nargs="+", default=[0.01],
                   help="force errors to keep below, eV/Å (default 0.01): the cutoff each needs")  # fmt: skip
    p.add_argument("--amplitude", type=float, default=0.1,
                   help="displacement of the atoms beyond the cutoff, Å (default 0.1: thermal motion)")  # fmt: skip
    p.add_argument("--neglect", choices=["sum", "max"], default="sum",
                   help="neglected force: all atoms beyond r_c move (sum, a bound) or the worst one (max)")  # fmt: skip
    p.add_argument("--fit-window", type=float, nargs=2, metavar=("RMIN", "RMAX"), default=None,
                   help="distances of the decay fits, Å (default: from 1.5 × the shortest pair distance)")  # fmt: skip
    p.add_argument("--density-matrix", action="store_true",
                   help="also the decay of the SCF density matrix (PySCF, --method hf or a functional)")  # fmt: skip
    p.add_argument("--skip-forces", action="store_true",
                   help="with --density-matrix: no force response of the PySCF reference (it is the costly part)")  # fmt: skip
    p.add_argument("--electronic-temperature-K", type=float, nargs="+", default=[0.0], metavar="T",
                   help="Fermi-Dirac smearing of the density matrix, K (default 0; several: one curve each)")  # fmt: skip
    p.add_argument("--kpts", type=int, nargs=3, default=(1, 1, 1), help="k-point mesh of a periodic cell")
    p.add_argument("--output-dir", required=True, help="where locality.json and locality.png go")
    p.set_defaults(func=locality_command)
