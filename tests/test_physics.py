"""Physics checks of nearsight.testing on random-weight Behler-Parrinello models, in float64.

Positive tests: every check passes on correct models for a molecule (ethanol),
a rattled, sheared two-atom Si cell (smaller than 2 r_c), a periodic water box,
a mixed-periodicity slab (T, T, F) and a one-atom periodic cell.
Negative tests: each check fails on a model or calculator broken on purpose,
which shows that the checks can fail.

The random networks get descriptor statistics from the test structures with a
floor on the spread (features that barely vary would otherwise be amplified
into a very stiff potential) and per-element energy shifts, so energies are
O(1) eV per atom and forces O(0.1-1) eV/Å.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule
from ase.calculators.calculator import Calculator, all_changes
from torch import nn

from conftest import shared_data_dir
from nearsight import NearsightCalculator, keys
from nearsight.data.neighbours import atoms_to_graph
from nearsight.descriptors.acsf import default_acsf_params
from nearsight.models.bpnn import BehlerParrinello
from nearsight.models.forcefield import edge_vectors
from nearsight.nn import cosine_cutoff, scatter_sum
from nearsight.testing import (
    CheckResult,
    Evaluator,
    check_additivity,
    check_forces,
    check_isolated_atom,
    check_nve,
    check_permutation,
    check_reflection,
    check_rotation,
    check_smoothness,
    check_stress,
    check_supercell,
    check_translation,
    check_wrapped,
    format_report,
    run_all_checks,
)

DATA = shared_data_dir()


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Small graphs: one thread is fastest and immune to contention with other jobs."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ------------------------------------------------------------------ models
def features(model: BehlerParrinello, atoms: Atoms) -> torch.Tensor:
    g = atoms_to_graph(atoms, model.cutoff)
    g[keys.EDGE_VECTORS] = edge_vectors(
        g[keys.POSITIONS], g[keys.CELL], g[keys.BATCH], g[keys.EDGE_INDEX], g[keys.CELL_SHIFTS]
    )
    with torch.no_grad():
        return model.features(g)


def random_model(species, structures, seed, r_cut=5.0, r_cut_angular=4.0, energy_scale=1.0):
    torch.manual_seed(seed)
    desc = dict(
        r_cut=r_cut, r_cut_angular=r_cut_angular, **default_acsf_params(r_cut, r_cut_angular=r_cut_angular)
    )
    model = BehlerParrinello(species, desc, hidden=(32, 32)).double()
    f = torch.cat([features(model, a) for a in structures])
    mean, std = f.mean(0), f.std(0)
    std = torch.maximum(std, 0.2 * mean.abs() + 1e-2)
    shifts = {z: -0.25 * z**0.5 - 1.0 for z in species}
    model.set_statistics(mean, std, shifts, energy_scale)
    return model


def isolated_energies(model: BehlerParrinello) -> dict[int, float]:
    """The per-element constant of a BP model: the network of zero descriptors."""
    x = (torch.zeros_like(model.feature_mean) - model.feature_mean) / model.feature_std
    with torch.no_grad():
        return {
            z: float(model.nets[k](x[None])[0, 0] * model.energy_scale + model.energy_shift[k])
            for k, z in enumerate(model.species)
        }


# -------------------------------------------------------------- structures
def ethanol() -> Atoms:
    path = DATA / "ethanol" / "train.xyz"
    if path.exists():
        import ase.io

        return ase.io.read(path, index=0)
    atoms = molecule("CH3CH2OH")
    atoms.rattle(0.05, rng=np.random.default_rng(3))
    return atoms


def water_box() -> Atoms:
    """32 water molecules in a periodic cube, from the first DeePMD frame if available."""
    root = DATA / "water" / "data_0"
    if root.exists():
        from ase.data import atomic_numbers

        type_map = (root / "type_map.raw").read_text().split()
        types = np.loadtxt(root / "type.raw", dtype=int)
        coords = np.load(root / "set.000" / "coord.npy")[0].reshape(-1, 3)
        box = np.load(root / "set.000" / "box.npy")[0].reshape(3, 3)
        full = Atoms([atomic_numbers[type_map[t]] for t in types], positions=coords, cell=box, pbc=True)
        return full
    rng = np.random.default_rng(4)
    h2o = molecule("H2O")
    grid = np.array([(i, j, k) for i in range(4) for j in range(4) for k in range(4)]) * 3.11 + 0.5
    atoms = Atoms(cell=np.eye(3) * 12.44, pbc=True)
    for p in grid:
        m = h2o.copy()
        m.rotate(rng.uniform(0, 360), rng.standard_normal(3))
        m.positions += p
        atoms += m
    return atoms


def si_cell() -> Atoms:
    """Rattled, sheared two-atom diamond Si cell; its lattice vectors (~3.9 Å) are < 2 r_c."""
    atoms = bulk("Si", "diamond", a=5.43)
    shear = np.array([[0.02, 0.06, -0.03], [0.01, -0.02, 0.05], [0.04, 0.0, 0.03]])
    atoms.set_cell(atoms.cell.array @ (np.eye(3) + shear), scale_atoms=True)
    atoms.rattle(0.1, rng=np.random.default_rng(1))
    return atoms


def si_slab() -> Atoms:
    atoms = bulk("Si", "diamond", a=5.43, cubic=True)
    atoms.set_cell(np.array([[5.43, 0.0, 0.0], [0.3, 5.43, 0.0], [0.0, 0.0, 15.0]]), scale_atoms=False)
    atoms.pbc = [True, True, False]
    atoms.rattle(0.1, rng=np.random.default_rng(2))
    return atoms


def si_one_atom() -> Atoms:
    atoms = bulk("Si", "fcc", a=4.0)
    shear = np.array([[0.0, 0.05, 0.0], [0.03, 0.0, 0.0], [0.0, -0.04, 0.02]])
    atoms.set_cell(atoms.cell.array @ (np.eye(3) + shear), scale_atoms=True)
    return atoms


@pytest.fixture(scope="module")
def setup():
    eth, water, si, slab, one = ethanol(), water_box(), si_cell(), si_slab(), si_one_atom()
    cho = random_model([1, 6, 8], [eth], seed=0)
    sil = random_model([14], [si, slab, one], seed=1)
    wat = random_model([1, 8], [water], seed=2, r_cut=4.0, r_cut_angular=3.0)
    cases = {
        "ethanol": (cho, eth),
        "si": (sil, si),
        "water": (wat, water),
        "slab": (sil, slab),
        "one_atom": (sil, one),
    }
    return {"cases": cases, "cho": cho, "si": sil, "water": wat}


ALL = ["ethanol", "si", "water", "slab", "one_atom"]
PERIODIC = ["si", "water", "slab", "one_atom"]
SMALL_PERIODIC = ["si", "slab", "one_atom", "water"]


def ok(result: CheckResult) -> CheckResult:
    assert isinstance(result, CheckResult)
    assert not result.skipped, result.detail
    return result.assert_ok()


def fails(result: CheckResult) -> CheckResult:
    assert not result.passed, f"{result.name} should have failed: {result.detail}"
    with pytest.raises(AssertionError, match=result.name):
        result.assert_ok()
    return result


# ------------------------------------------------------------ positive tests
def test_structures_are_sensible(setup):
    """Nontrivial models: O(1) eV per atom, forces that are not tiny, cells smaller than 2 r_c."""
    for name, (model, atoms) in setup["cases"].items():
        result = Evaluator(model)(atoms)
        assert 0.1 < abs(result.energy) / len(atoms) < 10.0, name
        assert len(atoms) == 1 or np.abs(result.forces).max() > 0.01, name
        assert all(abs(e) > 0.1 for e in isolated_energies(model).values()), name
    for name in ("si", "slab", "one_atom"):
        atoms = setup["cases"][name][1]
        assert atoms.cell.lengths()[atoms.pbc].min() < 2 * setup["si"].cutoff, name


@pytest.mark.parametrize("check", [check_rotation, check_reflection, check_translation, check_permutation])
@pytest.mark.parametrize("case", ALL)
def test_symmetries(setup, case, check):
    model, atoms = setup["cases"][case]
    result = ok(check(model, atoms, tol=1e-10, rng=np.random.default_rng(7)))
    assert result.error < 1e-10


@pytest.mark.parametrize("case", ALL)
def test_forces_match_finite_differences(setup, case):
    model, atoms = setup["cases"][case]
    ok(check_forces(model, atoms, tol=1e-6, max_components=36))


@pytest.mark.parametrize("case", PERIODIC)
def test_stress_matches_finite_strain(setup, case):
    model, atoms = setup["cases"][case]
    result = ok(check_stress(model, atoms, tol=1e-6))
    assert "V =" in result.detail


@pytest.mark.parametrize("case", SMALL_PERIODIC)
def test_supercell_is_extensive(setup, case):
    model, atoms = setup["cases"][case]
    ok(check_supercell(model, atoms, tol=1e-10, repeats=(2, 2, 2)))


@pytest.mark.parametrize("case", PERIODIC)
def test_wrapped_positions(setup, case):
    model, atoms = setup["cases"][case]
    ok(check_wrapped(model, atoms, tol=1e-10))


def test_far_apart_fragments_are_additive(setup):
    model, eth = setup["cases"]["ethanol"]
    ok(check_additivity(model, eth, tol=1e-10))
    h2o = molecule("H2O")
    ok(check_additivity(model, eth, h2o, tol=1e-10))


@pytest.mark.parametrize("which", ["cho", "si", "water"])
def test_isolated_atom(setup, which):
    model = setup[which]
    ok(check_isolated_atom(model, tol=1e-10, expected=isolated_energies(model)))


@pytest.mark.parametrize("which", ["cho", "si", "water"])
def test_smooth_at_cutoff(setup, which):
    result = ok(check_smoothness(setup[which], tol=1e-6))
    assert "radii" in result.detail


def test_nve_energy_drift(setup):
    """A random network has no short-range repulsion: at full scale (O(1) eV per atom) atoms
    attract each other until two of them nearly coincide (~40 fs at 300 K) and the dynamics
    becomes meaningless.  With energy_scale 0.1 the potential is soft enough for 100 fs."""
    model, eth = setup["cases"]["ethanol"]
    model = copy.deepcopy(model)
    model.energy_scale.fill_(0.1)
    result = ok(check_nve(model, eth, tol=1e-4, n_steps=200, timestep_fs=0.5, temperature_K=300.0))
    assert "eV/atom/ps" in result.detail


def test_checks_accept_calculators_and_leave_model_untouched(setup):
    model, eth = setup["cases"]["ethanol"]
    model32 = copy.deepcopy(model).float()
    ok(check_rotation(model32, eth, tol=1e-10))  # evaluated on a float64 copy
    assert next(model32.parameters()).dtype == torch.float32
    assert all(p.requires_grad for p in model32.parameters())
    ok(check_forces(NearsightCalculator(model, dtype="float64"), eth, tol=1e-6))
    ok(check_forces(Tampered(model), eth, tol=1e-6))  # any ASE calculator
    sil, si = setup["cases"]["si"]
    ok(check_stress(Tampered(sil), si, tol=1e-6))


def test_run_all_checks_and_report(setup):
    model, si = setup["cases"]["si"]
    cluster = Atoms("Si4", positions=[[0, 0, 0], [2.3, 0, 0], [0.4, 2.2, 0.1], [0.9, 0.8, 2.0]])
    results = run_all_checks(
        model,
        molecule=cluster,
        periodic=[si, setup["cases"]["one_atom"][1]],
        isolated_energies=isolated_energies(model),
    )
    names = [r.name for r in results]
    for expected in (
        "rotation[molecule]",
        "stress_fd[periodic0]",
        "supercell[periodic1]",
        "additivity[molecule]",
        "isolated_atom",
        "smoothness",
    ):
        assert expected in names
    assert all(r.passed for r in results), format_report(results, None)
    report = format_report(results)
    assert "PASS" in report and "0 failed" in report


# ------------------------------------------------------- broken models
class Perturbed(nn.Module):
    """A correct model plus a flaw; exposes ``cutoff`` and ``species`` like any nearsight model."""

    def __init__(self, base: nn.Module, flaw: str) -> None:
        super().__init__()
        self.base, self.flaw = base, flaw
        self.cutoff, self.species = base.cutoff, base.species

    def forward(self, graph):
        return {keys.ATOMIC_ENERGIES: self.atomic_energies(graph)}

    def atomic_energies(self, graph):
        pos = graph[keys.POSITIONS]
        n = pos.shape[0]
        vec = graph[keys.EDGE_VECTORS]
        i = graph[keys.EDGE_INDEX][0]
        r = torch.linalg.vector_norm(vec, dim=-1)
        fc = cosine_cutoff(r, self.cutoff)
        if self.flaw == "image_blind":  # drops periodic images: wrong for small cells
            keep = (graph[keys.CELL_SHIFTS] == 0).all(dim=1)
            g = {k: v for k, v in graph.items()}
            g[keys.EDGE_INDEX] = graph[keys.EDGE_INDEX][:, keep]
            g[keys.EDGE_VECTORS] = vec[keep]
            g[keys.CELL_SHIFTS] = graph[keys.CELL_SHIFTS][keep]
            return self.base(g)[keys.ATOMIC_ENERGIES]
        out = self.base(graph)[keys.ATOMIC_ENERGIES]
        if self.flaw == "absolute_position":
            return out + 0.05 * torch.sin(pos).sum(-1)
        if self.flaw == "atom_index":
            return out * (1.0 + 0.01 * torch.arange(n, dtype=pos.dtype))
        if self.flaw == "anisotropic":  # depends on the x direction only
            return out + 0.1 * scatter_sum(fc * (vec[:, 0] / r) ** 2, i, n)
        if self.flaw == "chiral":  # rotation invariant pseudoscalar: flips sign under reflection
            v = [scatter_sum((fc * r**k)[:, None] * vec, i, n) for k in range(3)]
            return out + 0.05 * torch.linalg.det(torch.stack(v, dim=1))
        if self.flaw == "step":  # counts neighbours: energy jumps at r_c
            return out + 0.05 * scatter_sum(torch.ones_like(r), i, n)
        if self.flaw == "kink":  # linear envelope: energy continuous, force jumps at r_c
            return out + 0.05 * scatter_sum(1.0 - r / self.cutoff, i, n)
        if self.flaw == "global":  # per-atom energy depends on the total number of atoms
            return out + 0.01 * n
        if self.flaw == "coordination":  # 1 / coordination: infinite for an isolated atom
            return out + 0.1 / scatter_sum(fc, i, n)
        raise ValueError(self.flaw)


class Tampered(Calculator):
    """A correct calculator whose forces/stress are altered afterwards (non-conservative)."""

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress"]

    def __init__(self, model, force_factor=1.0, force_offset=0.0, stress_factor=1.0) -> None:
        super().__init__()
        self.inner = NearsightCalculator(copy.deepcopy(model), dtype="float64")
        self.cutoff, self.species = self.inner.cutoff, list(model.species)
        self.force_factor, self.force_offset, self.stress_factor = force_factor, force_offset, stress_factor

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        self.inner.calculate(self.atoms, properties, system_changes)
        self.results = dict(self.inner.results)
        self.results["forces"] = self.results["forces"] * self.force_factor + self.force_offset
        if "stress" in self.results:
            self.results["stress"] = self.results["stress"] * self.stress_factor


def test_translation_and_wrapping_fail_for_absolute_positions(setup):
    model, eth = setup["cases"]["ethanol"]
    fails(check_translation(Perturbed(model, "absolute_position"), eth))
    sil, si = setup["cases"]["si"]
    fails(check_wrapped(Perturbed(sil, "absolute_position"), si))


def test_rotation_fails_for_anisotropic_model(setup):
    model, eth = setup["cases"]["ethanol"]
    bad = Perturbed(model, "anisotropic")
    fails(check_rotation(bad, eth))
    ok(check_translation(bad, eth))


def test_reflection_fails_for_chiral_model(setup):
    model, eth = setup["cases"]["ethanol"]
    bad = Perturbed(model, "chiral")
    ok(check_rotation(bad, eth))  # a pseudoscalar is rotation invariant ...
    fails(check_reflection(bad, eth))  # ... but changes sign in a mirror


def test_permutation_fails_for_index_dependent_model(setup):
    model, eth = setup["cases"]["ethanol"]
    fails(check_permutation(Perturbed(model, "atom_index"), eth))


def test_finite_difference_checks_fail_for_nonconservative_calculators(setup):
    model, eth = setup["cases"]["ethanol"]
    fails(check_forces(Tampered(model, force_factor=-1.0), eth))
    fails(check_forces(Tampered(model, force_factor=1.001), eth))
    sil, si = setup["cases"]["si"]
    fails(check_stress(Tampered(sil, stress_factor=-1.0), si))


def test_supercell_fails_for_image_blind_and_global_models(setup):
    sil, si = setup["cases"]["si"]
    fails(check_supercell(Perturbed(sil, "image_blind"), si))
    fails(check_supercell(Perturbed(sil, "global"), si))


def test_additivity_fails_for_global_model(setup):
    model, eth = setup["cases"]["ethanol"]
    fails(check_additivity(Perturbed(model, "global"), eth))


def test_isolated_atom_fails(setup):
    model = setup["cho"]
    result = fails(check_isolated_atom(Perturbed(model, "coordination")))
    assert result.error == float("inf")
    wrong = {z: e + 1e-3 for z, e in isolated_energies(model).items()}
    fails(check_isolated_atom(model, expected=wrong))


@pytest.mark.parametrize("flaw", ["step", "kink"])
def test_smoothness_fails_at_hard_cutoff(setup, flaw):
    result = fails(check_smoothness(Perturbed(setup["si"], flaw)))
    assert ("energy jump" in result.detail) == (flaw == "step")


def test_nve_fails_with_nonconservative_forces(setup):
    model, eth = setup["cases"]["ethanol"]
    fails(check_nve(Tampered(model, force_offset=np.array([0.2, 0.0, 0.0])), eth, tol=1e-4, n_steps=100))
