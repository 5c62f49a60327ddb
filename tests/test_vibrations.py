"""Molecular vibrations (issue: properties, item 4 and 6): harmonic frequencies of a nearsight model are the
eigenvalues of its finite-difference Hessian, translations and rotations are the zero modes, IR
intensities are (dμ/dQ)², thermochemistry, the committee spread, and ``nearsight vibrations``."""

from __future__ import annotations

import argparse
import copy
import json
import tempfile

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule
from ase.calculators.calculator import Calculator, all_changes
from ase.io import write
from ase.optimize import BFGS

from aoti_models import _with_statistics
from nearsight import NearsightCalculator
from nearsight.cli.vibrations import add_vibration_parsers
from nearsight.descriptors.acsf import default_acsf_params
from nearsight.models.bpnn import BehlerParrinello
from nearsight.models.io import save_model
from nearsight.properties.vibrations import committee_vibrations, vibrations
from nearsight.training.config import validate_config
from nearsight.training.model_setup import build_model
from structures import water_box

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.filterwarnings("ignore::UserWarning")]

# our own constants (CODATA 2018), not ASE's: ν̃ = √(λ e / (amu Å²)) / (2π c), λ in eV/(Å² amu)
E_CHARGE, AMU, C_CM = 1.602176634e-19, 1.66053906660e-27, 2.99792458e10
DEBYE_E_A = 0.20819434  # 1 D in e·Å
KB_EV, H_EV_CM = 8.617333262e-5, 1.239841984e-4  # k_B (eV/K); hc (eV·cm)


def wavenumbers(eigenvalues: np.ndarray) -> np.ndarray:
    lam = np.asarray(eigenvalues)
    return np.sign(lam) * np.sqrt(np.abs(lam) * E_CHARGE / AMU / 1e-20) / (2 * np.pi * C_CM)


def h2o_model(energy_scale: float = 0.5) -> BehlerParrinello:
    """A random-weight H/O model (seed 9) that has a true minimum near hydrogen peroxide's geometry."""
    torch.manual_seed(9)
    desc = dict(r_cut=4.0, r_cut_angular=3.5, **default_acsf_params(4.0, r_cut_angular=3.5))
    model = _with_statistics(BehlerParrinello([1, 8], desc, hidden=(16, 16)).double(), [water_box(2)])
    model.energy_scale.fill_(energy_scale)
    return model.eval()


def charged_model(kind: str) -> torch.nn.Module:
    """H/O models with learned charges: a long-range one (dipole from the model) or a bare charge head."""
    torch.manual_seed(0)
    if kind == "longrange":
        section = {
            "cutoff": 3.5,
            "n_radial": 4,
            "n_angular_eta": 1,
            "hidden": [8],
            "longrange": {"coulomb": {}},
        }
        model = build_model(validate_config({"data": {"train": "x"}, "model": section})["model"], [1, 8])
        head = model.short.charge_nets
    else:
        desc = {"r_cut": 4.0, "g2_params": [[0.5, 0.0], [0.5, 1.5]], "g4_params": [[0.1, 1.0, 1.0]]}
        model = BehlerParrinello([1, 8], desc, hidden=[8], charges=True)
        head = model.charge_nets
    with torch.no_grad():  # charges of a few tenths of e
        for p in head.parameters():
            p.mul_(3.0)
    return model.double().eval()


class BondsAndCharges(Calculator):
    """Harmonic bonds E = Σ ½ k (|r_ij| − r0_ij)² and fixed charges: dipole Σ q_i r_i (e·Å)."""

    implemented_properties = ["energy", "forces", "charges", "dipole"]

    def __init__(self, bonds: list[tuple[int, int, float, float]], charges: np.ndarray) -> None:
        super().__init__()
        self.bonds, self.q, self.calls = bonds, np.asarray(charges, dtype=float), 0

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        self.calls += 1
        r = self.atoms.positions
        energy, forces = 0.0, np.zeros_like(r)
        for i, j, k, r0 in self.bonds:
            d = r[j] - r[i]
            length = np.linalg.norm(d)
            energy += 0.5 * k * (length - r0) ** 2
            f = k * (length - r0) * d / length
            forces[i] += f
            forces[j] -= f
        self.results = {"energy": energy, "forces": forces, "charges": self.q, "dipole": self.q @ r}

    def hessian(self, positions: np.ndarray) -> np.ndarray:
        """The exact Hessian at a geometry where every bond is at its rest length: k û ûᵀ blocks."""
        n = len(positions)
        h = np.zeros((3 * n, 3 * n))
        for i, j, k, _ in self.bonds:
            u = positions[j] - positions[i]
            block = k * np.outer(u, u) / (u @ u)
            for a, b, s in ((i, i, 1), (j, j, 1), (i, j, -1), (j, i, -1)):
                h[3 * a : 3 * a + 3, 3 * b : 3 * b + 3] += s * block
        return h


def triatomic() -> tuple[Atoms, BondsAndCharges]:
    """A bent XY2 at the rest lengths of its three springs (two bonds and a Urey-Bradley Y-Y term)."""
    atoms = molecule("H2O")
    atoms.set_masses([16.0, 1.008, 2.014])  # no symmetry: three distinct modes
    r = atoms.positions
    bonds = [(0, 1, 45.0, np.linalg.norm(r[1] - r[0])), (0, 2, 40.0, np.linalg.norm(r[2] - r[0])),
             (1, 2, 5.0, np.linalg.norm(r[2] - r[1]))]  # fmt: skip
    return atoms, BondsAndCharges(bonds, [-0.6, 0.35, 0.25])


@pytest.fixture(scope="module")
def relaxed():
    """H2O2 relaxed with the model (BFGS, fmax 1e-4 eV/Å), and the model's vibrations there."""
    atoms = molecule("H2O2")
    atoms.calc = NearsightCalculator(h2o_model())
    assert BFGS(atoms, logfile=None).run(fmax=1e-4, steps=500)
    atoms.calc = None
    return atoms, vibrations(atoms, h2o_model(), fmax=2e-4)


def fd_hessian(atoms: Atoms, calc: Calculator, delta: float = 0.01) -> np.ndarray:
    """Central differences of the forces, symmetrised (eV/Å²)."""
    atoms = atoms.copy()
    atoms.calc = calc
    n = len(atoms)
    h = np.zeros((3 * n, 3 * n))
    for row in range(3 * n):
        f = []
        for sign in (1, -1):
            atoms.positions[row // 3, row % 3] += sign * delta
            f.append(atoms.get_forces().ravel())
            atoms.positions[row // 3, row % 3] -= sign * delta
        h[row] = -(f[0] - f[1]) / (2 * delta)
    return 0.5 * (h + h.T)


def test_frequencies_are_the_eigenvalues_of_the_finite_difference_hessian(relaxed):
    atoms, result = relaxed
    h = fd_hessian(atoms, NearsightCalculator(h2o_model()))
    np.testing.assert_allclose(result.hessian, h, rtol=0, atol=1e-9 * np.abs(h).max())
    m = np.repeat(atoms.get_masses(), 3)
    lam, vec = np.linalg.eigh(h / np.sqrt(np.outer(m, m)))
    nu = wavenumbers(lam)
    high = np.abs(nu) > 100
    assert high.sum() == 6 and nu.min() > -10  # a true minimum: six vibrations, no imaginary one
    np.testing.assert_allclose(result.frequencies_cm[high], nu[high], rtol=0, atol=0.1)
    np.testing.assert_allclose(result.frequencies_cm, nu, rtol=0, atol=0.1)
    # the normal modes are the eigenvectors of the mass-weighted Hessian (up to sign)
    modes = result.normal_modes.reshape(len(nu), -1)
    overlap = np.abs(np.einsum("ki,ik->k", modes[high], vec[:, high]))
    np.testing.assert_allclose(overlap, 1.0, atol=1e-6)
    np.testing.assert_allclose(
        result.mass_weighted_hessian @ modes[high].T, modes[high].T * lam[high], atol=1e-8
    )
    expected_zpe = 0.5 * H_EV_CM * nu[high].sum()
    assert result.zero_point_energy == pytest.approx(expected_zpe, rel=1e-6)


def test_translations_are_zero_modes_and_rigid_body_modes_are_classified(relaxed):
    # anywhere: H·T = 0 for a uniform translation T, up to the O(δ²) error of the differences (rows of
    # the force differences sum to zero exactly, columns only to O(δ²)), which vanishes as δ → 0
    atoms = molecule("H2O2")
    atoms.rattle(0.05, seed=1)
    residual = []
    for delta in (0.01, 0.005):
        h = vibrations(atoms, h2o_model(), delta=delta, check_relaxed=False).hessian
        t = np.tile(np.eye(3), len(atoms)) / np.sqrt(len(atoms))  # [3, 3N] unit translations
        residual.append(np.linalg.norm(h @ t.T, axis=0) / np.linalg.norm(h, 2))
    assert residual[0].max() < 1e-3
    np.testing.assert_allclose(residual[0] / residual[1], 4.0, rtol=0.1)  # ∝ δ²
    # at the minimum: the six lowest |ν| are translations and rotations, at a few cm⁻¹ (a residual
    # force f rotates at ν ≈ √(f r / I)/(2πc) ≈ 5 cm⁻¹ for f = 1e-4 eV/Å, r ~ 1 Å, I ~ 1 amu Å²,
    # plus the O(δ²) difference error); the six vibrations are above 100 cm⁻¹
    _, result = relaxed
    order = np.argsort(np.abs(result.frequencies_cm))
    assert np.abs(result.frequencies_cm[order[:6]]).max() < 10.0
    assert result.rigid_body.sum() == 6 and result.rigid_body[order[:6]].all() and not result.linear
    assert result.rigid_body_weight[result.rigid_body].min() > 0.99
    assert result.rigid_body_weight[~result.rigid_body].max() < 0.01
    assert result.vibrational_frequencies_cm.min() > 100 and result.n_imaginary == 0


def test_a_diatomic_is_linear_with_the_analytic_frequency_intensity_and_thermochemistry():
    k, r0, q, m1, m2 = 30.0, 1.13, 0.3, 12.0, 16.0
    atoms = Atoms("CO", positions=[[0, 0, 0], [0.3, 0.4, r0 * np.sqrt(1 - 0.25 / r0**2)]])
    atoms.set_masses([m1, m2])
    result = vibrations(atoms, BondsAndCharges([(0, 1, k, r0)], [q, -q]), nfree=4)  # O(δ⁴) differences
    mu = m1 * m2 / (m1 + m2)
    assert result.linear and result.rigid_body.sum() == 5
    nu = wavenumbers(np.array([k / mu]))[0]
    np.testing.assert_allclose(result.vibrational_frequencies_cm, [nu], rtol=1e-7)
    assert np.abs(result.rigid_body_frequencies_cm).max() < 0.5  # k δ⁴ / r0⁴-sized difference error
    # one mode: dμ/dQ = q / √μ (e per amu^½), in (D/Å)²/amu
    np.testing.assert_allclose(
        result.ir_intensities[~result.rigid_body], [(q / DEBYE_E_A) ** 2 / mu], rtol=1e-6
    )
    # rigid rotations turn the permanent dipole q r0 about two axes: |dμ/dQ|² = (q r0)² / I = q² / μ each
    # too, translations leave it (neutral molecule); the sum over the rigid-body space is basis-free
    assert result.ir_intensities[result.rigid_body].sum() == pytest.approx(
        2 * (q / DEBYE_E_A) ** 2 / mu, rel=1e-6
    )
    # ideal gas: H − E − ZPE = 5/2 kT (translation + pV) + kT (linear rotor) + ħω/(e^{ħω/kT} − 1)
    temperature = 500.0
    thermo = result.thermochemistry(temperature, symmetry_number=1)
    kt, hw = KB_EV * temperature, H_EV_CM * nu
    expected = 3.5 * kt + hw / np.expm1(hw / kt)
    assert thermo["geometry"] == "linear"
    assert thermo["enthalpy_eV"] - thermo["potential_energy_eV"] - 0.5 * hw == pytest.approx(
        expected, rel=1e-4
    )
    assert thermo["gibbs_energy_eV"] == pytest.approx(
        thermo["enthalpy_eV"] - temperature * thermo["entropy_eV_per_K"]
    )


def test_ir_intensities_of_fixed_point_charges_are_dmu_dq_squared():
    atoms, calc = triatomic()
    result = vibrations(atoms, calc, ir=True, nfree=4)  # O(δ⁴) differences
    m = np.repeat(atoms.get_masses(), 3)
    lam, vec = np.linalg.eigh(calc.hessian(atoms.positions) / np.sqrt(np.outer(m, m)))
    dmu_dx = np.kron(calc.q, np.eye(3))  # [3, 3N]: μ = Σ q_i r_i is linear
    intensity = ((dmu_dx @ (vec / np.sqrt(m)[:, None])) ** 2).sum(0) / DEBYE_E_A**2  # [3N]
    vib = ~result.rigid_body
    assert vib.sum() == 3 and not result.linear
    np.testing.assert_allclose(result.vibrational_frequencies_cm, wavenumbers(lam[-3:]), rtol=1e-6)
    np.testing.assert_allclose(result.ir_intensities[vib], intensity[-3:], rtol=1e-6)
    np.testing.assert_allclose(result.ir_intensities_km_mol[vib], 42.255 * intensity[-3:], rtol=1e-6)


@pytest.mark.parametrize("kind", ["longrange", "head"])
def test_ir_intensities_of_a_model_with_charges(kind):
    """Finite, non-negative, and |∂μ/∂Q|² with μ from the model's dipole (or Σ q_i r_i of its charges)."""
    atoms = molecule("H2O")
    atoms.rattle(0.03, seed=2)
    model = charged_model(kind)
    result = vibrations(atoms, model, ir=True, check_relaxed=False)
    intensities = result.ir_intensities
    assert np.all(np.isfinite(intensities)) and intensities.min() >= 0 and intensities.max() > 1e-3
    probe = atoms.copy()
    probe.calc = NearsightCalculator(model)
    dmu = np.zeros((3, 3 * len(atoms)))
    for row in range(3 * len(atoms)):
        mu = []
        for sign in (1, -1):
            probe.positions[row // 3, row % 3] += sign * 0.01
            q = probe.get_charges()
            mu.append(probe.get_dipole_moment() if kind == "longrange" else q @ probe.positions)
            probe.positions[row // 3, row % 3] -= sign * 0.01
        dmu[:, row] = (mu[0] - mu[1]) / 0.02
    modes = result.cartesian_modes.reshape(len(intensities), -1)  # [3N modes, 3N]
    expected = ((dmu @ modes.T) ** 2).sum(0) / DEBYE_E_A**2
    np.testing.assert_allclose(intensities, expected, rtol=1e-5, atol=1e-9 * expected.max())


def test_a_model_without_charges_has_no_ir_and_says_why(relaxed):
    atoms, result = relaxed
    assert result.ir_intensities is None and "ir_intensities_km_mol" not in result.summary()
    with pytest.raises(ValueError, match=r"charge head.*--no-ir"):
        vibrations(atoms, h2o_model(), ir=True, fmax=2e-4)


def test_refuses_crystals_and_unrelaxed_structures(relaxed):
    atoms, _ = relaxed
    with pytest.raises(ValueError, match="nearsight phonons"):
        vibrations(water_box(1), h2o_model())
    shifted = atoms.copy()
    shifted.positions[0, 0] += 0.05
    with pytest.raises(ValueError, match="is not relaxed for harmonic vibrations"):
        vibrations(shifted, h2o_model())


def test_cache_directory_is_temporary_unless_given_and_then_reused(tmp_path, monkeypatch):
    atoms, calc = triatomic()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    first = vibrations(atoms, calc)
    assert not any((tmp_path / "tmp").iterdir())  # the temporary cache is gone
    calls = calc.calls
    vibrations(atoms, calc, cache_dir=tmp_path / "cache")
    assert calc.calls - calls == 1 + 6 * len(atoms)  # the dipole probe, then ±δ of each coordinate
    calls = calc.calls
    again = vibrations(atoms, calc, cache_dir=tmp_path / "cache")
    assert calc.calls - calls <= 2  # the displaced forces were read from the cache
    np.testing.assert_array_equal(again.frequencies_cm, first.frequencies_cm)
    moved = atoms.copy()
    moved.positions[1, 0] += 1e-3
    with pytest.raises(ValueError, match="another structure"):
        vibrations(moved, calc, cache_dir=tmp_path / "cache", check_relaxed=False)


def test_committee_spread(relaxed):
    atoms, result = relaxed
    # a second member with 1.1 × the energy has the same minimum and √1.1 × the frequencies
    pair = committee_vibrations(atoms, [h2o_model(), h2o_model(0.55)], fmax=2e-4)
    nu = result.vibrational_frequencies_cm
    mean, std = pair.frequencies_cm
    np.testing.assert_allclose(mean, nu * (1 + np.sqrt(1.1)) / 2, rtol=1e-6)
    np.testing.assert_allclose(std, nu * (np.sqrt(1.1) - 1) / 2, rtol=1e-5)
    same = committee_vibrations(atoms, [h2o_model(), h2o_model()], fmax=2e-4)
    assert np.all(same.frequencies_cm[1] == 0) and same.spread["zero_point_energy_eV"]["std"] == 0
    # intensities: charges q and 1.2 q give 1 and 1.44 × (dμ/dQ)²
    mol, calc = triatomic()
    scaled = copy.deepcopy(calc)
    scaled.q = 1.2 * calc.q
    ir = committee_vibrations(mol, [calc, scaled]).ir_intensities_km_mol
    single = vibrations(mol, calc).ir_intensities_km_mol[-3:]
    np.testing.assert_allclose(ir[0], single * 1.22, rtol=1e-6)
    np.testing.assert_allclose(ir[1], single * 0.22, rtol=1e-6)
    thermo = pair.thermochemistry(temperature_K=300.0, symmetry_number=2)
    assert thermo["gibbs_energy_eV"]["std"] > 0 and "geometry" not in thermo


def test_cli_writes_json_plot_and_table(relaxed, tmp_path, capsys):
    atoms, result = relaxed
    write(tmp_path / "h2o2.xyz", atoms)
    paths = [tmp_path / "a.pt", tmp_path / "b.pt"]
    save_model(h2o_model(), paths[0])
    save_model(h2o_model(0.55), paths[1])
    parser = argparse.ArgumentParser()
    add_vibration_parsers(parser.add_subparsers(dest="command", required=True))
    out = tmp_path / "out"
    args = parser.parse_args(["vibrations", str(tmp_path / "h2o2.xyz"), *map(str, paths), "--fmax", "2e-4",
                              "--symmetry-number", "2", "--output-dir", str(out)])  # fmt: skip
    assert args.func(args) == 0
    report = json.loads((out / "vibrations.json").read_text())
    nu = np.array([m["frequency_cm"] for m in report["vibrations"]])
    std = np.array([m["frequency_cm_std"] for m in report["vibrations"]])
    np.testing.assert_allclose(nu, result.vibrational_frequencies_cm * (1 + np.sqrt(1.1)) / 2, rtol=1e-6)
    assert np.all(std > 0) and report["thermochemistry"]["enthalpy_eV"]["std"] > 0
    assert report["ir_intensities"].startswith("not available")
    assert (out / "vibrations.png").stat().st_size > 1000
    text = capsys.readouterr().out
    assert "zero-point energy" in text and "G =" in text and f"{nu[0]:9.2f}" in text
    bad = parser.parse_args(["vibrations", str(tmp_path / "h2o2.xyz"), str(paths[0]), "--fmax", "1e-9"])
    with pytest.raises(ValueError, match="not relaxed"):
        bad.func(bad)
