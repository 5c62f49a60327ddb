"""Vibrations of water: harmonic frequencies, IR intensities and thermochemistry, then the VDOS and IR
spectrum of a short NVE run, with the flexible q-SPC/Fw water model (a classical force field; no model
file or quantum chemistry needed).

    python examples/properties/vibrations_water.py            # writes docs/images/vibrations_water.png
    python examples/properties/vibrations_water.py model.pt   # the same with a nearsight model (IR needs
                                                              # a model with charges)

q-SPC/Fw (Paesani et al., J. Chem. Phys. 125, 184507 (2006)): harmonic O-H bonds and H-O-H angle, fixed
charges q_O = −0.84 e, q_H = +0.42 e, so the dipole is Σ q_i r_i.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from ase.build import molecule
from ase.calculators.calculator import Calculator, all_changes
from ase.optimize import BFGS

from nearsight.properties.common import as_calculators
from nearsight.properties.spectra import spectrum_from_trajectory
from nearsight.properties.vibrations import vibrations
from nearsight.simulate.md import run_md

ROOT = Path(__file__).resolve().parents[2]
KCAL = 0.0433641  # eV per kcal/mol


class FlexibleWater(Calculator):
    """q-SPC/Fw intramolecular terms of one H2O (atoms O, H, H) and its point-charge dipole."""

    implemented_properties = ["energy", "forces", "charges", "dipole"]
    k_bond, r0 = 1059.162 * KCAL, 1.0  # eV/Å², Å
    k_angle, theta0 = 75.90 * KCAL, np.deg2rad(112.0)  # eV/rad², rad
    charges = np.array([-0.84, 0.42, 0.42])

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        r = self.atoms.positions
        forces, energy = np.zeros_like(r), 0.0
        bonds = [r[1] - r[0], r[2] - r[0]]
        lengths = [np.linalg.norm(b) for b in bonds]
        for k, (b, length) in enumerate(zip(bonds, lengths, strict=True)):
            energy += 0.5 * self.k_bond * (length - self.r0) ** 2
            f = -self.k_bond * (length - self.r0) * b / length  # on the H
            forces[k + 1] += f
            forces[0] -= f
        cos = np.dot(bonds[0], bonds[1]) / (lengths[0] * lengths[1])
        theta = np.arccos(np.clip(cos, -1.0, 1.0))
        energy += 0.5 * self.k_angle * (theta - self.theta0) ** 2
        for k in (0, 1):  # dθ/db_k = −(b_other/(|b_k||b_other|) − cos θ b_k/|b_k|²) / sin θ
            other = bonds[1 - k]
            dtheta = -(other / (lengths[0] * lengths[1]) - cos * bonds[k] / lengths[k] ** 2) / np.sin(theta)
            forces[k + 1] -= self.k_angle * (theta - self.theta0) * dtheta
            forces[0] += self.k_angle * (theta - self.theta0) * dtheta
        self.results = {
            "energy": energy,
            "forces": forces,
            "charges": self.charges,
            "dipole": self.charges @ r,
        }


def main() -> None:
    calc = as_calculators(sys.argv[1])[0] if len(sys.argv) > 1 else FlexibleWater()
    water = molecule("H2O")
    water.calc = calc
    BFGS(water, logfile=None).run(fmax=1e-5)
    result = vibrations(water, calc, fmax=1e-4, nfree=4)  # ±δ, ±2δ: O(δ⁴) differences
    print(result.atoms.get_chemical_formula(), "harmonic vibrations (cm⁻¹, IR km/mol):")
    ir = result.ir_intensities_km_mol
    for k in np.flatnonzero(~result.rigid_body):
        print(f"  {result.frequencies_cm[k]:8.1f}" + (f"   {ir[k]:8.2f}" if ir is not None else ""))
    print(f"  translations/rotations: {np.round(result.rigid_body_frequencies_cm, 2)} cm⁻¹")
    thermo = result.thermochemistry(298.15, symmetry_number=2)
    print(f"  ZPE {result.zero_point_energy:.4f} eV; 298.15 K, 1 bar: H − E = "
          f"{thermo['enthalpy_eV'] - result.energy:.4f} eV, S = {thermo['entropy_eV_per_K'] * 1e3:.4f} meV/K")  # fmt: skip

    with tempfile.TemporaryDirectory() as tmp:  # 4 ps of NVE at 300 K, every step written
        traj = Path(tmp) / "water.traj"
        run_md(result.atoms, calc, steps=16000, timestep_fs=0.25, temperature_K=300.0, trajectory=traj,
               interval=1, seed=3)  # fmt: skip
        vdos = spectrum_from_trajectory(traj, "vdos", timestep_fs=0.25, max_lag=4000)
        md_ir = (
            spectrum_from_trajectory(traj, "ir", timestep_fs=0.25, max_lag=4000) if ir is not None else None
        )
    print(f"MD: VDOS peaks resolved to {vdos.resolution_cm:.1f} cm⁻¹; ⟨ν⟩ = {vdos.moment(1):.0f} cm⁻¹")

    vib = ~result.rigid_body
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7.0, 4.6), dpi=100, sharex=True)
    heights = ir[vib] if ir is not None else np.ones(vib.sum())
    top.vlines(result.frequencies_cm[vib], 0, heights, colors="k", lw=2)
    top.set_ylabel("IR (km/mol)" if ir is not None else "mode")
    top.set_title("H$_2$O, harmonic modes (top) and spectra of 4 ps NVE at 300 K (bottom)", fontsize=10)
    bottom.plot(vdos.frequency_cm, vdos.intensity / vdos.intensity.max(), lw=1, label="VDOS (velocity ACF)")
    if md_ir is not None:
        bottom.plot(md_ir.frequency_cm, md_ir.intensity / md_ir.intensity.max(), lw=1,
                    label="IR (dipole ACF, harmonic quantum correction)")  # fmt: skip
    bottom.set_xlim(0, 4200)
    bottom.set_xlabel("wavenumber (cm$^{-1}$)")
    bottom.set_ylabel("normalised")
    bottom.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    png = ROOT / "docs" / "images" / "vibrations_water.png"
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png)
    print(png)


if __name__ == "__main__":
    main()
