"""Training data for the water vibration benchmark: geometries about the oracle's minimum, labelled by
PySCF (energy, forces, dipole), and the oracle's own harmonic reference (analytic Hessian, IR
intensities from finite differences of its dipole).

    python benchmarks/water_vibrations_data.py --out runs/water_vib [--frames 600] [--method hf]

Sampling: normal-mode displacements of the oracle's harmonic modes, each amplitude Q_k drawn from
N(0, k_B T / ω_k²) (classical equipartition) at a temperature drawn uniformly from
[``t_min``, ``t_max``] per frame, plus N(0, 0.005 Å) Cartesian noise on every atom, so the data cover
the harmonic well and some anharmonicity. Writes ``data.extxyz`` (info: energy eV, dipole e·Å;
arrays: forces eV/Å), ``minimum.xyz`` and ``reference.json`` (frequencies cm⁻¹, IR intensities
km/mol, the level of theory). Labels are cached: a rerun adds only what is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
from ase import Atoms
from ase import units as u
from ase.build import molecule
from ase.calculators.calculator import Calculator, all_changes
from ase.io import read, write
from ase.optimize import BFGS

# ħ ω in cm⁻¹ from eigenvalues of the mass-weighted Hessian in eV/(Å² amu)
EV_PER_A2_AMU_TO_CM1 = 1.0 / (2 * np.pi * u._c * 100) * np.sqrt(u._e / (1e-20 * u._amu))
# IR intensity: (e/amu^½)² → km/mol:  N_A π / (3 c²) (dμ/dQ)² / (4 π ε0)  (ASE's convention)
KM_PER_MOL_PER_E2_AMU = (u._e**2 / u._amu) * u._Nav * np.pi / (3 * u._c**2) / (4 * np.pi * u._eps0) / 1000.0


class PySCFDipoleCalculator(Calculator):
    """Energy, forces and dipole of a neutral closed-shell molecule from PySCF (RHF or RKS)."""

    implemented_properties = ["energy", "forces", "dipole"]

    def __init__(self, method: str = "hf", basis: str = "6-31g*", xc: str = "b3lyp", **kwargs) -> None:
        super().__init__(**kwargs)
        self.method, self.basis, self.xc = method, basis, xc
        self.mf = None

    def scf(self, atoms: Atoms):
        from pyscf import dft, gto, scf

        mol = gto.M(
            atom=[(s, p) for s, p in zip(atoms.get_chemical_symbols(), atoms.positions)],
            basis=self.basis,
            unit="Angstrom",
            verbose=0,
        )
        if self.method == "hf":
            mf = scf.RHF(mol)
        else:
            mf = dft.RKS(mol)
            mf.xc = self.xc
            mf.grids.level = 5
        mf.conv_tol = 1e-11
        mf.kernel()
        if not mf.converged:
            raise RuntimeError(f"SCF not converged at {atoms.positions.tolist()}")
        return mf

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        mf = self.scf(self.atoms)
        self.mf = mf
        gradient = mf.nuc_grad_method().kernel()  # Hartree/Bohr
        dipole = mf.dip_moment(unit="AU", verbose=0) * u.Bohr  # e·Bohr → e·Å
        self.results = {
            "energy": float(mf.e_tot) * u.Hartree,
            "forces": -np.asarray(gradient) * u.Hartree / u.Bohr,
            "dipole": np.asarray(dipole, dtype=float),
        }


def harmonic_reference(atoms: Atoms, calc: PySCFDipoleCalculator, dipole_step: float = 1e-3) -> dict:
    """Frequencies (cm⁻¹) from PySCF's analytic Hessian and IR intensities (km/mol) from central
    differences of the SCF dipole along Cartesian displacements of ``dipole_step`` Å."""
    mf = calc.scf(atoms)
    hess = mf.Hessian().kernel()  # [n, n, 3, 3] Hartree/Bohr²
    n = len(atoms)
    h = hess.transpose(0, 2, 1, 3).reshape(3 * n, 3 * n) * u.Hartree / u.Bohr**2  # eV/Å²
    m = np.repeat(atoms.get_masses(), 3)
    hm = h / np.sqrt(np.outer(m, m))
    hm = 0.5 * (hm + hm.T)
    evals, evecs = np.linalg.eigh(hm)
    freqs = np.sign(evals) * np.sqrt(np.abs(evals)) * EV_PER_A2_AMU_TO_CM1
    dmu = np.zeros((3 * n, 3))
    for k in range(3 * n):
        mus = []
        for sign in (1, -1):
            moved = atoms.copy()
            moved.positions[k // 3, k % 3] += sign * dipole_step
            mus.append(calc.scf(moved).dip_moment(unit="AU", verbose=0) * u.Bohr)
        dmu[k] = (mus[0] - mus[1]) / (2 * dipole_step)  # e
    modes = evecs / np.sqrt(m)[:, None]  # Cartesian displacement per unit mass-weighted amplitude
    dmu_dq = modes.T @ dmu  # [3n, 3] e / amu^½
    intensities = (dmu_dq**2).sum(axis=1) * KM_PER_MOL_PER_E2_AMU
    order = np.argsort(np.abs(freqs))
    vib = order[6:]  # a nonlinear molecule: the six smallest |ν| are translations and rotations
    vib = vib[np.argsort(freqs[vib])]
    return {
        "frequencies_cm1": freqs[vib].tolist(),
        "ir_intensities_km_mol": intensities[vib].tolist(),
        "zero_modes_cm1": freqs[order[:6]].tolist(),
        "hessian_eV_A2": h.tolist(),
        "modes": evecs[:, vib].T.tolist(),
    }


def sample(minimum: Atoms, reference: dict, n: int, t_min: float, t_max: float, seed: int) -> list[Atoms]:
    """Normal-mode sampling at random temperatures plus small Cartesian noise (module docstring)."""
    rng = np.random.default_rng(seed)
    m = np.repeat(minimum.get_masses(), 3)
    modes = np.array(reference["modes"])  # [n_vib, 3n] mass-weighted unit vectors
    omega2 = (np.array(reference["frequencies_cm1"]) / EV_PER_A2_AMU_TO_CM1) ** 2  # eV/(Å² amu)
    frames = []
    for _ in range(n):
        kt = u.kB * rng.uniform(t_min, t_max)
        q = rng.normal(size=len(omega2)) * np.sqrt(kt / omega2)  # amu^½ Å
        dx = (modes.T @ q) / np.sqrt(m)
        atoms = minimum.copy()
        atoms.positions += dx.reshape(-1, 3) + rng.normal(scale=0.005, size=(len(atoms), 3))
        frames.append(atoms)
    return frames


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="runs/water_vib")
    parser.add_argument("--frames", type=int, default=600)
    parser.add_argument("--method", default="hf", choices=["hf", "dft"])
    parser.add_argument("--basis", default="6-31g*")
    parser.add_argument("--xc", default="b3lyp")
    parser.add_argument("--t-min", type=float, default=50.0)
    parser.add_argument("--t-max", type=float, default=1500.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    calc = PySCFDipoleCalculator(args.method, args.basis, args.xc)
    level = f"{args.method.upper()}{'/' + args.xc if args.method == 'dft' else ''}/{args.basis}"

    ref_path = out / "reference.json"
    if ref_path.is_file():
        reference = json.loads(ref_path.read_text())
        minimum = read(out / "minimum.xyz")
    else:
        minimum = molecule("H2O")
        minimum.calc = calc
        BFGS(minimum, logfile=None).run(fmax=1e-5, steps=200)
        minimum.calc = None
        reference = harmonic_reference(minimum, calc)
        reference["level_of_theory"] = level
        write(out / "minimum.xyz", minimum)
        ref_path.write_text(json.dumps(reference, indent=1))
    print(
        f"{level} minimum: frequencies {np.round(reference['frequencies_cm1'], 1)} cm⁻¹, "
        f"IR {np.round(reference['ir_intensities_km_mol'], 1)} km/mol"
    )

    data_path = out / "data.extxyz"
    done = read(data_path, ":") if data_path.is_file() else []
    frames = sample(minimum, reference, args.frames, args.t_min, args.t_max, args.seed)
    start = time.perf_counter()
    for i, atoms in enumerate(frames[len(done) :], start=len(done)):
        atoms.calc = calc
        energy, forces, dipole = atoms.get_potential_energy(), atoms.get_forces(), calc.results["dipole"]
        atoms.calc = None
        atoms.info.update(energy=energy, dipole=dipole, charge=0)
        atoms.arrays["forces"] = forces
        write(data_path.with_suffix(".tmp"), done + [atoms], format="extxyz")
        os.replace(data_path.with_suffix(".tmp"), data_path)  # atomic: a kill loses at most this frame
        done.append(atoms)
        if (i + 1) % 100 == 0:
            print(f"{i + 1} frames labelled ({time.perf_counter() - start:.0f} s)", flush=True)
    print(f"{len(done)} frames in {data_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
