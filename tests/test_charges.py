"""Charge heads on both backbones (issue 17, item 1): charges conserved exactly per structure,
the total charge read from the data, symmetric, saved and loaded with the model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import molecule
from ase.io import write
from scipy.spatial.transform import Rotation

from nearsight import keys
from nearsight.data.neighbours import atoms_to_graph, collate
from nearsight.data.readers import read_frames
from nearsight.models.bpnn import BehlerParrinello
from nearsight.models.equivariant import EquivariantPotential
from nearsight.models.forcefield import ForceField
from nearsight.models.io import model_from_dict, model_to_dict

SPECIES = [1, 6, 8]


def _bpnn() -> BehlerParrinello:
    torch.manual_seed(0)
    desc = {"r_cut": 4.0, "g2_params": [[0.5, 0.0], [0.5, 1.5]], "g4_params": [[0.1, 1.0, 1.0]]}
    return BehlerParrinello(SPECIES, desc, hidden=[8], charges=True).double()


def _equivariant() -> EquivariantPotential:
    torch.manual_seed(0)
    return EquivariantPotential(SPECIES, cutoff=4.0, channels=4, l_max=1, sh_l_max=2, correlation=2,
                                num_layers=2, radial_hidden=(8,), readout_hidden=4, charges=True).double()  # fmt: skip


def _structures():
    out = []
    for name, charge in (("CH3CH2OH", -1), ("H2O", 0), ("CH3OH", 1)):
        atoms = molecule(name)
        atoms.positions += np.random.default_rng(len(out)).normal(scale=0.05, size=atoms.positions.shape)
        atoms.info["charge"] = charge
        out.append(atoms)
    return out


@pytest.mark.parametrize("build", [_bpnn, _equivariant], ids=["bpnn", "equivariant"])
def test_charges_add_up_to_each_structures_total_charge(build):
    model = build().eval()
    structures = _structures()
    batch = collate([atoms_to_graph(a, model.cutoff) for a in structures])
    assert batch[keys.TOTAL_CHARGE].tolist() == [-1.0, 0.0, 1.0]
    out = ForceField(model)(batch, forces=True)
    q = out[keys.CHARGES].detach()
    sums = torch.zeros(3, dtype=q.dtype).index_add(0, batch[keys.BATCH], q)
    np.testing.assert_allclose(sums.numpy(), [-1.0, 0.0, 1.0], atol=1e-6)
    assert q.std() > 1e-3  # not trivially Q/N: the head predicts environment-dependent charges
    # one structure alone gives the same charges as in the batch
    alone = ForceField(model)(atoms_to_graph(structures[2], model.cutoff), forces=False)[keys.CHARGES]
    np.testing.assert_allclose(alone.detach().numpy(), q[-6:].numpy(), atol=1e-12)


@pytest.mark.parametrize("build", [_bpnn, _equivariant], ids=["bpnn", "equivariant"])
def test_charges_are_invariant_and_follow_permutations(build):
    model = build().eval()
    atoms = _structures()[0]
    ff = ForceField(model)
    q0 = ff(atoms_to_graph(atoms, model.cutoff), forces=False)[keys.CHARGES].detach().numpy()
    moved = atoms.copy()
    moved.positions = atoms.positions @ Rotation.random(random_state=1).as_matrix().T + [1.0, -2.0, 0.5]
    q1 = ff(atoms_to_graph(moved, model.cutoff), forces=False)[keys.CHARGES].detach().numpy()
    np.testing.assert_allclose(q1, q0, atol=1e-10)
    order = np.random.default_rng(2).permutation(len(atoms))
    q2 = ff(atoms_to_graph(atoms[order], model.cutoff), forces=False)[keys.CHARGES].detach().numpy()
    np.testing.assert_allclose(q2, q0[order], atol=1e-10)


@pytest.mark.parametrize("build", [_bpnn, _equivariant], ids=["bpnn", "equivariant"])
def test_charge_heads_are_saved_with_the_model(build):
    model = build().eval()
    loaded = model_from_dict(model_to_dict(model)).double().eval()
    assert loaded.get_config()["charges"] is True
    g = atoms_to_graph(_structures()[1], model.cutoff)
    a, b = ForceField(model)(g, forces=False), ForceField(loaded)(g, forces=False)
    torch.testing.assert_close(a[keys.CHARGES], b[keys.CHARGES], atol=0, rtol=0)
    plain = type(model).from_config({k: v for k, v in model.get_config().items() if k != "charges"})
    assert keys.CHARGES not in ForceField(plain.double().eval())(g, forces=False)


def test_total_charge_is_read_and_must_be_whole(tmp_path):
    structures = _structures()
    write(tmp_path / "ions.xyz", structures)
    frames = read_frames(tmp_path / "ions.xyz")
    assert [f.total_charge for f in frames] == [-1.0, 0.0, 1.0] and "charge" not in frames[0].info
    assert frames[2].to_atoms().info["charge"] == 1.0
    structures[1].info["charge"] = 0.5
    write(tmp_path / "bad.xyz", structures)
    with pytest.raises(ValueError, match=r"bad.xyz', frame 1: total charge 0.5 must be a whole number"):
        read_frames(tmp_path / "bad.xyz")
