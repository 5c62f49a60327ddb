"""``nearsight vibrations`` and ``nearsight spectrum``: harmonic vibrations of a molecule, spectra of MD.

    nearsight vibrations MOLECULE MODEL [MODEL ...] [--delta 0.01] [--no-ir] [--temperature-K 298.15]
                         [--symmetry-number N] [--relax] [--output-dir DIR]
    nearsight spectrum TRAJECTORY [--kind vdos|ir] [--timestep-fs DT] [--window hann|none]
                       [--temperature-K T] [--output-dir DIR]

``vibrations`` writes vibrations.json (frequencies in cm⁻¹, imaginary ones negative, mean ± σ over
several models, zero-point energy, ideal-gas thermochemistry, IR intensities where the model has
charges) and vibrations.png (stick spectrum), and prints a table. ``spectrum`` writes spectrum.csv
and spectrum.png from the velocities (VDOS) or the dipoles (IR) of an MD trajectory.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def vibrations_command(args: argparse.Namespace) -> int:
    import ase.io

    from ..properties.vibrations import committee_vibrations

    atoms = ase.io.read(args.molecule, index=args.index)
    committee = committee_vibrations(
        atoms,
        args.model,
        dtype=args.dtype,
        delta=args.delta,
        nfree=args.nfree,
        check_relaxed=not args.unrelaxed,
        fmax=args.fmax,
        relax=args.relax,
        ir=False if args.no_ir else "auto",
        where=f"{args.molecule} (frame {args.index})",
    )
    first, k = committee.members[0], len(committee.members)
    (nu, nu_std), ir = committee.frequencies_cm, committee.ir_intensities_km_mol
    thermo, thermo_note = None, None
    if any(m.n_imaginary for m in committee.members):
        thermo_note = "not computed: imaginary vibrations (not a minimum)"
    elif len(first.atoms) > 1:
        thermo = committee.thermochemistry(
            temperature_K=args.temperature_K,
            pressure_Pa=args.pressure_Pa,
            symmetry_number=args.symmetry_number,
            spin=args.spin,
        )
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    modes = [
        {"frequency_cm": float(nu[j]), "frequency_cm_std": float(nu_std[j])}
        | ({} if ir is None else {"ir_km_mol": float(ir[0][j]), "ir_km_mol_std": float(ir[1][j])})
        for j in range(len(nu))
    ]
    report = {
        "molecule": str(args.molecule),
        "models": [str(m) for m in args.model],
        "formula": first.atoms.get_chemical_formula(),
        "linear": first.linear,
        "delta_A": args.delta,
        "nfree": args.nfree,
        "frequency_convention": "cm^-1, imaginary as negative; mean and std (ddof=0) over models by rank",
        "vibrations": modes,
        "rigid_body_frequencies_cm": committee.spread["rigid_body_frequencies_cm"],
        "zero_point_energy_eV": committee.spread["zero_point_energy_eV"],
        "ir_intensities": "km/mol" if ir is not None else "not available: the model has no charges",
        "thermochemistry": thermo if thermo is not None else thermo_note,
        "members": [m.summary() for m in committee.members],
    }
    (out / "vibrations.json").write_text(json.dumps(report, indent=1))
    committee.plot(out / "vibrations.png")
    print(_table(report, k, len(first.atoms)))
    if thermo is not None:

        def pm(key: str, scale: float = 1.0) -> str:
            mean, std = thermo[key]["mean"] * scale, thermo[key]["std"] * scale
            return f"{mean:.4f} ± {std:.4f}" if k > 1 else f"{mean:.4f}"

        print(
            f"ideal gas at {args.temperature_K:g} K, {args.pressure_Pa:g} Pa, symmetry number "
            f"{args.symmetry_number}: H = {pm('enthalpy_eV')} eV, S = {pm('entropy_eV_per_K', 1e3)} meV/K, "
            f"G = {pm('gibbs_energy_eV')} eV (H and G include the potential energy)"
        )
    elif thermo_note:
        print(f"thermochemistry {thermo_note}")
    print(out / "vibrations.json")
    return 0


def _table(report: dict, k: int, n_atoms: int) -> str:
    """The vibrations as text: cm⁻¹ (i: imaginary), ± σ for a committee, IR km/mol where known."""
    ir = report["ir_intensities"] == "km/mol"
    shape = "linear" if report["linear"] else "nonlinear"
    lines = [
        f"{report['formula']}: {n_atoms} atoms, {shape}, {k} model(s)" + (" (mean ± σ)" if k > 1 else "")
    ]
    lines.append(f"{'mode':>4} {'cm^-1':>10}" + (f" {'± σ':>8}" if k > 1 else "") + (f" {'IR km/mol':>10}" if ir else "")
                 + (f" {'± σ':>8}" if ir and k > 1 else ""))  # fmt: skip
    for j, mode in enumerate(report["vibrations"]):
        nu = mode["frequency_cm"]
        line = f"{j + 1:>4} {abs(nu):9.2f}{'i' if nu < 0 else ' '}"
        line += f" {mode['frequency_cm_std']:8.2f}" if k > 1 else ""
        line += f" {mode['ir_km_mol']:10.3f}" if ir else ""
        line += f" {mode['ir_km_mol_std']:8.3f}" if ir and k > 1 else ""
        lines.append(line)
    rigid = np.asarray(report["rigid_body_frequencies_cm"]["mean"])
    zpe = report["zero_point_energy_eV"]
    lines.append(f"translations and rotations: {np.array2string(rigid, precision=2)} cm^-1")
    if np.abs(rigid).max() > 50:
        lines.append(
            "  (large: not a minimum, or too coarse differences; rigid-body and vibrational modes mix)"
        )
    lines.append(f"zero-point energy {zpe['mean']:.5f}" + (f" ± {zpe['std']:.5f}" if k > 1 else "") + " eV")
    if not ir:
        lines.append(f"IR intensities {report['ir_intensities']}")
    return "\n".join(lines)


def spectrum_command(args: argparse.Namespace) -> int:
    from ..properties.spectra import spectrum_from_trajectory

    spectrum = spectrum_from_trajectory(
        args.trajectory,
        kind=args.kind,
        timestep_fs=args.timestep_fs,
        window=None if args.window == "none" else args.window,
        max_lag=args.max_lag,
        temperature_K=args.temperature_K,
        quantum_correction=args.quantum_correction,
        index=args.index,
    )
    out = Path(args.output_dir)
    spectrum.to_csv(out / "spectrum.csv")
    spectrum.plot(out / "spectrum.png", max_cm=args.max_cm)
    print(
        f"{args.trajectory}: {spectrum.kind} from {spectrum.n_frames} frames {spectrum.timestep_fs:g} fs apart; "
        f"Nyquist {spectrum.nyquist_cm:.0f} cm^-1, resolution {spectrum.resolution_cm:.3g} cm^-1 "
        f"({spectrum.window or 'no'} window over {spectrum.max_lag} lags)"
    )
    line = f"highest point at {spectrum.peak_cm():.1f} cm^-1"
    if spectrum.kind == "vdos":
        line += (
            f", <nu> = {spectrum.moment(1):.1f} cm^-1, <nu^2>^1/2 = {np.sqrt(spectrum.moment(2)):.1f} cm^-1"
        )
    print(f"{line}; intensity: {spectrum.units}")
    print(out / "spectrum.csv")
    return 0


def add_vibration_parsers(sub: argparse._SubParsersAction) -> None:
    """The ``vibrations`` and ``spectrum`` subcommands."""
    p = sub.add_parser(
        "vibrations", help="harmonic frequencies, IR intensities and thermochemistry of a molecule"
    )
    p.add_argument("molecule", help="a relaxed molecule, any file ASE reads (no periodic boundaries)")
    p.add_argument("model", nargs="+", help="a model file; several: a committee (mean ± σ)")
    p.add_argument("--index", default="-1", help="frame of the molecule file (default: the last)")
    p.add_argument(
        "--delta", type=float, default=0.01, help="finite-difference displacement, Å (default 0.01)"
    )
    p.add_argument(
        "--nfree",
        type=int,
        choices=[2, 4],
        default=2,
        help="displacements per coordinate: ±δ (2), also ±2δ (4)",
    )
    p.add_argument(
        "--no-ir", action="store_true", help="no IR intensities (default: where the model has charges)"
    )
    p.add_argument("--relax", action="store_true", help="relax with each model first (BFGS to fmax/2)")
    p.add_argument(
        "--fmax", type=float, default=1e-3, help="largest force accepted as relaxed, eV/Å (default 1e-3)"
    )
    p.add_argument(
        "--unrelaxed", action="store_true", help="analyse the geometry even if it is not a minimum"
    )
    p.add_argument("--temperature-K", type=float, default=298.15, help="thermochemistry temperature (298.15)")
    p.add_argument("--pressure-Pa", type=float, default=1e5, help="thermochemistry pressure (default 1e5 Pa)")
    p.add_argument(
        "--symmetry-number", type=int, default=1, help="rotational symmetry number (water 2, NH3 3)"
    )
    p.add_argument(
        "--spin", type=float, default=0.0, help="total electronic spin (0 closed shell, 0.5 radical)"
    )
    p.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    p.add_argument("--output-dir", default=".", help="where vibrations.json and vibrations.png go")
    p.set_defaults(func=vibrations_command)

    p = sub.add_parser("spectrum", help="VDOS or IR spectrum from an MD trajectory (autocorrelation + FFT)")
    p.add_argument(
        "trajectory", help="an MD trajectory with velocities (vdos) or dipoles (ir), any file ASE reads"
    )
    p.add_argument("--kind", choices=["vdos", "ir"], default="vdos")
    p.add_argument("--timestep-fs", type=float, default=None,
                   help="time between frames (MD timestep × write interval); default: from info['time_fs']")  # fmt: skip
    p.add_argument("--window", choices=["hann", "none"], default="hann", help="lag window (default hann)")
    p.add_argument(
        "--max-lag", type=int, default=None, help="correlation length in frames (default: half the frames)"
    )
    p.add_argument("--temperature-K", type=float, default=None,
                   help="MD temperature: IR quantum corrections other than harmonic; absolute VDOS units")  # fmt: skip
    p.add_argument(
        "--quantum-correction", default="harmonic", choices=["harmonic", "none", "schofield", "standard"]
    )
    p.add_argument("--index", default=":", help="frames to use (default all)")
    p.add_argument(
        "--max-cm", type=float, default=None, help="upper end of the plot, cm^-1 (default Nyquist)"
    )
    p.add_argument("--output-dir", default=".", help="where spectrum.csv and spectrum.png go")
    p.set_defaults(func=spectrum_command)
