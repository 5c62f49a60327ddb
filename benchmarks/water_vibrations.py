"""Water's harmonic frequencies and IR intensities from a committee with learned charges, against the
oracle's own analytic Hessian and dipole derivatives (PySCF, same level of theory), and the IR
spectrum from the committee's MD against the oracle's harmonic intensities.

    python benchmarks/water_vibrations_data.py --out runs/water_vib          # labels + reference
    nearsight train benchmarks/configs/water_vibrations.yaml --members 3
    python benchmarks/water_vibrations.py runs/water_vib/committee/member_*/best_model.pt \
        [--data runs/water_vib] [--json benchmarks/results/water_vibrations.json]

Each member relaxes the oracle's minimum (BFGS, fmax 1e-5 eV/Å) and gives its harmonic frequencies
and IR intensities by central differences (ASE Vibrations/Infrared, δ = 0.005 Å, 4 points). Goal:
committee-mean frequencies within 10 cm⁻¹ of the oracle's (mean absolute error over the three modes).
IR from MD: member 0, NVE from 20 K normal-mode sampling (ASE velocity Verlet, 0.25 fs, every step
saved, 5 ps), the dipole autocorrelation with the harmonic quantum correction; its band areas (split
at the midpoints between the harmonic frequencies) against the oracle's relative intensities.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
from ase import units
from ase.io import read
from ase.md.verlet import VelocityVerlet
from ase.optimize import BFGS

from nearsight.properties.common import as_calculators, committee_spread
from nearsight.properties.spectra import ir_spectrum
from nearsight.properties.vibrations import vibrations

EV_PER_A2_AMU_TO_CM1 = 1.0 / (2 * np.pi * units._c * 100) * np.sqrt(units._e / (1e-20 * units._amu))


def member_vibrations(minimum, calc) -> tuple[dict, object]:
    atoms = minimum.copy()
    atoms.calc = calc
    BFGS(atoms, logfile=None).run(fmax=1e-5, steps=500)
    result = vibrations(atoms, calc, delta=0.005, nfree=4, fmax=1e-4, ir=True)
    freqs = result.vibrational_frequencies_cm
    intensities = result.ir_intensities_km_mol[~result.rigid_body]
    order = np.argsort(freqs)
    summary = {
        "frequencies_cm1": freqs[order].tolist(),
        "ir_intensities_km_mol": intensities[order].tolist(),
        "rigid_body_max_cm1": float(np.abs(result.rigid_body_frequencies_cm).max()),
        "oh_bond_A": float(atoms.get_distance(0, 1)),
        "hoh_angle_deg": float(atoms.get_angle(1, 0, 2)),
    }
    return summary, result


def md_ir(calc, result, ps: float, temperature_K: float, seed: int):
    """IR spectrum of NVE MD started from harmonic normal-mode sampling of ``result`` at T: each mode
    with energy k_B T (equal energies: band areas ∝ intensities) and a uniform phase, Q = A cos φ, Q̇ = −Aω sin φ, A = √(2E)/ω (ASE units:
    ω² the eigenvalue of the mass-weighted Hessian in eV/(Å² amu))."""
    rng = np.random.default_rng(seed)
    atoms = result.atoms.copy()
    atoms.calc = calc
    modes = result.cartesian_modes[~result.rigid_body]  # [n_vib, N, 3]: e_k / √m
    omega = result.vibrational_frequencies_cm / EV_PER_A2_AMU_TO_CM1  # ASE inverse time units
    velocities = np.zeros_like(atoms.positions)
    for k in range(len(omega)):
        amplitude = np.sqrt(2 * units.kB * temperature_K) / omega[k]
        phase = rng.uniform(0, 2 * np.pi)
        atoms.positions += modes[k] * amplitude * np.cos(phase)
        velocities -= modes[k] * amplitude * omega[k] * np.sin(phase)
    atoms.set_velocities(velocities)
    dt = 0.25
    dipoles = []
    dyn = VelocityVerlet(atoms, timestep=dt * units.fs)
    dyn.attach(lambda: dipoles.append(atoms.get_dipole_moment()), interval=1)
    dyn.run(int(ps * 1000 / dt))
    return ir_spectrum(np.array(dipoles), dt, temperature_K=temperature_K, max_lag=len(dipoles) // 4)


def band_areas(spectrum, centres: np.ndarray) -> np.ndarray:
    edges = np.concatenate([[0.0], (centres[1:] + centres[:-1]) / 2, [centres[-1] * 1.5]])
    nu, y = spectrum.frequency_cm, spectrum.intensity
    areas = np.array(
        [
            np.trapezoid(y[(nu >= a) & (nu < b)], nu[(nu >= a) & (nu < b)])
            for a, b in zip(edges[:-1], edges[1:])
        ]
    )
    return areas / areas.sum()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("models", nargs="+")
    parser.add_argument("--data", default="runs/water_vib")
    parser.add_argument("--json", default="benchmarks/results/water_vibrations.json")
    parser.add_argument("--plot", default="docs/images/ir_water.png")
    parser.add_argument("--md-ps", type=float, default=5.0)
    parser.add_argument("--md-temperature-K", type=float, default=20.0)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    data = Path(args.data)
    reference = json.loads((data / "reference.json").read_text())
    minimum = read(data / "minimum.xyz")
    ref_freqs = np.array(reference["frequencies_cm1"])
    ref_ir = np.array(reference["ir_intensities_km_mol"])

    calcs = as_calculators(args.models)
    members, results = [], []
    for path, calc in zip(args.models, calcs):
        summary, result = member_vibrations(minimum, calc)
        members.append(summary)
        results.append(result)
        err = np.abs(np.array(summary["frequencies_cm1"]) - ref_freqs)
        print(f"{path}: ν {np.round(summary['frequencies_cm1'], 1)} cm⁻¹ (|Δν| {np.round(err, 1)}), "
              f"IR {np.round(summary['ir_intensities_km_mol'], 1)} km/mol")  # fmt: skip
    spread = committee_spread(members)
    mean_freqs = np.array(spread["frequencies_cm1"]["mean"])
    std_freqs = np.array(spread["frequencies_cm1"]["std"])
    mean_ir = np.array(spread["ir_intensities_km_mol"]["mean"])
    std_ir = np.array(spread["ir_intensities_km_mol"]["std"])
    mae = float(np.mean(np.abs(mean_freqs - ref_freqs)))
    member_mae = [float(np.mean(np.abs(np.array(m["frequencies_cm1"]) - ref_freqs))) for m in members]

    spectrum = md_ir(calcs[0], results[0], args.md_ps, args.md_temperature_K, seed=0)
    md_areas = band_areas(spectrum, ref_freqs)
    peaks = []
    for a, b in zip(
        np.concatenate([[0.0], (ref_freqs[1:] + ref_freqs[:-1]) / 2]),
        np.concatenate([(ref_freqs[1:] + ref_freqs[:-1]) / 2, [ref_freqs[-1] * 1.5]]),
    ):
        window = (spectrum.frequency_cm >= a) & (spectrum.frequency_cm < b)
        peaks.append(float(spectrum.frequency_cm[window][np.argmax(spectrum.intensity[window])]))

    level = reference.get("level_of_theory", "?")
    print(f"\nwater, {level}: committee of {len(members)}, mean ± σ against the oracle")
    print(f"{'mode':>5} {'model ν (cm⁻¹)':>18} {'oracle ν':>9} {'Δν':>7} {'model IR (km/mol)':>18} {'oracle IR':>9} "
          f"{'MD peak':>8} {'MD area':>8} {'oracle share':>12}")  # fmt: skip
    for k in range(len(ref_freqs)):
        print(f"{k + 1:>5} {mean_freqs[k]:>10.1f} ± {std_freqs[k]:<5.1f} {ref_freqs[k]:>9.1f} "
              f"{mean_freqs[k] - ref_freqs[k]:>+7.1f} {mean_ir[k]:>10.1f} ± {std_ir[k]:<5.1f} {ref_ir[k]:>9.1f} "
              f"{peaks[k]:>8.1f} {md_areas[k]:>8.3f} {ref_ir[k] / ref_ir.sum():>12.3f}")  # fmt: skip
    print(f"frequency MAE: committee mean {mae:.2f} cm⁻¹ (goal < 10), members {np.round(member_mae, 2)}; "
          f"MD spectrum resolution {spectrum.resolution_cm:.1f} cm⁻¹")  # fmt: skip

    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 3.5))
        ax.plot(
            spectrum.frequency_cm,
            spectrum.intensity / spectrum.intensity.max(),
            lw=1,
            label=f"model MD ({args.md_temperature_K:g} K, {args.md_ps:g} ps)",
        )
        scale = ref_ir.max()
        ax.vlines(ref_freqs, 0, ref_ir / scale, color="k", lw=2, label=f"oracle harmonic ({level})")
        ax.errorbar(
            mean_freqs,
            mean_ir / scale,
            xerr=std_freqs,
            yerr=std_ir / scale,
            fmt="o",
            color="C3",
            ms=4,
            label="committee harmonic ± σ",
        )
        ax.set_xlim(1000, 4500)
        ax.set_xlabel("wavenumber (cm⁻¹)")
        ax.set_ylabel("IR intensity (scaled)")
        ax.legend(fontsize=8)
        fig.tight_layout()
        Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.plot, dpi=110)

    out = {
        "level_of_theory": level,
        "models": [os.fspath(m) for m in args.models],
        "oracle": {"frequencies_cm1": ref_freqs.tolist(), "ir_intensities_km_mol": ref_ir.tolist()},
        "members": members,
        "committee": spread,
        "frequency_mae_cm1": mae,
        "member_frequency_mae_cm1": member_mae,
        "md_ir": {"peaks_cm1": peaks, "band_shares": md_areas.tolist(), "oracle_shares": (ref_ir / ref_ir.sum()).tolist(),
                  "resolution_cm1": spectrum.resolution_cm, "ps": args.md_ps, "temperature_K": args.md_temperature_K},
        "seconds": time.perf_counter() - start,
    }  # fmt: skip
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=1))
    print(f"{args.json} ({out['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
