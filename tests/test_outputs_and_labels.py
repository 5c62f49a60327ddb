"""Named model outputs through ForceField (summed and differentiated as keys.py declares), and
labels beyond energy/forces/stress from the readers to the batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import molecule
from ase.io import write
from torch import nn

from nearsight import keys
from nearsight.data.frame import Frame
from nearsight.data.neighbours import atoms_to_graph, collate, frame_to_graph
from nearsight.data.readers import read_frames
from nearsight.data.validate import label_shapes, validate_frames
from nearsight.models.forcefield import ForceField
from nearsight.nn import scatter_sum


class TwoStates(nn.Module):
    """A pair potential with two 'electronic states' and per-atom charges, for the contract."""

    cutoff, species = 4.0, [1, 8]

    def forward(self, graph):
        r = torch.linalg.vector_norm(graph[keys.EDGE_VECTORS], dim=-1)  # [n_edges]
        i = graph[keys.EDGE_INDEX][0]
        n = graph[keys.POSITIONS].shape[0]
        pair = torch.stack([torch.exp(-r), 0.3 * torch.exp(-0.5 * r) * r], 1)  # [n_edges, 2]
        per_atom = scatter_sum(pair, i, n)  # [n_atoms, 2]
        n_graphs = graph[keys.CELL].shape[0]
        states = scatter_sum(per_atom, graph[keys.BATCH], n_graphs) + torch.tensor([0.0, 1.0])
        return {
            keys.ATOMIC_ENERGIES: per_atom[:, 0],
            keys.STATE_ENERGIES: states,  # [n_graphs, 2]
            keys.CHARGES: 0.1 * torch.tanh(per_atom[:, 1]),
        }


def test_forcefield_sums_and_differentiates_declared_outputs():
    atoms = molecule("H2O")
    atoms.positions += np.random.default_rng(0).normal(scale=0.05, size=(3, 3))
    ff = ForceField(TwoStates()).double()
    graphs = [atoms_to_graph(atoms, 4.0), atoms_to_graph(molecule("H2O"), 4.0)]
    out = ff(collate(graphs), forces=True)
    assert out[keys.STATE_ENERGIES].shape == (2, 2) and out[keys.CHARGES].shape == (6,)
    assert out[keys.STATE_FORCES].shape == (6, 2, 3)
    torch.testing.assert_close(out[keys.ENERGY], out[keys.STATE_ENERGIES][:, 0])  # sum_to of ε_i
    torch.testing.assert_close(out[keys.FORCES], out[keys.STATE_FORCES][:, 0])
    # finite differences of each state's energy on the first structure
    h, fd = 1e-5, np.zeros((3, 2, 3))
    for a in range(3):
        for x in range(3):
            e = []
            for sign in (1, -1):
                moved = atoms.copy()
                moved.positions[a, x] += sign * h
                e.append(
                    ff(atoms_to_graph(moved, 4.0), forces=False)[keys.STATE_ENERGIES][0].detach().numpy()
                )
            fd[a, :, x] = -(e[0] - e[1]) / (2 * h)
    np.testing.assert_allclose(out[keys.STATE_FORCES][:3].detach().numpy(), fd, atol=1e-8)
    assert keys.STATE_FORCES not in ff(graphs[0], forces=False)

    class Bare(nn.Module):
        cutoff, species = 4.0, [1, 8]

        def forward(self, graph):
            return graph[keys.POSITIONS].sum(-1)

    with pytest.raises(TypeError, match="must return a dict of named outputs with at least"):
        ForceField(Bare()).double()(graphs[0])


def test_fields_are_declared_once_with_shape_and_unit():
    assert keys.field(keys.CHARGES).describe() == "charges [n_atoms] float, e"
    assert keys.field(keys.STATE_FORCES).describe() == "state_forces [n_atoms, n_states, 3] float, eV/Å"
    assert keys.field(keys.ATOMIC_ENERGIES).sum_to == keys.ENERGY
    assert keys.label_key(keys.DIPOLE) == "ref_dipole" and keys.mask_key(keys.DIPOLE) == "has_dipole"
    assert keys.REF_FORCES == keys.label_key(keys.FORCES) and keys.HAS_STRESS == keys.mask_key(keys.STRESS)
    with pytest.raises(ValueError, match="already declared"):
        keys.declare(keys.CHARGES, "atom", (), "eV")
    with pytest.raises(KeyError, match="undeclared field 'charge'"):
        keys.field("charge")


def _labelled_waters(path, bad: dict | None = None) -> None:
    frames = []
    rng = np.random.default_rng(3)
    for k in range(4):
        atoms = molecule("H2O")
        atoms.positions += rng.normal(scale=0.05, size=(3, 3))
        atoms.info["energy"] = float(k)
        if k != 2:  # frame 2 carries neither extra label
            atoms.arrays["mulliken"] = np.array([-0.8, 0.4, 0.4]) + 0.01 * k
            atoms.info["dip"] = np.array([0.0, 0.0, 0.4 + k])
            atoms.info["states"] = np.array([0.0, 2.0 + k])
        frames.append(atoms)
    for key, (k, value) in (bad or {}).items():
        frames[k].info[key] = value
    write(path, frames)


def test_extra_labels_flow_from_the_file_to_the_batch(tmp_path):
    path = tmp_path / "waters.xyz"
    _labelled_waters(path)
    extra = {"charges": "mulliken", "dipole": "dip", "state_energies": "states"}
    frames = read_frames(path, extra_labels=extra)
    assert frames[1].labels["charges"].tolist() == pytest.approx([-0.79, 0.41, 0.41])
    assert frames[3].labels["dipole"].tolist() == [0.0, 0.0, 3.4] and frames[2].labels == {}
    assert "dip" not in frames[1].info and "mulliken" not in frames[1].info  # consumed as labels
    shapes = label_shapes(frames, extra)
    assert shapes == {"charges": (), "dipole": (3,), "state_energies": (2,)}
    batch = collate([frame_to_graph(f, 3.0, extra_labels=shapes) for f in frames])
    assert batch["ref_charges"].shape == (12,) and batch["ref_dipole"].shape == (4, 3)
    assert batch["ref_state_energies"].shape == (4, 2)
    assert batch["has_charges"].tolist() == [True, True, False, True]
    assert batch["ref_dipole"][2].tolist() == [0.0, 0.0, 0.0]  # zeros under a false mask
    back = frames[1].to_atoms()  # labels survive a round trip through ase.Atoms
    assert back.arrays["charges"].tolist() == pytest.approx([-0.79, 0.41, 0.41])
    assert back.info["dipole"].tolist() == [0.0, 0.0, 1.4]


def test_bad_extra_labels_name_the_file_frame_and_value(tmp_path):
    path = tmp_path / "bad.xyz"
    _labelled_waters(path, {"dip": (1, np.array([0.0, np.nan, 1.0]))})
    with pytest.raises(ValueError, match=r"bad.xyz', frame 1: dipole is not finite at \(1,\): nan"):
        read_frames(path, extra_labels={"dipole": "dip"})
    _labelled_waters(path, {"dip": (3, np.array([0.0, 1.0]))})
    with pytest.raises(
        ValueError, match=r"bad.xyz', frame 3: label 'dipole' has shape \(2,\), expected \(3,\)"
    ):
        read_frames(path, extra_labels={"dipole": "dip"})
    _labelled_waters(path, {"states": (3, np.array([0.0, 1.0, 2.0]))})
    with pytest.raises(ValueError, match=r"frame 3: label 'state_energies' has trailing shape \(3,\), but "
                       r"earlier frames have \(2,\) \(n_states\)"):  # fmt: skip
        read_frames(path, extra_labels={"state_energies": "states"})
    with pytest.raises(
        ValueError, match=r"extra label 'charge' is not a declared output field; declared: \["
    ):
        read_frames(path, extra_labels={"charge": "mulliken"})
    with pytest.raises(ValueError, match=r"extra label 'forces': use the reader's forces_key"):
        read_frames(path, extra_labels={"forces": "f"})
    frames = [Frame(numbers=[1, 1], positions=[[0, 0, 0], [0, 0, 1]], cell=np.zeros((3, 3)), pbc=False,
                    source="mem.xyz", index=7)]  # fmt: skip
    with pytest.raises(ValueError, match=r"required label 'charges' is missing in all 1 frames"):
        validate_frames(frames, require=("charges",))


def test_deepmd_systems_read_extra_labels_from_npy(tmp_path):
    root = tmp_path / "water"
    (root / "set.000").mkdir(parents=True)
    (root / "type.raw").write_text("0 1 1\n")
    (root / "type_map.raw").write_text("O H\n")
    (root / "nopbc").write_text("")
    atoms = molecule("H2O")
    coords = np.stack([atoms.positions + 0.01 * k for k in range(3)]).reshape(3, 9)
    np.save(root / "set.000" / "coord.npy", coords)
    np.save(root / "set.000" / "energy.npy", np.arange(3.0))
    np.save(root / "set.000" / "atomic_charge.npy", np.tile([-0.8, 0.4, 0.4], (3, 1)))
    frames = read_frames(root, extra_labels={"charges": "atomic_charge", "dipole": "dipole"})
    assert len(frames) == 3 and frames[2].labels["charges"].shape == (3,)
    assert "dipole" not in frames[0].labels  # no dipole.npy: the label is absent, not an error
