"""The four-body bispectrum beside SOAP's power spectrum (nearsight.descriptors.bispectrum)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nearsight.descriptors import SOAP
from nearsight.descriptors.bispectrum import bispectrum_channels, real_gaunt_table
from nearsight.models.bpnn import BehlerParrinello
from nearsight.models.io import load_model, save_model
from nearsight.testing import Evaluator, check_forces, check_rotation, check_stress, check_supercell
from nearsight.training.config import ConfigError, validate_config
from structures import ethanol, si_small_cell

WEIGHTING = {"function": "poly", "r0": 4.0, "c": 1.0, "m": 2.0}


@pytest.mark.parametrize("m_order", [True, False])
def test_real_gaunt_coefficients(m_order):
    g = real_gaunt_table(3, m_order)
    # Y_00 = 1/√(4π): G[00, a, b] = δ_ab/√(4π)
    np.testing.assert_allclose(g[0], np.eye(16) / math.sqrt(4 * math.pi), atol=1e-14)
    # symmetric in its three indices
    np.testing.assert_allclose(g, g.transpose(1, 0, 2), atol=1e-14)
    np.testing.assert_allclose(g, g.transpose(0, 2, 1), atol=1e-14)
    # m = 0 harmonics are the complex ones: ∫ Y10 Y10 Y20 = √(3·3·5/4π) (1 1 2; 0 0 0)², the 3j symbol² = 2/15
    y10, y20 = 2, 6  # columns of (l, m) = (1, 0), (2, 0) in either order of m
    assert g[y10, y10, y20] == pytest.approx(math.sqrt(45 / (4 * math.pi)) * 2 / 15, rel=1e-12)
    # selection rules: odd l1 + l2 + l3 and non-triangular triplets vanish
    assert np.all(g[1:4, 1:4, 1:4] == 0)  # l = 1, 1, 1
    assert np.all(g[1:4, 1:4, 9:16] == 0)  # l = 1, 1, 3


def test_channel_triplets_follow_the_selection_rules():
    kept = bispectrum_channels(1, 2, 3)
    # per l-multiset {1,1,2}, {2,2,2}, {1,2,3}, {2,3,3}, with 2 radial channels each
    assert len(kept) == 3 * 2 + 4 + 2 * 2 * 2 + 2 * 3
    ls = [tuple((k // 2) % 4 for k in t) for t in kept]
    assert all(0 not in l and sum(l) % 2 == 0 and abs(l[0] - l[1]) <= l[2] <= l[0] + l[1] for l in ls)
    assert all(a <= b <= c for a, b, c in kept)
    assert len(bispectrum_channels(2, 2, 3)) > 4 * len(kept)  # element-resolved


@pytest.mark.parametrize("rbf", ["gto", "polynomial"])
def test_invariant_under_rotation_reflection_and_permutation(rbf):
    atoms = ethanol()
    desc = SOAP(["H", "C", "O"], 4.0, 4, 3, sigma=0.5, rbf=rbf, bispectrum={"n_max": 3, "l_max": 3})
    base = desc.compute(atoms)
    n_ps = desc.n_features - desc.bispectrum.n_features
    assert base.shape == (len(atoms), desc.n_features)
    assert np.abs(base[:, n_ps:]).max() > 0
    scale = np.abs(base).max(0)  # each feature to its own size: the bispectrum is much smaller
    rotated = atoms.copy()
    rotated.rotate(73.0, (0.3, -1.0, 0.4), center="COM")
    mirrored = rotated.copy()
    mirrored.positions[:, 0] *= -1
    for moved in (rotated, mirrored):
        np.testing.assert_allclose(desc.compute(moved) / scale, base / scale, atol=1e-10)
    perm = np.random.default_rng(0).permutation(len(atoms))
    np.testing.assert_allclose(desc.compute(atoms[perm]), base[perm], rtol=1e-12, atol=1e-14)


def test_shared_expansion_equals_a_separate_one():
    """With the power spectrum's n_max the bispectrum reuses its l <= l_b coefficients: the same
    values as a separate expansion with l_max = l_b."""
    atoms = si_small_cell()
    atoms.rattle(0.1, seed=2)
    shared = SOAP(
        ["Si"], 4.0, 4, 5, 0.5, weighting=WEIGHTING, periodic=True, bispectrum={"n_max": 4, "l_max": 2}
    )
    assert shared.bispectrum_density is None
    alone = SOAP(["Si"], 4.0, 4, 2, 0.5, weighting=WEIGHTING, periodic=True)
    graph = alone.graph(atoms)
    expected = shared.bispectrum(alone.coefficients(graph)).numpy()
    got = shared.compute(atoms)[:, -shared.bispectrum.n_features :]
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-14 * np.abs(expected).max())


def test_gradients_match_finite_differences_periodic():
    atoms = si_small_cell()
    atoms.rattle(0.1, seed=3)
    desc = SOAP(
        ["Si"], 4.0, 4, 3, 0.5, weighting=WEIGHTING, periodic=True, bispectrum={"n_max": 3, "l_max": 3}
    )
    grad = desc.compute_with_gradient(atoms)[..., -desc.bispectrum.n_features :]
    h = 1e-5
    for j, c in [(0, 0), (1, 2), (1, 1)]:
        plus, minus = atoms.copy(), atoms.copy()
        plus.positions[j, c] += h
        minus.positions[j, c] -= h
        fd = (desc.compute(plus) - desc.compute(minus))[:, -desc.bispectrum.n_features :] / (2 * h)
        np.testing.assert_allclose(grad[:, j, c], fd, rtol=1e-6, atol=1e-7 * np.abs(fd).max())


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="keys n_max and l_max"):
        SOAP(["Si"], 4.0, 4, 3, bispectrum={"n": 3})
    with pytest.raises(ValueError, match="l_max must be an integer >= 1"):
        SOAP(["Si"], 4.0, 4, 3, bispectrum={"l_max": 0})
    with pytest.raises(ValueError, match="exceeds the power spectrum's 3"):
        SOAP(["Si"], 4.0, 4, 3, bispectrum={"n_max": 4, "l_max": 4})
    base = {
        "data": {"train": "x.xyz"},
        "model": {"descriptor": "soap", "bispectrum": {"n_max": 3, "l_max": 2}},
    }
    assert validate_config(base)["model"]["bispectrum"] == {"n_max": 3, "l_max": 2}
    with pytest.raises(ConfigError, match="only with model.descriptor: soap"):
        validate_config({"data": {"train": "x.xyz"}, "model": {"bispectrum": {"n_max": 3}}})
    with pytest.raises(ConfigError, match="model.bispectrum: bispectrum n_max"):
        validate_config(
            {"data": {"train": "x.xyz"}, "model": {"descriptor": "soap", "bispectrum": {"n_max": 0}}}
        )


@pytest.fixture(scope="module")
def potential():
    torch.manual_seed(0)
    atoms = si_small_cell()
    atoms.rattle(0.05, seed=4)
    desc = {"type": "soap", "r_cut": 4.0, "n_max": 4, "l_max": 3, "sigma": 0.5, "weighting": WEIGHTING,
            "bispectrum": {"n_max": 3, "l_max": 3}}  # fmt: skip
    model = BehlerParrinello([14], desc, hidden=(16, 16)).double()
    feats = torch.as_tensor(model.descriptor.compute(atoms))
    model.set_statistics(feats.mean(0), feats.std(0) + 1e-3 * feats.abs().mean(0), {14: -1.0}, 1.0)
    return model, atoms


def test_potential_physics(potential):
    model, atoms = potential
    check_rotation(model, atoms, tol=1e-10, rng=np.random.default_rng(1)).assert_ok()
    check_forces(model, atoms, tol=1e-6, max_components=18).assert_ok()
    check_stress(model, atoms, tol=1e-6).assert_ok()
    check_supercell(model, atoms, tol=1e-10, repeats=(2, 1, 1)).assert_ok()


def test_model_file_round_trip(potential, tmp_path):
    model, atoms = potential
    loaded = load_model(save_model(model, tmp_path / "bispectrum.pt"))
    assert loaded.get_config()["descriptor"]["bispectrum"] == {"n_max": 3, "l_max": 3}
    a, b = Evaluator(model)(atoms), Evaluator(loaded)(atoms)
    assert a.energy == pytest.approx(b.energy, rel=1e-12)
    np.testing.assert_allclose(a.forces, b.forces, rtol=1e-10, atol=1e-12)
