"""Collective variables and bias forces against central finite differences (periodic and not)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.calculator import PropertyNotImplementedError
from ase.calculators.emt import EMT

from nearsight.sampling import (
    Angle,
    BiasedCalculator,
    CoordinationNumber,
    Dihedral,
    Distance,
    HarmonicBias,
    Position,
    WellTemperedMetadynamics,
    cv_from_dict,
)
from nearsight.sampling.colvars import wrap_periodic

H = 1e-5  # Å, central differences: error O(h²) ~ 1e-10 of the curvature


def molecule() -> Atoms:
    """Six atoms, no symmetry, no cell."""
    rng = np.random.default_rng(3)
    pos = np.array(
        [[0, 0, 0], [1.1, 0.1, 0], [1.6, 1.0, 0.2], [2.7, 1.1, 0.9], [0.2, -1.0, 0.6], [-0.8, 0.4, -0.5]]
    )
    return Atoms("CCCCHH", positions=pos + 0.05 * rng.normal(size=pos.shape))


def periodic() -> Atoms:
    """A triclinic cell with bonds across its faces: minimum-image vectors differ from R_j - R_i."""
    cell = np.array([[4.0, 0.0, 0.0], [1.0, 3.6, 0.0], [0.5, 0.7, 3.8]])
    frac = np.array(
        [[0.02, 0.05, 0.03], [0.93, 0.08, 0.02], [0.9, 0.95, 0.1], [0.05, 0.9, 0.92], [0.5, 0.5, 0.5]]
    )
    return Atoms("CuCuCuCuCu", scaled_positions=frac, cell=cell, pbc=True)


CVS = [
    Distance(0, 1),
    Angle(0, 1, 2),
    Dihedral(0, 1, 2, 3),
    CoordinationNumber([0, 1], [1, 2, 3], r0=1.5),
    Position(2, "y"),
    Position(1, (0.5, -0.8, 0.3)),
]


def numerical_gradient(f, atoms: Atoms, period: float | None = None) -> np.ndarray:
    grad = np.zeros((len(atoms), 3))
    for i in range(len(atoms)):
        for c in range(3):
            plus, minus = atoms.copy(), atoms.copy()
            plus.positions[i, c] += H
            minus.positions[i, c] -= H
            grad[i, c] = wrap_periodic(f(plus) - f(minus), period) / (2 * H)
    return grad


@pytest.mark.parametrize("make", [molecule, periodic], ids=["molecule", "periodic"])
@pytest.mark.parametrize("cv", CVS, ids=lambda cv: type(cv).__name__)
def test_cv_gradient_is_the_finite_difference(cv, make):
    atoms = make()
    value = cv.evaluate(atoms)
    np.testing.assert_allclose(value.gradient, numerical_gradient(cv, atoms, cv.period), atol=2e-8, rtol=1e-6)
    assert np.any(value.gradient != 0)


def test_minimum_image_is_used_in_periodic_cells():
    atoms = periodic()
    raw = np.linalg.norm(atoms.positions[1] - atoms.positions[0])
    assert Distance(0, 1)(atoms) < 1.0 < raw  # across the face, not through the cell


def strained(atoms: Atoms, eps: np.ndarray) -> Atoms:
    out = atoms.copy()
    deformation = np.eye(3) + eps
    out.set_cell(atoms.cell.array @ deformation.T, scale_atoms=False)
    out.positions = atoms.positions @ deformation.T
    return out


@pytest.mark.parametrize("cv", CVS[:4], ids=lambda cv: type(cv).__name__)
def test_strain_derivative_is_the_finite_difference(cv):
    atoms = periodic()
    expected = np.zeros((3, 3))
    for a in range(3):
        for b in range(3):
            eps = np.zeros((3, 3))
            eps[a, b] = H
            diff = cv(strained(atoms, eps)) - cv(strained(atoms, -eps))
            expected[a, b] = wrap_periodic(diff, cv.period) / (2 * H)
    np.testing.assert_allclose(cv.evaluate(atoms).strain_derivative, expected, atol=2e-8, rtol=1e-6)


def test_coordination_number_is_smooth_through_r0():
    cn = CoordinationNumber([0], [1], r0=1.5, n=6, m=12)
    r = 1.5 + np.array([-3e-6, -1e-7, 0.0, 1e-7, 1.4e-6, 1.6e-6, 3e-6])  # both sides of the 1e-6 switch
    f, df = cn.switching(r)
    slope = 6 * (6 - 12) / (2 * 12) / 1.5  # n (n - m) / (2 m r0)
    np.testing.assert_allclose(f, 0.5 + slope * (r - 1.5), atol=1e-10)
    np.testing.assert_allclose(df, slope, rtol=1e-4)
    atoms = Atoms("HH", positions=[[0, 0, 0], [1.5, 0, 0]])
    np.testing.assert_allclose(cn.evaluate(atoms).gradient, numerical_gradient(cn, atoms), atol=1e-8)


def dihedral_near_pi(sign: float) -> Atoms:
    """Four atoms with φ = sign · (π - 0.002)."""
    phi = sign * (math.pi - 0.002)
    pos = [[1.0, 1.0, 0.0], [1.0, 0.0, 0.0], [2.0, 0.0, 0.0], [2.0, math.cos(phi), math.sin(phi)]]
    return Atoms("CCCC", positions=pos)


def total_energy(atoms: Atoms) -> float:
    return atoms.get_potential_energy()


@pytest.mark.parametrize("sign", [1.0, -1.0])
@pytest.mark.parametrize("centre", [math.pi, -math.pi + 0.001, 3.0])
def test_dihedral_bias_is_continuous_across_pi(sign, centre):
    atoms = dihedral_near_pi(sign)
    dihedral = Dihedral(0, 1, 2, 3)
    assert abs(dihedral(atoms)) == pytest.approx(math.pi - 0.002, abs=1e-9)
    bias = HarmonicBias(dihedral, centre, k=2.0)
    atoms.calc = BiasedCalculator(EMT(), bias)
    delta = wrap_periodic(dihedral(atoms) - centre, 2 * math.pi)
    assert atoms.calc.get_property("bias_energy", atoms) == pytest.approx(0.5 * 2.0 * delta**2)
    assert abs(delta) < 0.2  # the short way round, not ~2π

    def energy(a: Atoms) -> float:
        a.calc = BiasedCalculator(EMT(), bias)
        return a.get_potential_energy()

    np.testing.assert_allclose(atoms.get_forces(), -numerical_gradient(energy, atoms), atol=1e-7)


def emt_copper() -> Atoms:
    rng = np.random.default_rng(0)
    frac = [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]
    atoms = Atoms("Cu4", scaled_positions=frac, cell=np.eye(3) * 3.6, pbc=True)
    atoms.positions += 0.08 * rng.normal(size=(4, 3))
    return atoms


def metad_bias() -> WellTemperedMetadynamics:
    """Hills on (angle, dihedral) near the structure's values: large, varied gradients."""
    atoms = emt_copper()
    cvs = [Angle(0, 1, 2), Dihedral(0, 1, 2, 3)]
    bias = WellTemperedMetadynamics(
        cvs, height=0.05, sigma=[0.1, 0.2], bias_factor=10, temperature_K=300, pace=1
    )
    s = np.array([cv(atoms) for cv in cvs])
    bias.deposit(s + np.array([[0.05, -0.1], [-0.08, 0.15], [0.02, 0.3]]))
    return bias


BIASES = {
    "harmonic-distance": lambda: HarmonicBias(Distance(0, 1), 2.0, k=3.0),
    "harmonic-coordination": lambda: HarmonicBias(CoordinationNumber([0], [1, 2, 3], r0=2.4), 1.0, k=1.0),
    "metad-angle-dihedral": metad_bias,
}


@pytest.mark.parametrize("name", BIASES)
def test_biased_forces_and_stress_are_finite_differences(name):
    atoms = emt_copper()
    atoms.calc = BiasedCalculator(EMT(), BIASES[name]())
    assert atoms.calc.get_property("bias_energy", atoms) > 1e-4

    def energy(a: Atoms) -> float:
        a.calc = BiasedCalculator(EMT(), atoms.calc.bias)
        return a.get_potential_energy()

    np.testing.assert_allclose(atoms.get_forces(), -numerical_gradient(energy, atoms), atol=1e-7)
    stress = np.zeros((3, 3))
    for a in range(3):
        for b in range(a, 3):
            eps = np.zeros((3, 3))
            eps[a, b] = eps[b, a] = H / (2 if a != b else 1)
            stress[a, b] = stress[b, a] = (energy(strained(atoms, eps)) - energy(strained(atoms, -eps))) / (
                2 * H
            )
    stress /= atoms.get_volume()
    np.testing.assert_allclose(atoms.get_stress(voigt=False), stress, atol=1e-8)
    bare = emt_copper()
    bare.calc = EMT()
    assert not np.allclose(atoms.get_stress(), bare.get_stress(), atol=1e-6)  # the bias contributes


def test_position_bias_gives_forces_but_refuses_stress():
    atoms = emt_copper()
    atoms.calc = BiasedCalculator(EMT(), HarmonicBias(Position(0, "x"), 0.5, k=1.0))
    assert atoms.get_forces().shape == (4, 3)
    with pytest.raises(PropertyNotImplementedError, match="not a function of relative vectors"):
        atoms.get_stress()


def test_bias_on_an_atom_that_does_not_exist_is_named():
    atoms = Atoms("H3", positions=[[0, 0, 0], [1, 0, 0], [0, 1, 0]])
    with pytest.raises(ValueError, match=r"atom index 10 does not exist in a structure of 3 atoms"):
        Distance(0, 10).evaluate(atoms)
    atoms.calc = BiasedCalculator(EMT(), HarmonicBias(Angle(0, 10, 1), 1.0, k=1.0))
    with pytest.raises(
        ValueError, match=r"Angle\(atoms=\[0, 10, 1\]\): atom index 10 does not exist .* 3 atoms"
    ):
        atoms.get_potential_energy()
    walkers = [Position(i) for i in range(1, 12)]
    atoms.calc = BiasedCalculator(EMT(), HarmonicBias(Position(0), 0.0, k=1.0, walkers=walkers))
    with pytest.raises(ValueError, match=r"atom index 11 does not exist in a structure of 3 atoms"):
        atoms.get_forces()


def test_cv_specs_round_trip_and_name_bad_keys():
    for cv in CVS:
        again = cv_from_dict(cv.to_dict())
        assert type(again) is type(cv) and again.to_dict() == cv.to_dict()
    with pytest.raises(ValueError, match="cfg.yaml: cv: unknown key 'atom' for type 'distance'"):
        cv_from_dict({"type": "distance", "atom": [0, 1]}, "cfg.yaml: cv")
    with pytest.raises(ValueError, match="type 'torsion' is not one of"):
        cv_from_dict({"type": "torsion", "atoms": [0, 1, 2, 3]})
    with pytest.raises(ValueError, match="must be a list of 3 indices"):
        cv_from_dict({"type": "angle", "atoms": [0, 1]})
    with pytest.raises(ValueError, match="the two atoms must differ"):
        Distance(2, 2)
