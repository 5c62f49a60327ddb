"""ACSF against DScribe (the oracle): values, derivatives, feature order and argument checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

dscribe = pytest.importorskip("dscribe")

import ase.io  # noqa: E402
from ase import Atoms  # noqa: E402
from ase.build import bulk, molecule  # noqa: E402
from dscribe.descriptors import ACSF as DScribeACSF  # noqa: E402

from nearsight.descriptors import ACSF  # noqa: E402

ETHANOL = Path(__file__).resolve().parents[1] / "examples" / "data" / "ethanol_test200.xyz"

# Every DScribe family: 3 G2, 2 G3, 4 G4 (λ = ±1, ζ = 1, 2, 4), 2 G5.
PARAMS = {
    "g2_params": [(1.0, 0.0), (0.5, 1.5), (2.0, 3.0)],
    "g3_params": [1.0, 2.3],
    "g4_params": [(0.01, 1.0, 1.0), (0.05, 2.0, -1.0), (0.1, 4.0, 1.0), (0.02, 1.0, -1.0)],
    "g5_params": [(0.02, 2.0, 1.0), (0.005, 4.0, -1.0)],
}


def ethanol() -> Atoms:
    return ase.io.read(ETHANOL, index=0)


def water_box(n_side: int = 4, density: float = 1.0, seed: int = 7) -> Atoms:
    """``n_side³`` randomly oriented H2O on a jittered cubic grid at ``density`` g/cm³."""
    rng = np.random.default_rng(seed)
    n = n_side**3
    a = (n * 18.015 / (0.602214076 * density)) ** (1 / 3)  # Å
    template = molecule("H2O")
    template.positions -= template.positions[0]  # O at the origin
    spacing = a / n_side
    for _ in range(20):
        positions = []
        for ijk in np.ndindex(n_side, n_side, n_side):
            q, r = np.linalg.qr(rng.normal(size=(3, 3)))
            rot = q * np.sign(np.diag(r))
            if np.linalg.det(rot) < 0:
                rot[:, 0] *= -1
            centre = (np.array(ijk) + 0.5) * spacing + rng.uniform(-0.15, 0.15, 3)
            positions.append(template.positions @ rot.T + centre)
        atoms = Atoms("OH2" * n, positions=np.concatenate(positions), cell=[a, a, a], pbc=True)
        d = atoms.get_all_distances(mic=True)
        molecule_id = np.arange(3 * n) // 3
        d[molecule_id[:, None] == molecule_id[None, :]] = np.inf
        if d.min() >= 0.9:
            atoms.wrap()
            return atoms
    raise RuntimeError("could not place the water molecules")  # pragma: no cover


def silicon() -> Atoms:
    """Primitive 2-atom diamond Si (cell heights ≈ 3.1 Å, far below 2 r_c = 12 Å), rattled."""
    atoms = bulk("Si", "diamond", a=5.43)
    atoms.rattle(0.05, seed=3)
    atoms.wrap()
    return atoms


def triclinic_three_species(seed: int = 11) -> Atoms:
    """A small random triclinic cell with Si, C and O (pins the element-pair order)."""
    rng = np.random.default_rng(seed)
    cell = np.array([[4.6, 0.0, 0.0], [1.3, 4.9, 0.0], [-0.7, 0.9, 5.2]])
    for _ in range(1000):
        atoms = Atoms("SiCOSiCO", scaled_positions=rng.uniform(size=(6, 3)), cell=cell, pbc=True)
        d = atoms.get_all_distances(mic=True)
        np.fill_diagonal(d, np.inf)
        if d.min() > 1.3:
            return atoms
    raise RuntimeError("could not place the atoms")  # pragma: no cover


CASES = {
    "ethanol": (ethanol, ["H", "C", "O"], 5.0, False),
    "water_box": (water_box, ["H", "O"], 5.5, True),
    "si_primitive": (silicon, ["Si"], 6.0, True),
    "sico_triclinic": (triclinic_three_species, [14, 8, 6], 5.5, True),
}


def both(atoms, species, r_cut, periodic, params=PARAMS):
    ours = ACSF(species, r_cut, **params, periodic=periodic)
    theirs = DScribeACSF(r_cut=r_cut, species=species, periodic=periodic, **params)
    assert ours.n_features == theirs.get_number_of_features()
    return ours, theirs


@pytest.mark.parametrize("case", sorted(CASES))
def test_values_match_dscribe(case):
    build, species, r_cut, periodic = CASES[case]
    atoms = build()
    ours, theirs = both(atoms, species, r_cut, periodic)
    a = ours.compute(atoms)
    b = theirs.create(atoms)
    assert a.shape == b.shape == (len(atoms), ours.n_features)
    assert np.abs(b).max() > 0
    np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12 * np.abs(b).max())


def test_periodic_false_ignores_cell():
    atoms = triclinic_three_species()
    ours, theirs = both(atoms, ["O", "Si", "C"], 5.5, False)
    a, b = ours.compute(atoms), theirs.create(atoms)
    np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12 * np.abs(b).max())
    assert not np.allclose(a, ACSF(["O", "Si", "C"], 5.5, **PARAMS, periodic=True).compute(atoms))


@pytest.mark.parametrize(
    "params",
    [
        {},  # G1 only
        {"g3_params": [0.7]},
        {"g4_params": PARAMS["g4_params"]},
        {"g5_params": PARAMS["g5_params"], "g2_params": PARAMS["g2_params"]},
    ],
)
def test_partial_parameter_sets_match_dscribe(params):
    atoms = triclinic_three_species()
    ours, theirs = both(atoms, ["O", "Si", "C"], 5.0, True, params)
    a, b = ours.compute(atoms), theirs.create(atoms)
    np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12 * np.abs(b).max())


def test_feature_layout():
    """Per element [G1, G2s, G3s]; per pair (a >= b at a(a+1)/2 + b) [G4s, G5s, GAs]."""
    atoms = triclinic_three_species()
    ga = [(2.0, 8.0, 1.5, 0.5)]
    acsf = ACSF(["Si", "C", "O"], 5.0, **PARAMS, ga_params=ga, periodic=True)
    n_el, n_rad, n_ang = 3, 1 + 3 + 2, 4 + 2 + 1
    assert acsf.species == [6, 8, 14]
    assert acsf.n_features == n_el * n_rad + 6 * n_ang
    full = acsf.compute(atoms)
    # without GA the output is exactly DScribe's; with GA each pair block gains one column
    plain = ACSF(["Si", "C", "O"], 5.0, **PARAMS, periodic=True).compute(atoms)
    np.testing.assert_array_equal(full[:, : n_el * n_rad], plain[:, : n_el * n_rad])
    for p in range(6):
        start = n_el * n_rad + p * n_ang
        np.testing.assert_array_equal(full[:, start : start + 6], plain[:, n_el * n_rad + 6 * p :][:, :6])
    # pair order: an all-carbon + oxygen environment only fills pairs (C,C)=0, (O,C)=1, (O,O)=2
    co2 = Atoms("CO2", positions=[(0, 0, 0), (1.16, 0.1, 0), (-1.16, 0, 0.05)])
    g = ACSF(["Si", "C", "O"], 5.0, g4_params=[(0.01, 1.0, 1.0)]).compute(co2)
    pair_block = g[:, n_el:]
    assert pair_block[0].nonzero()[0].tolist() == [2]  # C sees O-O
    assert pair_block[1].nonzero()[0].tolist() == [1]  # O sees C-O


def test_derivatives_match_dscribe_numerical():
    atoms = ethanol()
    ours, theirs = both(atoms, ["H", "C", "O"], 5.0, False)
    a = ours.compute_with_gradient(atoms)
    b = theirs.derivatives(atoms, method="numerical", attach=True, return_descriptor=False)
    assert a.shape == b.shape == (len(atoms), len(atoms), 3, ours.n_features)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7 * np.abs(b).max())


def test_derivatives_match_finite_differences_periodic():
    atoms = silicon()
    acsf = ACSF(["Si"], 6.0, **PARAMS, periodic=True)
    a = acsf.compute_with_gradient(atoms)
    h = 1e-5
    fd = np.zeros_like(a)
    for j in range(len(atoms)):
        for c in range(3):
            plus, minus = atoms.copy(), atoms.copy()
            plus.positions[j, c] += h
            minus.positions[j, c] -= h
            fd[:, j, c] = (acsf.compute(plus) - acsf.compute(minus)) / (2 * h)
    assert np.abs(fd).max() > 0
    np.testing.assert_allclose(a, fd, rtol=1e-7, atol=1e-7 * np.abs(fd).max())


def test_config_round_trip_and_input_forms():
    acsf = ACSF(
        ["O", 1],
        4.0,
        np.array(PARAMS["g2_params"]),
        np.array(PARAMS["g3_params"]),
        PARAMS["g4_params"],
        None,
        ga_params=[(1.0, 2.0, 1.0, 0.3)],
        r_cut_angular=3.5,
        periodic=True,
    )
    config = acsf.get_config()
    assert config["species"] == [1, 8] and config["periodic"] is True
    assert config["g3_params"] == PARAMS["g3_params"] and config["g5_params"] == []
    again = ACSF(**config)
    assert again.get_config() == config and again.n_features == acsf.n_features
    atoms = water_box(2)
    np.testing.assert_array_equal(acsf.compute(atoms), again.compute(atoms))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"g2_params": [(1.0, 0.0, 3.0)]}, "g2_params must be a list of \\(eta, r_s\\) rows"),
        ({"g2_params": [1.0, 0.0]}, "g2_params must be"),
        ({"g2_params": [(1.0, 0.0), (1.0,)]}, "g2_params must be"),
        ({"g2_params": [(-1.0, 0.0)]}, "g2_params: eta must be >= 0"),
        ({"g2_params": [(float("nan"), 0.0)]}, "g2_params must be finite"),
        ({"g3_params": [(1.0, 2.0)]}, "g3_params must be a 1-D list"),
        ({"g3_params": ["a"]}, "g3_params must be"),
        ({"g4_params": [(0.1, 1.0)]}, "g4_params must be a list of \\(eta, zeta, lambda\\) rows"),
        ({"g4_params": [(0.1, 0.5, 1.0)]}, "g4_params: zeta must be >= 1"),
        ({"g5_params": [(0.1, 1.0, 2.0)]}, "g5_params: lambda must be in"),
        ({"g5_params": [(-0.1, 1.0, 1.0)]}, "g5_params: eta must be >= 0"),
        ({"ga_params": [(0.1, 1.0, 1.0)]}, "ga_params must be a list of \\(eta, zeta, r_s, theta_s\\)"),
        ({"r_cut_angular": 5.0}, "r_cut_angular must be in"),
        ({"r_cut_angular": 0.0}, "r_cut_angular must be in"),
    ],
)
def test_constructor_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ACSF(["H", "O"], 4.0, **kwargs)


def test_species_and_element_errors():
    with pytest.raises(ValueError, match="distinct"):
        ACSF([1, "H"], 4.0)
    with pytest.raises(ValueError, match="distinct"):
        ACSF([], 4.0)
    with pytest.raises(ValueError, match="unknown chemical symbol"):
        ACSF(["Xx"], 4.0)
    with pytest.raises(ValueError, match="r_cut must be a positive"):
        ACSF(["H"], 0.0)
    with pytest.raises(TypeError):
        ACSF(["H"], 4.0, None, None, None, None, [(1.0, 2.0, 1.0, 0.0)])  # ga_params is keyword-only
    with pytest.raises(ValueError, match=r"element\(s\) \['O'\] not in"):
        ACSF(["H", "C"], 4.0).compute(molecule("CH3OH"))
