"""Neighbour lists against ASE's, and graph batching."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule
from ase.neighborlist import neighbor_list

from nearsight import keys
from nearsight.data.frame import Frame
from nearsight.data.neighbours import collate, frame_to_graph, neighbour_list
from nearsight.models.forcefield import edge_vectors


def _pairs(i, j, shifts):
    return sorted(zip(i.tolist(), j.tolist(), map(tuple, np.asarray(shifts).tolist())))


def _structures():
    rng = np.random.default_rng(3)
    si = bulk("Si", "diamond", a=5.43)  # 2 atoms, cell far smaller than 2 r_c
    si.set_cell(si.cell.array @ (np.eye(3) + 0.1 * rng.normal(size=(3, 3))), scale_atoms=True)
    one = Atoms(
        "Cu", positions=[[0.1, 0.2, 0.3]], cell=[[2.5, 0, 0], [0.8, 2.4, 0], [0.3, 0.5, 2.6]], pbc=True
    )
    slab = bulk("Al", "fcc", a=4.05, cubic=True) * (2, 2, 1)
    slab.pbc = [True, False, True]
    slab.rattle(0.05, seed=1)
    mol = molecule("CH3CH2OH")
    wire = Atoms("C2", positions=[[0, 0, 0], [0.7, 0.6, 0.1]], cell=[1.3, 10, 10], pbc=[True, False, False])
    return {"si_small_triclinic": si, "one_atom": one, "slab_mixed": slab, "molecule": mol, "wire": wire}


@pytest.mark.parametrize("name", list(_structures()))
@pytest.mark.parametrize("cutoff", [2.0, 5.0])
def test_matches_ase(name, cutoff):
    atoms = _structures()[name]
    edge_index, shifts = neighbour_list(atoms.positions, atoms.cell.array, atoms.pbc, cutoff)
    i, j, s = neighbor_list("ijS", atoms, cutoff)
    assert _pairs(edge_index[0], edge_index[1], shifts) == _pairs(i, j, s)
    assert np.all(np.diff(edge_index[0]) >= 0)  # grouped by centre
    # edge vectors from positions, cell and integer shifts reproduce the distances
    graph = frame_to_graph(Frame.from_atoms(atoms), cutoff)
    vec = edge_vectors(
        graph[keys.POSITIONS],
        graph[keys.CELL],
        graph[keys.BATCH],
        graph[keys.EDGE_INDEX],
        graph[keys.CELL_SHIFTS],
    )
    d = torch.linalg.vector_norm(vec, dim=1).numpy()
    assert d.max(initial=0) < cutoff and (d.min(initial=1) > 0)


def test_several_images_of_one_neighbour():
    one = _structures()["one_atom"]
    edge_index, shifts = neighbour_list(one.positions, one.cell.array, one.pbc, 5.0)
    assert np.all(edge_index == 0) and len(np.unique(shifts, axis=0)) == shifts.shape[0] > 26


def test_collate_offsets_and_labels():
    a = Frame.from_atoms(molecule("H2O"), energy=-1.0, forces=np.ones((3, 3)))
    b = Frame.from_atoms(bulk("Si"), energy=-2.0, stress=np.eye(3))
    ga, gb = frame_to_graph(a, 3.0), frame_to_graph(b, 3.0)
    batch = collate([ga, gb])
    assert batch[keys.BATCH].tolist() == [0, 0, 0, 1, 1]
    assert batch[keys.EDGE_INDEX].shape[1] == ga[keys.EDGE_INDEX].shape[1] + gb[keys.EDGE_INDEX].shape[1]
    assert batch[keys.EDGE_INDEX][:, ga[keys.EDGE_INDEX].shape[1] :].min() >= 3
    assert batch[keys.HAS_FORCES].tolist() == [True, False]
    assert batch[keys.HAS_STRESS].tolist() == [False, True]
    assert batch[keys.REF_ENERGY].tolist() == [-1.0, -2.0]
    assert batch[keys.CELL].shape == (2, 3, 3)


def test_malloc_tuning_is_on_by_default_and_can_be_switched_off():
    import os
    import subprocess
    import sys
    from pathlib import Path

    code = "import nearsight, nearsight._malloc as m; print(m._tuned)"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    on = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    off = subprocess.run([sys.executable, "-c", code], env={**env, "NEARSIGHT_MALLOC_TUNING": "0"},
                         capture_output=True, text=True, check=True)  # fmt: skip
    assert on.stdout.strip() == ("True" if sys.platform.startswith("linux") else "False")
    assert off.stdout.strip() == "False"
