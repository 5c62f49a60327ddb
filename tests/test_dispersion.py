"""DFT-D3(BJ) dispersion: reference energies, the cutoff taper, derivatives, symmetry, batching,
errors."""

from __future__ import annotations

import ase
import ase.build
import numpy as np
import pytest
import torch
from torch import nn

from nearsight import keys
from nearsight.longrange import Dispersion
from nearsight.longrange.dispersion import BJ_PARAMETERS, BOHR, HARTREE
from nearsight.models.forcefield import ForceField
from nearsight.testing import Evaluator, check_forces, check_stress

pytestmark = pytest.mark.usefixtures("one_thread")

SHORT = {"cutoff": 12.0, "cn_cutoff": 10.0}  # Å: cheaper pair lists for the finite-difference tests


def ethanol() -> ase.Atoms:
    return ase.build.molecule("CH3CH2OH")


def distorted_nacl() -> ase.Atoms:
    """A triclinic 8-atom cell much smaller than the cutoffs (many images of each neighbour)."""
    atoms = ase.build.bulk("NaCl", "rocksalt", a=5.64, cubic=True)
    rng = np.random.default_rng(3)
    atoms.set_cell(atoms.cell.array @ (np.eye(3) + rng.uniform(-0.05, 0.05, (3, 3))), scale_atoms=True)
    atoms.positions += rng.normal(scale=0.1, size=atoms.positions.shape)
    return atoms


def slab() -> ase.Atoms:
    """Periodic along a and b only."""
    atoms = ase.build.fcc111("Cu", size=(2, 2, 2), vacuum=6.0)
    atoms.positions[0] += [0.1, -0.05, 0.08]
    return atoms


def water_box() -> ase.Atoms:
    """4 water molecules in a ~5 Å slightly triclinic periodic cell (test_longrange_model's box)."""
    rng = np.random.default_rng(0)
    atoms = ase.Atoms()
    for k in range(4):
        w = ase.build.molecule("H2O")
        w.positions += np.array([k % 2, k // 2 % 2, 0.5 * k]) * 2.6 + rng.normal(scale=0.05, size=(3, 3))
        atoms += w
    atoms.cell = np.diag([5.3, 5.1, 5.0]) + 0.2 * rng.normal(size=(3, 3))
    atoms.pbc = True
    return atoms


def to_graph(structures: list[ase.Atoms]) -> dict[str, torch.Tensor]:
    f64 = torch.float64
    return {
        keys.POSITIONS: torch.cat([torch.tensor(a.positions, dtype=f64) for a in structures]),
        keys.ATOMIC_NUMBERS: torch.cat([torch.tensor(a.numbers, dtype=torch.int64) for a in structures]),
        keys.CELL: torch.stack([torch.tensor(a.cell.array, dtype=f64) for a in structures]),
        keys.PBC: torch.stack([torch.tensor(a.pbc) for a in structures]),
        keys.BATCH: torch.cat([torch.full((len(a),), g) for g, a in enumerate(structures)]),
        keys.N_ATOMS: torch.tensor([len(a) for a in structures]),
        keys.EDGE_INDEX: torch.zeros((2, 0), dtype=torch.int64),
        keys.CELL_SHIFTS: torch.zeros((0, 3), dtype=f64),
    }


class DispersionModel(nn.Module):
    """The dispersion term alone as a ForceField model."""

    cutoff = 0.0
    species = (1, 6, 8, 11, 17, 29)

    def __init__(self, dispersion: Dispersion) -> None:
        super().__init__()
        self.dispersion = dispersion

    def forward(self, graph: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {keys.ATOMIC_ENERGIES: self.dispersion(graph)}


def energy(dispersion: Dispersion, atoms: ase.Atoms) -> float:
    return float(dispersion(to_graph([atoms])).sum())


@pytest.mark.parametrize("structure", [ethanol, distorted_nacl, slab])
def test_matches_simple_dftd3(structure) -> None:
    """Energy, per-atom energies, forces and stress against s-dftd3 (Fortran, ``dftd3`` on PyPI).

    s-dftd3 cuts hard, so the periodic structures are compared with ``taper=0`` (the default taper
    shifts them by 3e-5 to 2e-4 eV: test_taper_changes_energy_by_a_fraction_of_the_truncation_error);
    the molecule has no pair within 19 Å of the taper, so its default-taper energy is s-dftd3's."""
    interface = pytest.importorskip("dftd3.interface")
    atoms = structure()
    periodic = bool(atoms.pbc.any())
    model = interface.DispersionModel(
        atoms.numbers,
        atoms.positions / BOHR,
        atoms.cell.array / BOHR if periodic else None,
        atoms.pbc if periodic else None,
    )
    param = interface.RationalDampingParam(method="pbe", atm=False)
    ref = model.get_dispersion(param, grad=True)
    ref_atomic = model.get_pairwise_dispersion(param)["additive pairwise energy"].sum(1) * HARTREE
    dispersion = Dispersion("pbe", taper=0.0) if periodic else Dispersion("pbe")
    out = ForceField(DispersionModel(dispersion))(to_graph([atoms]), stress=True)
    assert abs(float(out[keys.ENERGY][0].detach()) - ref["energy"] * HARTREE) < 1e-10
    assert np.abs(out[keys.ATOMIC_ENERGIES].detach().numpy() - ref_atomic).max() < 1e-6
    ref_forces = -ref["gradient"] * HARTREE / BOHR
    assert np.abs(out[keys.FORCES].numpy() - ref_forces).max() < 1e-6
    if periodic:
        ref_stress = ref["virial"] * HARTREE / atoms.get_volume()
        assert np.abs(out[keys.STRESS][0].numpy() - ref_stress).max() < 1e-6


def test_taper_leaves_molecules_unchanged() -> None:
    """S(r) = 1 exactly below cutoff − taper: nothing changes for pairs shorter than 19.2 Å."""
    atoms = ethanol()
    tapered = ForceField(DispersionModel(Dispersion("pbe")))(to_graph([atoms]))
    hard = ForceField(DispersionModel(Dispersion("pbe", taper=0.0)))(to_graph([atoms]))
    for key in (keys.ATOMIC_ENERGIES, keys.FORCES):
        assert torch.equal(tapered[key].detach(), hard[key].detach()), key


@pytest.mark.parametrize("structure", [distorted_nacl, slab, water_box])
def test_taper_changes_energy_by_a_fraction_of_the_truncation_error(structure) -> None:
    """The default 2 Å taper raises the energy (it removes attraction just inside the cutoffs) by
    less than a fifth of what the hard 31.75 Å cutoff already leaves out (estimated against a hard
    60 Å cutoff).  The switch removes about half its width of the pair-energy shell density
    (∝ r⁻⁴ in 3D, r⁻⁵ for a slab), i.e. 3w/(2 r_c) ≈ 9 % (3D) or 2w/r_c ≈ 13 % (slab) of the tail
    beyond r_c; measured 12 % (NaCl: +1.9e-4 eV of 1.6e-3), 14 % (slab: +3.0e-5 of 2.2e-4 eV),
    10 % (water box: +1.8e-5 of 1.9e-4 eV)."""
    atoms = structure()
    hard = energy(Dispersion("pbe", taper=0.0), atoms)
    tapered = energy(Dispersion("pbe"), atoms)
    truncation = hard - energy(Dispersion("pbe", taper=0.0, cutoff=60.0), atoms)
    assert 0.05 * truncation < tapered - hard < 0.2 * truncation


@pytest.mark.parametrize("taper", [2.0, 0.0])
def test_periodic_forces_and_stress_are_smooth(taper: float) -> None:
    """Forces and stress of the 12-atom periodic water box against fourth-order central differences
    (step 1e-4 Å, strain step 1e-4) with the full s-dftd3 cutoffs.  With the taper both agree to
    ~1e-11; with the hard cutoffs (taper=0) image pairs crossing 31.75 / 21.17 Å within the
    finite-difference steps make the energy jump, and the forces come out 1.5e-6 eV/Å off."""
    evaluator = Evaluator(DispersionModel(Dispersion("pbe", taper=taper)), cutoff=1.0)  # pairs: own list
    forces = check_forces(evaluator, water_box())
    stress = check_stress(evaluator, water_box())
    if taper:
        assert forces.error < 1e-6 and stress.error < 1e-6, (forces, stress)
    else:
        assert forces.error > 1e-6, forces


def test_parameter_table_matches_tad_dftd3() -> None:
    from tad_dftd3.param import get_functional_params

    for name, values in BJ_PARAMETERS.items():
        shipped = get_functional_params(name, damping="bj", dtype=torch.float64)
        for key, value in values.items():
            assert float(shipped[key]) == pytest.approx(value, abs=1e-12), (name, key)
    assert Dispersion("ωB97M-D3BJ".removesuffix("-D3BJ")).parameters == BJ_PARAMETERS["wb97m"]


@pytest.mark.parametrize("structure", [ethanol, distorted_nacl, slab])
def test_forces_match_finite_differences(structure) -> None:
    atoms = structure()
    dispersion = Dispersion("b3lyp", **SHORT)
    forces = ForceField(DispersionModel(dispersion))(to_graph([atoms]))[keys.FORCES].numpy()
    h = 1e-4
    numeric = np.zeros_like(forces)
    for a in range(len(atoms)):
        for k in range(3):
            plus, minus = atoms.copy(), atoms.copy()
            plus.positions[a, k] += h
            minus.positions[a, k] -= h
            numeric[a, k] = -(energy(dispersion, plus) - energy(dispersion, minus)) / (2 * h)
    assert np.abs(forces - numeric).max() < 1e-6


@pytest.mark.parametrize("structure", [distorted_nacl, slab])
def test_stress_matches_finite_strain(structure) -> None:
    atoms = structure()
    dispersion = Dispersion("pbe", **SHORT)
    stress = ForceField(DispersionModel(dispersion))(to_graph([atoms]), stress=True)[keys.STRESS][0].numpy()
    h = 1e-5
    numeric = np.zeros((3, 3))
    for k in range(3):
        for m in range(3):
            energies = []
            for sign in (1.0, -1.0):
                strain = np.eye(3)
                strain[k, m] += sign * h
                strained = atoms.copy()
                strained.set_cell(atoms.cell.array @ strain, scale_atoms=True)
                energies.append(energy(dispersion, strained))
            numeric[k, m] = (energies[0] - energies[1]) / (2 * h) / atoms.get_volume()
    numeric = 0.5 * (numeric + numeric.T)
    assert np.abs(stress - numeric).max() < 1e-6


@pytest.mark.parametrize("structure", [ethanol, distorted_nacl])
def test_invariance(structure) -> None:
    atoms = structure()
    dispersion = Dispersion("pbe0", **SHORT)
    reference = dispersion(to_graph([atoms])).numpy()
    rng = np.random.default_rng(11)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    moved = atoms.copy()
    moved.positions = atoms.positions @ q.T + rng.normal(size=3) * 3.0
    moved.set_cell(atoms.cell.array @ q.T, scale_atoms=False)
    assert np.abs(dispersion(to_graph([moved])).numpy() - reference).max() < 1e-10
    order = rng.permutation(len(atoms))
    permuted = atoms[order]
    assert np.abs(dispersion(to_graph([permuted])).numpy() - reference[order]).max() < 1e-10
    if atoms.pbc.all():  # a lattice translation of one atom
        wrapped = atoms.copy()
        wrapped.positions[0] += atoms.cell.array[1] - 2 * atoms.cell.array[2]
        assert np.abs(dispersion(to_graph([wrapped])).numpy() - reference).max() < 1e-10


def test_batch_equals_separate_calls() -> None:
    dispersion = Dispersion("pbe", **SHORT)
    first, second = ethanol(), distorted_nacl()
    together = dispersion(to_graph([first, second]))
    separate = torch.cat([dispersion(to_graph([first])), dispersion(to_graph([second]))])
    assert torch.allclose(together, separate, rtol=0.0, atol=1e-12)
    out = ForceField(DispersionModel(dispersion))(to_graph([first, second]), stress=True)
    alone = ForceField(DispersionModel(dispersion))(to_graph([second]), stress=True)
    assert torch.allclose(out[keys.FORCES][len(first) :], alone[keys.FORCES], rtol=0.0, atol=1e-12)
    assert torch.allclose(out[keys.STRESS][1], alone[keys.STRESS][0], rtol=0.0, atol=1e-12)


def test_unknown_functional_raises_listing_known_ones() -> None:
    with pytest.raises(ValueError, match=r"functional = 'nonsense'.*'b3lyp'.*'pbe'"):
        Dispersion("nonsense")


def test_zero_damping_raises() -> None:
    with pytest.raises(ValueError, match=r"damping = 'zero'.*Becke-Johnson"):
        Dispersion("pbe", damping="zero")


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match=r"parameters: unknown key 's9'"):
        Dispersion("pbe", parameters={"s9": 1.0})
    with pytest.raises(ValueError, match=r"cutoff = -1.0"):
        Dispersion("pbe", cutoff=-1.0)
    with pytest.raises(ValueError, match=r"taper = -0.5 must be a finite width"):
        Dispersion("pbe", taper=-0.5)
    with pytest.raises(ValueError, match=r"taper = 11.0 .* min\(cutoff, cn_cutoff\) = 10.0"):
        Dispersion("pbe", taper=11.0, **SHORT)
    atoms = ase.Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]], cell=np.zeros((3, 3)), pbc=True)
    with pytest.raises(ValueError, match=r"structure 0: periodic cell with volume 0"):
        Dispersion()(to_graph([atoms]))
    graph = to_graph([ethanol()])
    graph[keys.ATOMIC_NUMBERS] = graph[keys.ATOMIC_NUMBERS].clone()
    graph[keys.ATOMIC_NUMBERS][0] = 0
    with pytest.raises(ValueError, match=r"atomic number 0"):
        Dispersion()(graph)
