"""ZBL nuclear repulsion under the short-range model (nearsight.longrange.repulsion): the published
formula, the envelope's smooth end at the covalent radii, exact forces and stress through the
ForceField, model files and config, and D3 added to or removed from a model that has it."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.data import covalent_radii

from nearsight import keys
from nearsight.data.neighbours import atoms_to_graph
from nearsight.longrange.model import LongRangePotential
from nearsight.longrange.repulsion import ZBLRepulsion
from nearsight.models.bpnn import BehlerParrinello
from nearsight.models.forcefield import ForceField
from nearsight.models.io import model_from_dict, model_to_dict
from nearsight.training.config import ConfigError, validate_config
from nearsight.training.dispersion import with_dispersion, without_dispersion

pytestmark = pytest.mark.usefixtures("one_thread")
NA, CL = 11, 17


def _zbl_by_hand(r: float, z1: int, z2: int, p: int = 6) -> float:
    a = 0.46850 / (z1**0.23 + z2**0.23)
    x = r / a
    phi = (
        0.18175 * math.exp(-3.19980 * x)
        + 0.50986 * math.exp(-0.94229 * x)
        + 0.28022 * math.exp(-0.40290 * x)
        + 0.02817 * math.exp(-0.20162 * x)
    )
    u = r / (covalent_radii[z1] + covalent_radii[z2])
    if u >= 1:
        return 0.0
    f = 1 - (p + 1) * (p + 2) / 2 * u**p + p * (p + 2) * u ** (p + 1) - p * (p + 1) / 2 * u ** (p + 2)
    return 14.399645478425668 * z1 * z2 / r * phi * f


def _model() -> LongRangePotential:
    torch.manual_seed(0)
    desc = {"r_cut": 4.0, "g2_params": [[0.5, 0.0], [0.5, 1.5]], "g4_params": [[0.1, 1.0, 1.0]]}
    short = BehlerParrinello([NA, CL], desc, hidden=[8], charges=True)
    return LongRangePotential(short, {"accuracy": 1e-8}, None, repulsion={}).double().eval()


@pytest.mark.parametrize("r", [0.3, 1.0, 2.0, 2.6])
def test_dimer_energy_is_the_zbl_formula(r):
    graph = atoms_to_graph(Atoms([NA, CL], positions=[[0, 0, 0], [r, 0, 0]]), 4.0)
    out = ForceField(ZBLRepulsionOnly())(graph, forces=False)
    assert float(out[keys.ENERGY][0]) == pytest.approx(_zbl_by_hand(r, NA, CL), rel=1e-12, abs=1e-14)


class ZBLRepulsionOnly(torch.nn.Module):
    """ZBL alone as a per-atom model for ForceField."""

    species, cutoff = [NA, CL], 4.0

    def __init__(self) -> None:
        super().__init__()
        self.zbl = ZBLRepulsion().double()

    def forward(self, graph):  # noqa: ANN001, ANN201
        return {keys.ATOMIC_ENERGIES: self.zbl(graph)}


def test_the_wall_grows_without_bound_and_ends_smoothly():
    energies = [_zbl_by_hand(r, NA, CL) for r in (0.05, 0.1, 0.5, 1.0)]
    assert energies[0] > 1e4 and all(a > b for a, b in zip(energies, energies[1:]))
    r_max = covalent_radii[NA] + covalent_radii[CL]
    zbl = ZBLRepulsion().double()
    r = torch.tensor([r_max - 1e-3, r_max, r_max + 0.5], dtype=torch.float64, requires_grad=True)
    z1, z2 = torch.tensor([NA] * 3), torch.tensor([CL] * 3)
    e = zbl.pair_energy(r, z1, z2)
    (grad,) = torch.autograd.grad(e.sum(), r)
    assert float(e[1]) == 0.0 and float(e[2]) == 0.0
    assert (
        abs(float(e[0])) < 1e-8 and abs(float(grad[0])) < 1e-5
    )  # value and slope vanish as (r_max − r)³, (r_max − r)²


def test_long_range_model_with_repulsion_has_exact_forces_and_stress():
    model = _model()
    rng = np.random.default_rng(0)
    atoms = Atoms(
        [NA, CL] * 4, positions=rng.uniform(0, 5.5, (8, 3)), cell=np.diag([5.5, 5.6, 5.7]), pbc=True
    )
    ff = ForceField(model)
    out = ff(atoms_to_graph(atoms, model.cutoff), forces=True, stress=True)
    assert float(out["repulsion_energy"][0]) > 0  # some pairs inside the covalent radii sum
    forces = out[keys.FORCES].detach().numpy()

    def energy(a: Atoms) -> float:
        return float(ff(atoms_to_graph(a, model.cutoff), forces=False)[keys.ENERGY][0])

    h = 1e-5
    for i, k in [(0, 0), (3, 1), (6, 2)]:
        plus, minus = atoms.copy(), atoms.copy()
        plus.positions[i, k] += h
        minus.positions[i, k] -= h
        assert forces[i, k] == pytest.approx(-(energy(plus) - energy(minus)) / (2 * h), abs=1e-6)
    stress = out[keys.STRESS].detach().numpy().reshape(3, 3)
    strain = np.zeros((3, 3))
    strain[0, 1] = strain[1, 0] = h
    plus, minus = atoms.copy(), atoms.copy()
    plus.set_cell(atoms.cell.array @ (np.eye(3) + strain), scale_atoms=True)
    minus.set_cell(atoms.cell.array @ (np.eye(3) - strain), scale_atoms=True)
    fd = (energy(plus) - energy(minus)) / (2 * 2 * h) / atoms.get_volume()
    assert stress[0, 1] == pytest.approx(fd, abs=1e-6)


def test_model_files_and_dispersion_swaps_keep_the_repulsion():
    from nearsight import NearsightCalculator

    model = _model()
    atoms = Atoms([NA, CL], positions=[[0, 0, 0], [1.5, 0, 0]])
    atoms.calc = NearsightCalculator(model)
    atoms.get_potential_energy()
    assert atoms.calc.results["repulsion_energy"] == pytest.approx(_zbl_by_hand(1.5, NA, CL), rel=1e-10)
    loaded = model_from_dict(model_to_dict(model))
    assert loaded.repulsion is not None and loaded.get_config()["repulsion"] == {}
    with_d3 = with_dispersion(model, {"functional": "pbe"})
    assert with_d3.repulsion is model.repulsion and with_d3.short is model.short and model.dispersion is None
    back = without_dispersion(with_d3)
    assert back.dispersion is None and back.coulomb is model.coulomb and back.repulsion is model.repulsion


def test_repulsion_config_and_range_errors():
    base = {"data": {"train": "x"}}
    cfg = validate_config({**base, "model": {"longrange": {"repulsion": True}}})
    assert cfg["model"]["longrange"]["repulsion"] == {}
    with pytest.raises(ConfigError, match=r"model.longrange.repulsion: repulsion: scale = -1"):
        validate_config({**base, "model": {"longrange": {"repulsion": {"scale": -1}}}})
    short = BehlerParrinello([NA, CL], {"r_cut": 2.5, "g2_params": [[0.5, 0.0]], "g4_params": []}, hidden=[4])
    with pytest.raises(ValueError, match=r"r_max = 3.32.* exceeds the model's cutoff 2.5 Å"):
        LongRangePotential(short, repulsion={})
