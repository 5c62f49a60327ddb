"""Spectra from MD (issue: properties, item 5): the VDOS of a crystal at low temperature has the moments of
its phonon DOS, a single oscillator peaks at its frequency, the FFT correlations do not wrap, the
normalisation holds, IR band areas are the harmonic (dμ/dQ)², quantum corrections, ``nearsight spectrum``."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
from ase import Atoms, units
from ase.build import bulk
from ase.calculators.calculator import Calculator, all_changes
from ase.io import Trajectory, read, write
from ase.md.verlet import VelocityVerlet
from ase.neighborlist import neighbor_list
from scipy.integrate import trapezoid

from nearsight.cli.vibrations import add_vibration_parsers
from nearsight.properties.spectra import (
    autocorrelation,
    ir_spectrum,
    quantum_correction_factor,
    spectrum_from_trajectory,
    vibrational_dos,
)
from nearsight.properties.vibrations import vibrations

# our own constants: ν̃ (cm⁻¹) per √(eV/(Å² amu)), hc (eV·cm), k_B (eV/K), c (cm/fs)
CM_PER_OMEGA = np.sqrt(1.602176634e-19 / 1.66053906660e-27 / 1e-20) / (2 * np.pi * 2.99792458e10)
H_EV_CM, KB_EV, C_CM_FS = 1.239841984e-4, 8.617333262e-5, 2.99792458e-5


def spring_hessian(n_atoms: int, springs: list[tuple[int, int, float, np.ndarray]]) -> np.ndarray:
    """Σ k û ûᵀ blocks of central springs (i, j, k, r_j − r_i) at their rest lengths (eV/Å²)."""
    h = np.zeros((3 * n_atoms, 3 * n_atoms))
    for i, j, k, u in springs:
        block = k * np.outer(u, u) / (u @ u)
        for p, q, s in ((i, i, 1), (j, j, 1), (i, j, -1), (j, i, -1)):
            h[3 * p : 3 * p + 3, 3 * q : 3 * q + 3] += s * block
    return h


class LinearHarmonic(Calculator):
    """E = ½ uᵀ K u with u = r − r_eq, fixed charges q: the dipole Σ q_i r_i (e·Å) is linear too."""

    implemented_properties = ["energy", "forces", "charges", "dipole"]

    def __init__(self, k: np.ndarray, positions: np.ndarray, charges: np.ndarray) -> None:
        super().__init__()
        self.k, self.eq, self.q = k, positions.copy(), np.asarray(charges, dtype=float)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        u = (self.atoms.positions - self.eq).ravel()
        self.results = {"energy": 0.5 * u @ self.k @ u, "forces": -(self.k @ u).reshape(-1, 3),
                        "charges": self.q, "dipole": self.q @ self.atoms.positions}  # fmt: skip


def thermalised_md(atoms, calc, hessian, temperature_K, timestep_fs, steps, seed=0, trajectory=None):
    """NVE (velocity Verlet) from normal-mode amplitudes with energy k_B T each (equipartition, random
    phases; zero modes at rest). Velocities [steps + 1, N, 3] (ASE units), dipoles [steps + 1, 3] (if
    the calculator gives them) and the exact angular frequencies of the moving modes."""
    atoms = atoms.copy()
    w = np.repeat(atoms.get_masses() ** -0.5, 3)
    omega2, vectors = np.linalg.eigh(w[:, None] * hessian * w[None, :])
    omega = np.sqrt(np.clip(omega2, 0, None))
    live = omega2 > 1e-8 * omega2.max()
    amplitude = np.where(live, np.sqrt(2 * units.kB * temperature_K / np.where(live, omega2, 1)), 0)
    phase = np.random.default_rng(seed).uniform(0, 2 * np.pi, len(omega))
    atoms.positions += (w * (vectors @ (amplitude * np.cos(phase)))).reshape(-1, 3)
    atoms.set_velocities((w * (vectors @ (-amplitude * omega * np.sin(phase)))).reshape(-1, 3))
    atoms.calc = calc
    dyn = VelocityVerlet(atoms, timestep=timestep_fs * units.fs)
    velocities, dipoles = [], []

    def record() -> None:
        velocities.append(atoms.get_velocities())
        if "dipole" in calc.implemented_properties:
            dipoles.append(atoms.get_dipole_moment())

    dyn.attach(record, interval=1)
    traj = None if trajectory is None else Trajectory(str(trajectory), "w", atoms)
    if traj is not None:

        def write() -> None:
            atoms.info["time_fs"] = dyn.get_time() / units.fs
            traj.write(atoms)

        dyn.attach(write, interval=2)
    dyn.run(steps)
    if traj is not None:
        traj.close()
    return np.array(velocities), np.array(dipoles), omega[live]


@pytest.fixture(scope="module")
def polar_molecule(tmp_path_factory):
    """Linear O=C=O on linear springs (stretches along the axis and a bend) with fixed charges
    (C +0.6 e, O −0.3 e): its harmonic analysis, and 1.5 ps of NVE (0.5 fs steps) at 300 K with the
    trajectory written every 2 steps. The dipole derivatives of its modes are mutually orthogonal
    (bends along x and y, the antisymmetric stretch along z, the symmetric one zero), so the dipole
    correlation has no cross terms between modes."""
    atoms = Atoms("OCO", positions=[[0, 0, -1.16], [0, 0, 0], [0, 0, 1.16]])
    z = np.array([0.0, 0.0, 1.0])
    hessian = spring_hessian(3, [(0, 1, 100.0, z), (1, 2, 100.0, z)])
    bend = np.array([-0.5, 1.0, -0.5])  # s = u_C − (u_O + u_O')/2, perpendicular to the axis
    for axis in (0, 1):
        hessian[axis::3, axis::3] += 3.0 * np.outer(bend, bend)
    calc = LinearHarmonic(hessian, atoms.positions, [-0.3, 0.6, -0.3])
    harmonic = vibrations(atoms, calc)
    path = tmp_path_factory.mktemp("md") / "co2.traj"
    v, dipoles, omega = thermalised_md(atoms, calc, hessian, 300.0, 0.5, 3000, seed=1, trajectory=path)
    return harmonic, v, dipoles, omega * CM_PER_OMEGA, atoms.get_masses(), path


def test_vdos_moments_of_a_harmonic_crystal_equal_its_phonon_dos():
    """Cu3Au-ordered fcc (2×2×2 cubic cells, 32 atoms, masses 63.5 and 197 amu) on nearest-neighbour
    springs, NVE from 10 K normal-mode amplitudes: the first two moments of the VDOS are those of the
    phonon DOS (each of the 3N − 3 moving modes weighted equally) within 2 %; the VDOS integrates to 3N,
    and in absolute units to 2⟨E_kin⟩/(k_B T) = 3N − 3 (the centre of mass is at rest)."""
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    masses = atoms.get_masses()
    masses[::4] = 196.97
    atoms.set_masses(masses)
    i, j, d = neighbor_list("ijD", atoms, 3.0)
    assert len(i) == 12 * len(atoms)
    hessian = spring_hessian(len(atoms), [(a, b, 2.5, u) for a, b, u in zip(i, j, d, strict=True) if a < b])
    calc = LinearHarmonic(hessian, atoms.positions, np.zeros(len(atoms)))
    v, _, omega = thermalised_md(atoms, calc, hessian, 10.0, 4.0, 3000)
    nu = omega * CM_PER_OMEGA  # [3N − 3] cm⁻¹, the exact phonon frequencies of this cell
    assert len(nu) == 3 * len(atoms) - 3 and np.ptp(nu) > 0.5 * nu.max()
    vdos = vibrational_dos(v, 4.0, masses, max_lag=750)
    assert vdos.moment(1) == pytest.approx(nu.mean(), rel=0.02)
    assert vdos.moment(2) == pytest.approx((nu**2).mean(), rel=0.02)
    assert vdos.integral() == pytest.approx(3 * len(atoms), rel=1e-10)
    absolute = vibrational_dos(v, 4.0, masses, max_lag=750, temperature_K=10.0)
    assert absolute.integral() == pytest.approx(3 * len(atoms) - 3, rel=0.02)
    assert absolute.frequency_THz[-1] == pytest.approx(1e3 / (2 * 4.0))  # Nyquist 1/(2Δt)


def test_single_oscillator_peaks_at_its_frequency_within_the_resolution():
    nu0, dt, n = 1234.5, 0.5, 4000
    omega = 2 * np.pi * nu0 * C_CM_FS  # rad/fs
    t = np.arange(n) * dt
    phases = np.array([0.3, 1.9, 4.0])
    v = np.cos(omega * t[:, None] + phases[None, :])[:, None, :]  # [T, 1, 3]
    for window in ("hann", None):
        vdos = vibrational_dos(v, dt, window=window, max_lag=1000)
        assert abs(vdos.peak_cm() - nu0) < 0.5 * vdos.resolution_cm
        assert vdos.integral() == pytest.approx(3.0, rel=1e-10)
    # the Hann lag window's line: full width at half maximum ≈ 1.44 × 1/(2LΔt)
    vdos = vibrational_dos(v, dt, max_lag=1000)
    above = vdos.frequency_cm[vdos.intensity > 0.5 * vdos.intensity.max()]
    assert 1.2 < (above.max() - above.min()) / vdos.resolution_cm < 1.8


def test_autocorrelation_is_linear_not_circular():
    x = np.random.default_rng(0).normal(size=(50, 4, 3))
    direct = [np.mean([np.sum(x[t] * x[t + tau]) for t in range(50 - tau)]) for tau in range(50)]
    np.testing.assert_allclose(autocorrelation(x), direct, rtol=1e-10)
    np.testing.assert_allclose(autocorrelation(x, max_lag=10), direct[:11], rtol=1e-10)
    with pytest.raises(ValueError, match="max_lag"):
        autocorrelation(x, max_lag=50)


def test_quantum_correction_factors_tend_to_one_in_the_classical_limit():
    nu = np.array([0.0, 1.0, 100.0, 3000.0])
    for kind in ("harmonic", "none", "schofield", "standard"):
        q = quantum_correction_factor(nu, 1e7, kind)  # ħω/kT ≤ 4e-4
        np.testing.assert_allclose(q, 1.0, atol=3e-4)
        assert quantum_correction_factor(np.array([0.0]), 300.0, kind)[0] == 1.0
    x = H_EV_CM * 1000.0 / (KB_EV * 300.0)
    harmonic = quantum_correction_factor(np.array([1000.0]), 300.0)[0]
    assert harmonic == pytest.approx(x / (1 - np.exp(-x)), rel=1e-6) and harmonic > 4.0
    with pytest.raises(ValueError, match="quantum_correction"):
        quantum_correction_factor(nu, 300.0, "kubo")


def test_ir_band_areas_are_the_harmonic_intensities(polar_molecule):
    """With the harmonic correction α n ∝ ω² FT⟨M M⟩, and at equipartition (⟨Q_k²⟩ = kT/ω_k²) each band's
    area is ∝ |∂μ/∂Q_k|²: the IR intensities of the harmonic analysis (zero for the symmetric stretch)."""
    harmonic, _, dipoles, _, _, _ = polar_molecule
    assert harmonic.linear and harmonic.rigid_body.sum() == 5
    nu_all, intensity_all = harmonic.vibrational_frequencies_cm, harmonic.ir_intensities[~harmonic.rigid_body]
    nu = np.unique(nu_all.round(3))  # the bend (twice), the symmetric and the antisymmetric stretch
    expected = np.array([intensity_all[np.abs(nu_all - f) < 1e-3].sum() for f in nu])
    assert len(nu) == 3 and expected[1] < 1e-8 * expected.max()
    ir = ir_spectrum(dipoles, 0.5, max_lag=1500)
    assert ir.integral() == pytest.approx(1.0, rel=1e-10)
    edges = np.concatenate([[0.0], 0.5 * (nu[1:] + nu[:-1]), [ir.frequency_cm[-1]]])
    areas = []
    for k in range(3):
        band = (ir.frequency_cm >= edges[k]) & (ir.frequency_cm < edges[k + 1])
        areas.append(trapezoid(ir.intensity[band], ir.frequency_cm[band]))
        if (
            expected[k] > 1e-6 * expected.max()
        ):  # the peak, within the resolution (velocity Verlet shifts ω by (ωΔt)²/24)
            assert abs(ir.frequency_cm[band][np.argmax(ir.intensity[band])] - nu[k]) < ir.resolution_cm
    np.testing.assert_allclose(areas, expected / expected.sum(), rtol=0.02, atol=1e-3)
    # the temperature cancels in the harmonic correction; other corrections weigh bands by (1 − e^{−x})/x
    np.testing.assert_allclose(
        ir_spectrum(dipoles, 0.5, 300.0, max_lag=1500).intensity, ir.intensity, rtol=1e-9
    )
    none = ir_spectrum(dipoles, 0.5, 300.0, max_lag=1500, quantum_correction="none")
    x = ir.frequency_cm * H_EV_CM / (KB_EV * 300.0)
    strong = ir.intensity > 0.01 * ir.intensity.max()
    ratio = none.intensity[strong] / ir.intensity[strong] / (-np.expm1(-x[strong]) / x[strong])
    np.testing.assert_allclose(ratio, ratio[0], rtol=1e-5)  # (CODATA 2018 here, ASE: 2014)
    for kind in ("none", "schofield", "standard"):  # the classical limit
        hot = ir_spectrum(dipoles, 0.5, 1e7, max_lag=1500, quantum_correction=kind).intensity
        np.testing.assert_allclose(hot, ir.intensity, atol=1e-3 * ir.intensity.max())


def test_trajectory_files_and_the_cli(polar_molecule, tmp_path, capsys):
    harmonic, v, dipoles, nu, masses, path = polar_molecule
    vdos = spectrum_from_trajectory(path, "vdos")  # the time between frames from info["time_fs"]
    assert vdos.timestep_fs == pytest.approx(1.0) and vdos.n_frames == 1501
    direct = vibrational_dos(v[::2], 1.0, masses)
    np.testing.assert_allclose(
        vdos.intensity, direct.intensity, rtol=1e-8, atol=1e-12 * direct.intensity.max()
    )
    # equipartition: each of the four vibrations (the bend twice) carries the same VDOS weight
    assert vdos.moment(1) == pytest.approx(nu.mean(), rel=0.02)
    parser = argparse.ArgumentParser()
    add_vibration_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["spectrum", str(path), "--kind", "ir", "--output-dir", str(tmp_path)])
    assert args.func(args) == 0
    table = np.loadtxt(tmp_path / "spectrum.csv", delimiter=",")
    ir = ir_spectrum(dipoles[::2], 1.0)
    np.testing.assert_allclose(table[:, 0], ir.frequency_cm, rtol=1e-7)
    np.testing.assert_allclose(table[:, 2], ir.intensity, rtol=1e-6, atol=1e-9 * ir.intensity.max())
    assert (tmp_path / "spectrum.png").stat().st_size > 1000
    assert "resolution" in capsys.readouterr().out
    args = parser.parse_args(["spectrum", str(path), "--timestep-fs", "1", "--window", "none", "--max-lag", "500",
                              "--output-dir", str(tmp_path / "vdos")])  # fmt: skip
    assert args.func(args) == 0 and "<nu> =" in capsys.readouterr().out
    table = np.loadtxt(tmp_path / "vdos" / "spectrum.csv", delimiter=",")
    assert trapezoid(table[:, 2], table[:, 0]) == pytest.approx(9.0, rel=1e-6)  # 3N
    bare = tmp_path / "bare.xyz"  # no time, no dipoles
    frames = read(path, ":100")
    for atoms in frames:
        atoms.info, atoms.calc = {}, None
    write(bare, frames)
    with pytest.raises(ValueError, match="timestep_fs"):
        spectrum_from_trajectory(bare, "vdos")
    with pytest.raises(ValueError, match="charge head"):
        spectrum_from_trajectory(bare, "ir", timestep_fs=1.0)


def test_md_trajectories_record_their_time(tmp_path):
    """``run_md`` writes each frame's time (info["time_fs"]), so a spectrum needs no --timestep-fs."""
    from ase.calculators.emt import EMT

    from nearsight.simulate.md import run_md

    path = tmp_path / "md.traj"
    run_md(bulk("Cu", cubic=True).repeat(2), EMT(), steps=40, timestep_fs=2.0, trajectory=path, interval=4)
    frames = read(path, ":")
    assert [f.info["time_fs"] for f in frames] == pytest.approx([8.0 * i for i in range(len(frames))])
    assert spectrum_from_trajectory(path, "vdos").timestep_fs == pytest.approx(8.0)
