"""SOAP against DScribe (the oracle), its gradients, and a Behler-Parrinello potential on it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms

from nearsight.descriptors import SOAP, build_descriptor
from nearsight.descriptors import soap as soap_module
from nearsight.descriptors.solid_harmonics import real_solid_harmonics
from nearsight.models.bpnn import BehlerParrinello
from nearsight.models.io import load_model, save_model
from nearsight.testing import (
    check_forces,
    check_rotation,
    check_smoothness,
    check_stress,
    check_supercell,
)
from structures import ethanol, si_small_cell, water_box

dscribe = pytest.importorskip("dscribe.descriptors")


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


CASES = {
    "ethanol": (ethanol, ["H", "C", "O"], False),
    "water": (water_box, ["H", "O"], True),
    "si": (si_small_cell, ["Si"], True),
}


def assert_equal_to_dscribe(ours: np.ndarray, ref: np.ndarray, rtol: float = 1e-8) -> None:
    """Element-wise relative agreement; entries that cancel to ~0 are held to rtol of the row scale."""
    assert ours.shape == ref.shape
    scale = np.abs(ref).max(axis=1, keepdims=True)
    excess = np.abs(ours - ref) / (rtol * np.abs(ref) + rtol * 1e-2 * scale)
    worst = np.unravel_index(np.argmax(excess), excess.shape)
    assert excess.max() <= 1.0, f"at {worst}: ours {ours[worst]!r}, DScribe {ref[worst]!r}"


@pytest.mark.parametrize("rbf", ["gto", "polynomial"])
@pytest.mark.parametrize("case", list(CASES))
def test_soap_equals_dscribe(case, rbf):
    build, species, periodic = CASES[case]
    atoms = build()
    r_cut = 6.0 if case == "si" else 5.0  # the 2-atom Si cell is far smaller than 2 r_cut
    kwargs = dict(r_cut=r_cut, n_max=8, l_max=6, sigma=1.0, rbf=rbf, periodic=periodic)
    ours = SOAP(species, **kwargs).compute(atoms)
    ref = dscribe.SOAP(species=species, **kwargs).create(atoms)
    assert ours.shape == (len(atoms), SOAP(species, **kwargs).n_features)
    assert_equal_to_dscribe(ours, ref)


@pytest.mark.parametrize(
    "weighting",
    [
        {"function": "poly", "r0": 4.0, "c": 1.0, "m": 2.0},
        {"function": "pow", "r0": 2.0, "c": 1.0, "d": 1.0, "m": 4.0, "w0": 0.5},
        {"function": "exp", "r0": 1.0, "c": 2.0, "d": 1.0, "threshold": 1e-2},
        {"w0": 0.0},
    ],
)
@pytest.mark.parametrize("rbf", ["gto", "polynomial"])
def test_weighting_equals_dscribe(weighting, rbf):
    atoms = ethanol()
    r_cut = None if "function" in weighting else 5.0
    kwargs = dict(n_max=4, l_max=4, sigma=0.5, rbf=rbf)
    ours = SOAP(["H", "C", "O"], r_cut, weighting=dict(weighting), **kwargs)
    ref = dscribe.SOAP(species=["H", "C", "O"], r_cut=r_cut, weighting=dict(weighting), **kwargs)
    assert ours.r_cut == pytest.approx(ref._r_cut)
    assert_equal_to_dscribe(ours.compute(atoms), ref.create(atoms))


def test_small_sigma_and_basis_sizes_equal_dscribe():
    atoms = water_box(n_side=2, seed=3)
    for n_max, l_max, sigma in [(2, 0, 0.3), (3, 9, 0.4), (10, 3, 0.8)]:
        kwargs = dict(r_cut=4.5, n_max=n_max, l_max=l_max, sigma=sigma, periodic=True)
        ours = SOAP(["H", "O"], **kwargs).compute(atoms)
        assert_equal_to_dscribe(ours, dscribe.SOAP(species=["H", "O"], **kwargs).create(atoms))


def test_feature_order_and_get_location_follow_dscribe():
    ours = SOAP(["O", "H", "C"], 5.0, 3, 2)
    ref = dscribe.SOAP(species=["O", "H", "C"], r_cut=5.0, n_max=3, l_max=2)
    assert ours.species == [1, 6, 8]
    assert ours.n_features == ref.get_number_of_features()
    for pair in [("H", "H"), ("H", "C"), ("C", "H"), ("O", "O"), ("C", "O")]:
        assert ours.get_location(pair) == ref.get_location(pair)


def test_gradients_equal_dscribe_analytic_derivatives():
    atoms = ethanol()
    kwargs = dict(r_cut=5.0, n_max=4, l_max=4, sigma=0.5)
    ours = SOAP(["H", "C", "O"], **kwargs).compute_with_gradient(atoms)  # [i, j, 3, D]
    ref = dscribe.SOAP(species=["H", "C", "O"], **kwargs).derivatives(
        atoms, method="analytical", attach=True, return_descriptor=False
    )
    np.testing.assert_allclose(ours, ref, rtol=1e-8, atol=1e-10 * np.abs(ref).max())


@pytest.mark.parametrize("rbf", ["gto", "polynomial"])
def test_gradients_match_finite_differences_periodic(rbf):
    atoms = si_small_cell()
    desc = SOAP(["Si"], 5.0, 4, 4, sigma=0.5, rbf=rbf, periodic=True)
    grad = desc.compute_with_gradient(atoms)
    h = 1e-5
    for j, c in [(0, 0), (1, 2), (0, 1)]:
        plus, minus = atoms.copy(), atoms.copy()
        plus.positions[j, c] += h
        minus.positions[j, c] -= h
        fd = (desc.compute(plus) - desc.compute(minus)) / (2 * h)
        np.testing.assert_allclose(grad[:, j, c], fd, rtol=1e-6, atol=1e-8 * np.abs(fd).max())


def test_invariant_under_rotation_and_permutation():
    atoms = ethanol()
    desc = SOAP(["H", "C", "O"], 5.0, 6, 6, sigma=0.5)
    base = desc.compute(atoms)
    rot = atoms.copy()
    rot.rotate(73.0, (0.3, -1.0, 0.4), center="COM")
    np.testing.assert_allclose(desc.compute(rot), base, rtol=1e-10, atol=1e-12 * np.abs(base).max())
    mirrored = atoms.copy()
    mirrored.positions[:, 0] *= -1
    np.testing.assert_allclose(desc.compute(mirrored), base, rtol=1e-10, atol=1e-12 * np.abs(base).max())
    perm = np.random.default_rng(0).permutation(len(atoms))
    np.testing.assert_allclose(desc.compute(atoms[perm]), base[perm], rtol=1e-12, atol=1e-14)


def test_real_solid_harmonics_are_orthonormal():
    """∫ Y_lm Y_l'm' dΩ = δ over a Lebedev-free check: Monte-Carlo-free Gauss product grid."""
    n_theta, n_phi = 40, 80
    x, w = np.polynomial.legendre.leggauss(n_theta)
    phi = np.arange(n_phi) * 2 * np.pi / n_phi
    ct, ph = np.meshgrid(x, phi, indexing="ij")
    st = np.sqrt(1 - ct**2)
    vec = torch.as_tensor(np.stack([st * np.cos(ph), st * np.sin(ph), ct], -1).reshape(-1, 3))
    y = real_solid_harmonics(vec, 8).numpy()
    weights = (w[:, None] * np.full(n_phi, 2 * np.pi / n_phi)[None, :]).reshape(-1)
    gram = (y * weights[:, None]).T @ y
    np.testing.assert_allclose(gram, np.eye(81), atol=1e-12)


@pytest.mark.parametrize("rbf", ["gto", "polynomial"])
@pytest.mark.parametrize("checkpointed", [False, True])
def test_chunked_and_checkpointed_paths_equal_the_direct_one(monkeypatch, checkpointed, rbf):
    atoms = water_box(n_side=2)
    desc = SOAP(["H", "O"], 4.0, 4, 3, sigma=0.5, rbf=rbf, periodic=True)
    graph = desc.graph(atoms, requires_grad=True)
    direct = desc(graph)
    (g_direct,) = torch.autograd.grad(direct.sum(), graph["positions"])
    monkeypatch.setattr(soap_module, "_CHUNK_ELEMENTS", 4000)  # forces many atom chunks
    if checkpointed:
        monkeypatch.setattr(soap_module, "_CHECKPOINT_ELEMENTS", 0)
    graph = desc.graph(atoms, requires_grad=True)
    chunked = desc(graph)
    (g_chunked,) = torch.autograd.grad(chunked.sum(), graph["positions"])
    torch.testing.assert_close(chunked, direct, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(g_chunked, g_direct, rtol=1e-10, atol=1e-10)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="rbf"):
        SOAP(["H"], 5.0, 4, 4, rbf="spline")
    with pytest.raises(ValueError, match="n_max"):
        SOAP(["H"], 5.0, 0, 4)
    with pytest.raises(ValueError, match="l_max"):
        SOAP(["H"], 5.0, 4, -1)
    with pytest.raises(ValueError, match="sigma"):
        SOAP(["H"], 5.0, 4, 4, sigma=0.0)
    with pytest.raises(ValueError, match="r_cut > 1"):
        SOAP(["H"], 0.9, 4, 4)
    with pytest.raises(ValueError, match="species"):
        SOAP(["H", "H"], 5.0, 4, 4)
    with pytest.raises(ValueError, match="weighting function"):
        SOAP(["H"], 5.0, 4, 4, weighting={"function": "gauss", "r0": 1.0})
    with pytest.raises(ValueError, match="needs 'm'"):
        SOAP(["H"], 5.0, 4, 4, weighting={"function": "poly", "r0": 3.0, "c": 1.0})
    with pytest.raises(ValueError, match=r"\['Cl'\] not in the descriptor's species"):
        SOAP(["H", "C", "O"], 5.0, 4, 4).compute(Atoms("HCl", positions=[[0, 0, 0], [0, 0, 1.3]]))
    with pytest.raises(ValueError, match="unknown descriptor type"):
        build_descriptor({"type": "mbtr"}, [1])


# ------------------------------------------------------------------ SOAP-BPNN potential
def soap_model(species, structures, weighting=True, seed=0) -> BehlerParrinello:
    torch.manual_seed(seed)
    desc = {"type": "soap", "r_cut": 4.0, "n_max": 4, "l_max": 3, "sigma": 0.5}
    if weighting:
        desc["weighting"] = {"function": "poly", "r0": 4.0, "c": 1.0, "m": 2.0}
    model = BehlerParrinello(species, desc, hidden=(16, 16)).double()
    feats = torch.cat([torch.as_tensor(model.descriptor.compute(a)) for a in structures])
    mean, std = feats.mean(0), feats.std(0)
    model.set_statistics(mean, torch.maximum(std, 0.2 * mean.abs() + 1e-2), {z: -1.0 for z in species}, 1.0)
    return model


@pytest.fixture(scope="module")
def potentials():
    eth, si = ethanol(), si_small_cell()
    return {"ethanol": (soap_model([1, 6, 8], [eth]), eth), "si": (soap_model([14], [si], seed=1), si)}


@pytest.mark.parametrize("case", ["ethanol", "si"])
def test_soap_potential_physics(potentials, case):
    model, atoms = potentials[case]
    assert model.cutoff == 4.0  # compact weighting: the neighbour list stops at r0
    check_rotation(model, atoms, tol=1e-10, rng=np.random.default_rng(1)).assert_ok()
    check_forces(model, atoms, tol=1e-6, max_components=18).assert_ok()
    if atoms.pbc.all():
        check_stress(model, atoms, tol=1e-6).assert_ok()
        check_supercell(model, atoms, tol=1e-10, repeats=(2, 2, 2)).assert_ok()


def test_soap_potential_is_smooth_only_with_compact_weighting(potentials):
    smooth = check_smoothness(potentials["si"][0], tol=1e-6)
    smooth.assert_ok()
    # DScribe's plain SOAP keeps every atom up to r_cut + 3.7 σ and then drops it: a jump
    rough = check_smoothness(soap_model([14], [si_small_cell()], weighting=False, seed=1), tol=1e-6)
    assert not rough.passed


def test_soap_model_file_round_trip(potentials, tmp_path):
    model, atoms = potentials["ethanol"]
    path = save_model(model, tmp_path / "soap.pt")
    loaded = load_model(path)
    assert loaded.get_config()["descriptor"]["type"] == "soap"
    assert loaded.get_config() == model.get_config()
    from nearsight.testing import Evaluator

    a, b = Evaluator(model)(atoms), Evaluator(loaded)(atoms)
    assert a.energy == pytest.approx(b.energy, rel=1e-12)
    np.testing.assert_allclose(a.forces, b.forces, rtol=1e-10, atol=1e-12)
