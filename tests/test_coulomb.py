"""Electrostatics through torch-pme: Madelung energy, direct sum, derivatives, batching, errors."""

from __future__ import annotations

import itertools

import ase.build
import numpy as np
import pytest
import torch
from torch import nn

from nearsight import keys
from nearsight.longrange import Coulomb
from nearsight.models.forcefield import ForceField

pytestmark = pytest.mark.usefixtures("one_thread")

K_E = 14.399645478425667  # eV·Å/e², torchpme.prefactors.eV_A
MADELUNG_NACL = 1.74756459463  # rock salt, referred to the nearest-neighbour distance
A_NACL = 5.64  # Å


def nacl(repeat: int = 1) -> tuple[ase.Atoms, torch.Tensor]:
    atoms = ase.build.bulk("NaCl", "rocksalt", a=A_NACL, cubic=True).repeat(repeat)
    charges = torch.tensor(np.where(atoms.numbers == 11, 1.0, -1.0), dtype=torch.float64)
    return atoms, charges


def cluster() -> tuple[ase.Atoms, torch.Tensor]:
    """Six charges summing to zero in a 10 Å box, no periodicity."""
    rng = np.random.default_rng(7)
    atoms = ase.Atoms("NaClNaClNaCl", positions=rng.uniform(0.0, 10.0, (6, 3)), cell=np.eye(3) * 10.0)
    charges = rng.normal(size=6)
    return atoms, torch.tensor(charges - charges.mean(), dtype=torch.float64)


def distorted_nacl() -> tuple[ase.Atoms, torch.Tensor]:
    atoms, charges = nacl()
    rng = np.random.default_rng(3)
    atoms.set_cell(atoms.cell.array @ (np.eye(3) + rng.uniform(-0.05, 0.05, (3, 3))), scale_atoms=True)
    atoms.positions += rng.normal(scale=0.1, size=atoms.positions.shape)
    return atoms, charges * torch.tensor([1.0, 0.9, 1.1, 0.8, 1.0, 1.2, 0.95, 1.05], dtype=torch.float64)


def to_graph(structures: list[tuple[ase.Atoms, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """A batch of structures with their charges under keys.CHARGES and no short-range edges."""
    f64 = torch.float64
    return {
        keys.POSITIONS: torch.cat([torch.tensor(a.positions, dtype=f64) for a, _ in structures]),
        keys.CELL: torch.stack([torch.tensor(a.cell.array, dtype=f64) for a, _ in structures]),
        keys.PBC: torch.stack([torch.tensor(a.pbc) for a, _ in structures]),
        keys.BATCH: torch.cat([torch.full((len(a),), g) for g, (a, _) in enumerate(structures)]),
        keys.N_ATOMS: torch.tensor([len(a) for a, _ in structures]),
        keys.CHARGES: torch.cat([q for _, q in structures]),
        keys.EDGE_INDEX: torch.zeros((2, 0), dtype=torch.int64),
        keys.CELL_SHIFTS: torch.zeros((0, 3), dtype=f64),
    }


class CoulombModel(nn.Module):
    """The Coulomb term alone as a ForceField model (charges read from the graph)."""

    cutoff = 0.0
    species = (11, 17)

    def __init__(self, coulomb: Coulomb) -> None:
        super().__init__()
        self.coulomb = coulomb

    def forward(self, graph: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {keys.ATOMIC_ENERGIES: self.coulomb(graph, graph[keys.CHARGES])}


def energy(coulomb: Coulomb, structure: tuple[ase.Atoms, torch.Tensor]) -> float:
    return float(coulomb(to_graph([structure])).sum())


@pytest.mark.parametrize("method", ["ewald", "pme"])
def test_madelung_energy_of_rock_salt(method: str) -> None:
    coulomb = Coulomb(method=method, accuracy=1e-6)
    reference = -4 * K_E * MADELUNG_NACL / (A_NACL / 2)  # 4 ion pairs, E_pair = -k_e M / r0
    assert reference == pytest.approx(-35.694066, rel=1e-6)
    cell_energy = energy(coulomb, nacl())
    assert abs(cell_energy - reference) < 1e-6 * abs(reference)
    supercell_energy = energy(coulomb, nacl(2))
    assert abs(supercell_energy - 8 * reference) < 1e-6 * abs(8 * reference)
    assert abs(supercell_energy - 8 * cell_energy) < 1e-6 * abs(8 * cell_energy)


def test_cluster_equals_pair_sum() -> None:
    atoms, charges = cluster()
    q = charges.tolist()
    reference = sum(
        K_E * q[i] * q[j] / np.linalg.norm(atoms.positions[i] - atoms.positions[j])
        for i, j in itertools.combinations(range(len(atoms)), 2)
    )
    per_atom = Coulomb()(to_graph([(atoms, charges)]))
    assert per_atom.shape == (6,)
    assert abs(float(per_atom.sum()) - reference) < 1e-10


def test_net_charge_uses_neutralising_background() -> None:
    """With the background the energy of a charged cell does not depend on the splitting σ."""
    atoms, charges = distorted_nacl()
    charged = (atoms, charges + 0.3)
    energies = [
        energy(Coulomb(method="ewald", smearing=s, lr_wavelength=0.25, real_space_cutoff=12.0), charged)
        for s in (1.0, 1.4)
    ]
    assert abs(energies[0] - energies[1]) < 1e-8


def finite_difference_forces(coulomb: Coulomb, structure: tuple[ase.Atoms, torch.Tensor]) -> np.ndarray:
    atoms, charges = structure
    h = 1e-4
    forces = np.zeros((len(atoms), 3))
    for a, k in itertools.product(range(len(atoms)), range(3)):
        shifted = []
        for sign in (1.0, -1.0):
            moved = atoms.copy()
            moved.positions[a, k] += sign * h
            shifted.append(energy(coulomb, (moved, charges)))
        forces[a, k] = -(shifted[0] - shifted[1]) / (2 * h)
    return forces


@pytest.mark.parametrize("kind", ["periodic", "cluster"])
def test_forces_are_energy_derivatives(kind: str) -> None:
    structure = distorted_nacl() if kind == "periodic" else cluster()
    coulomb = Coulomb(method="ewald", accuracy=1e-10)
    out = ForceField(CoulombModel(coulomb))(to_graph([structure]), forces=True)
    reference = finite_difference_forces(coulomb, structure)
    assert np.abs(out[keys.FORCES].detach().numpy() - reference).max() < 1e-6


def test_stress_is_strain_derivative() -> None:
    atoms, charges = distorted_nacl()
    coulomb = Coulomb(method="ewald", accuracy=1e-10)
    out = ForceField(CoulombModel(coulomb))(to_graph([(atoms, charges)]), forces=False, stress=True)
    h = 1e-5
    reference = np.zeros((3, 3))
    for a, b in itertools.product(range(3), range(3)):
        shifted = []
        for sign in (1.0, -1.0):
            strain = np.zeros((3, 3))
            strain[a, b] += 0.5 * sign * h
            strain[b, a] += 0.5 * sign * h
            deformed = atoms.copy()
            deformed.set_cell(atoms.cell.array @ (np.eye(3) + strain), scale_atoms=True)
            shifted.append(energy(coulomb, (deformed, charges)))
        reference[a, b] = (shifted[0] - shifted[1]) / (2 * h) / atoms.get_volume()
    assert np.abs(out[keys.STRESS][0].detach().numpy() - reference).max() < 1e-6


def test_batch_equals_separate_structures() -> None:
    structures = [distorted_nacl(), cluster()]
    coulomb = Coulomb(method="ewald")
    per_atom = coulomb(to_graph(structures))
    batch = to_graph(structures)[keys.BATCH]
    for g, structure in enumerate(structures):
        alone = coulomb(to_graph([structure]))
        assert torch.allclose(per_atom[batch == g], alone, rtol=0, atol=1e-12)


def test_bad_input_raises() -> None:
    atoms, charges = nacl()
    atoms.pbc = [True, True, False]
    with pytest.raises(ValueError, match="mixed periodicity"):
        Coulomb()(to_graph([(atoms, charges)]))
    atoms, charges = nacl()
    with pytest.raises(ValueError, match=r"\[8, 1\]"):
        Coulomb()(to_graph([(atoms, charges)]), charges[:, None])
    with pytest.raises(ValueError, match="method"):
        Coulomb(method="p3m")


WIDTHS = {11: 0.8, 17: 1.3}  # Å


def with_numbers(graph: dict[str, torch.Tensor], atoms: ase.Atoms) -> dict[str, torch.Tensor]:
    return {**graph, keys.ATOMIC_NUMBERS: torch.tensor(atoms.numbers)}


def test_gaussian_charges_equal_the_erf_pair_sum() -> None:
    """E = Σ_{i<j} k_e q_i q_j erf(r/γ_ij)/r + Σ_i k_e q_i²/(2σ_i√π), γ_ij = √(2(σ_i² + σ_j²))."""
    from scipy.special import erf

    atoms, charges = cluster()
    q, s = charges.numpy(), np.array([WIDTHS[z] for z in atoms.numbers])
    reference = sum(K_E * q**2 / (2 * s * np.sqrt(np.pi)))
    for i, j in itertools.combinations(range(len(atoms)), 2):
        r = np.linalg.norm(atoms.positions[i] - atoms.positions[j])
        reference += K_E * q[i] * q[j] * erf(r / np.sqrt(2 * (s[i] ** 2 + s[j] ** 2))) / r
    energy = float(
        Coulomb(widths={"Na": 0.8, "Cl": 1.3})(with_numbers(to_graph([(atoms, charges)]), atoms)).sum()
    )
    assert abs(energy - reference) < 1e-10
    # σ → 0: point charges plus the (diverging) self energies
    tiny = {11: 1e-4, 17: 2e-4}
    self_energy = sum(K_E * q**2 / (2 * np.array([tiny[z] for z in atoms.numbers]) * np.sqrt(np.pi)))
    point = float(Coulomb()(to_graph([(atoms, charges)])).sum())
    small = float(Coulomb(widths=tiny)(with_numbers(to_graph([(atoms, charges)]), atoms)).sum())
    assert abs(small - self_energy - point) < 1e-10


def test_periodic_gaussian_charges_ewald_equals_pme_and_forces_stress_are_exact() -> None:
    atoms, charges = distorted_nacl()
    graph = with_numbers(to_graph([(atoms, charges)]), atoms)
    energies = [float(Coulomb(method=m, accuracy=1e-9, widths=WIDTHS)(graph).sum()) for m in ("ewald", "pme")]
    assert abs(energies[0] - energies[1]) < 1e-7 * abs(energies[0])
    point = float(Coulomb(method="ewald", accuracy=1e-9)(graph).sum())
    assert abs(energies[0] - point) > 0.1  # the widths matter at these distances

    class Model(CoulombModel):
        def forward(self, g):
            return {keys.ATOMIC_ENERGIES: self.coulomb(g, g[keys.CHARGES])}

    coulomb = Coulomb(method="ewald", accuracy=1e-10, widths=WIDTHS, exclusion_radius=3.0)
    out = ForceField(Model(coulomb))(graph, forces=True, stress=True)
    h = 1e-5
    for a, k in ((0, 0), (3, 2), (5, 1)):
        shifted = []
        for sign in (1.0, -1.0):
            moved = atoms.copy()
            moved.positions[a, k] += sign * h
            shifted.append(float(coulomb(with_numbers(to_graph([(moved, charges)]), moved)).sum()))
        assert abs(float(out[keys.FORCES][a, k]) + (shifted[0] - shifted[1]) / (2 * h)) < 1e-6
    strain = np.zeros((3, 3))
    strain[0, 1] = strain[1, 0] = 0.5 * h
    values = []
    for sign in (1.0, -1.0):
        deformed = atoms.copy()
        deformed.set_cell(atoms.cell.array @ (np.eye(3) + sign * strain), scale_atoms=True)
        values.append(float(coulomb(with_numbers(to_graph([(deformed, charges)]), deformed)).sum()))
    reference = (values[0] - values[1]) / (2 * h) / atoms.get_volume()
    assert abs(float(out[keys.STRESS][0, 0, 1]) - reference) < 1e-6


def test_exclusion_radius_switches_off_near_pairs() -> None:
    """Molecules: equal to torch-pme's direct sum with the same exclusion_radius; periodic: the
    exclusion changes a small cluster in a large box exactly as it changes the isolated cluster."""
    import torchpme

    atoms, charges = cluster()
    n = len(atoms)
    pairs = torch.triu_indices(n, n, 1).T
    positions = torch.tensor(atoms.positions)
    distances = torch.linalg.norm(positions[pairs[:, 1]] - positions[pairs[:, 0]], dim=1)
    potential = torchpme.CoulombPotential(exclusion_radius=6.0, exclusion_degree=2, prefactor=K_E)
    half = torchpme.Calculator(potential).double()(
        charges=charges[:, None], cell=torch.zeros(3, 3, dtype=torch.float64), positions=positions,
        neighbor_indices=pairs, neighbor_distances=distances,
    )  # fmt: skip
    reference = float((charges * half[:, 0]).sum())
    graph = to_graph([(atoms, charges)])
    excluded = float(Coulomb(exclusion_radius=6.0, exclusion_degree=2)(graph).sum())
    assert abs(excluded - reference) < 1e-10
    change = excluded - float(Coulomb()(graph).sum())
    assert abs(change) > 0.1
    box = atoms.copy()
    box.cell, box.pbc = np.eye(3) * 40.0, True
    periodic = [
        float(Coulomb(method="ewald", accuracy=1e-9, **kw)(to_graph([(box, charges)])).sum())
        for kw in ({"exclusion_radius": 6.0, "exclusion_degree": 2}, {})
    ]
    assert abs(periodic[0] - periodic[1] - change) < 1e-7


def test_net_charge_warns_once() -> None:
    import warnings

    atoms, charges = distorted_nacl()
    coulomb = Coulomb(method="ewald")
    with pytest.warns(UserWarning, match="net charge 0.4 e.*neutralising background"):  # 0.1 + 0.3
        coulomb(to_graph([(atoms, charges + 0.3 / len(atoms))]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        coulomb(to_graph([(atoms, charges + 0.3 / len(atoms))]))  # said once per instance
        Coulomb(method="ewald", warn_net_charge=False)(to_graph([(atoms, charges + 0.1)]))
        Coulomb()(to_graph([cluster()]))  # a neutral cell or a molecule: nothing to say
    with pytest.raises(ValueError, match=r"no Gaussian width for element\(s\) \[17\]"):
        Coulomb(widths={"Na": 1.0})(with_numbers(to_graph([(atoms, charges)]), atoms))
    with pytest.raises(ValueError, match=r"widths\['Na'\] = -1.0"):
        Coulomb(widths={"Na": -1.0})


@pytest.mark.parametrize("method", ["ewald", "pme"])
def test_ewald_parameters_depend_on_the_cell_only(method: str) -> None:
    """Parameters tuned for unit charges: predicted charges that change from step to step (MD,
    training) never change σ, the cutoff or k_max, so the energy has no jumps along a trajectory."""
    coulomb = Coulomb(method=method, accuracy=1e-6)
    cell = torch.eye(3, dtype=torch.float64) * 9.0
    rng = np.random.default_rng(0)
    charges = [torch.tensor(rng.normal(0, s, 24)) for s in (0.03, 0.5, 1.0)] + [torch.zeros(24)]
    params = {coulomb.ewald_parameters(q, cell) for q in charges}
    assert len(params) == 1
    assert coulomb.ewald_parameters(torch.ones(48), cell) != params.pop()  # the atom count counts
