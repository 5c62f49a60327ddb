"""Neighbour lists with vesin and conversion of frames to graph dictionaries.

The neighbour search returns integer cell shifts ``S_ij``; edge vectors are
*not* taken from the search but recomputed in torch as
``r_ij = R_j - R_i + S_ij @ cell`` so that forces and stress are exact
gradients of the energy.  Any triclinic cell, mixed or no periodicity, cells
smaller than twice the cutoff (several images of one neighbour) and one-atom
cells are handled by vesin.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
import vesin

from .. import keys
from .frame import Frame


def neighbour_list(
    positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, cutoff: float
) -> tuple[np.ndarray, np.ndarray]:
    """Full neighbour list within ``cutoff``.

    Returns ``edge_index`` ``[2, n_edges]`` (centre i, neighbour j; sorted by i)
    and integer ``shifts`` ``[n_edges, 3]`` with ``r_ij = R_j - R_i + S_ij @ cell``.
    """
    positions = np.ascontiguousarray(positions, dtype=np.float64)
    pbc = np.asarray(pbc, dtype=bool).reshape(3)
    box = np.asarray(cell, dtype=np.float64).reshape(3, 3)
    if not pbc.any():
        box = np.zeros((3, 3))
    calculator = vesin.NeighborList(cutoff=float(cutoff), full_list=True, sorted=True)
    i, j, shifts = calculator.compute(positions, box, pbc.tolist(), quantities="ijS")
    edge_index = np.stack([i.astype(np.int64), j.astype(np.int64)])
    return edge_index, shifts.astype(np.int64)


def _extra_labels(
    frame: Frame, shapes: Mapping[str, Sequence[int]], dtype: torch.dtype
) -> dict[str, torch.Tensor]:
    """``ref_<name>`` (zeros where absent) and its mask ``has_<name>`` for each extra label."""
    out = {}
    for name, shape in shapes.items():
        lead = (frame.n_atoms,) if keys.field(name).per == "atom" else (1,)
        value = frame.labels.get(name)
        if value is None:
            out[keys.label_key(name)] = torch.zeros((*lead, *shape), dtype=dtype)
        else:
            out[keys.label_key(name)] = torch.as_tensor(value, dtype=dtype).reshape(*lead, *shape)
        out[keys.mask_key(name)] = torch.tensor([value is not None])
    return out


def _labels(frame: Frame, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    n = frame.n_atoms
    has_e = frame.energy is not None
    has_f = frame.forces is not None
    has_s = frame.stress is not None
    return {
        keys.REF_ENERGY: torch.tensor([frame.energy if has_e else 0.0], dtype=dtype),
        keys.REF_FORCES: torch.as_tensor(frame.forces, dtype=dtype)
        if has_f
        else torch.zeros((n, 3), dtype=dtype),
        keys.REF_STRESS: torch.as_tensor(frame.stress, dtype=dtype).reshape(1, 3, 3)
        if has_s
        else torch.zeros((1, 3, 3), dtype=dtype),
        keys.HAS_ENERGY: torch.tensor([has_e]),
        keys.HAS_FORCES: torch.tensor([has_f]),
        keys.HAS_STRESS: torch.tensor([has_s]),
        keys.WEIGHT: torch.tensor([frame.weight], dtype=dtype),
    }


def frame_to_graph(
    frame: Frame,
    cutoff: float,
    dtype: torch.dtype = torch.float64,
    labels: bool = True,
    extra_labels: Mapping[str, Sequence[int]] | None = None,
) -> dict[str, torch.Tensor]:
    """One structure as a graph dict (a batch of one) with neighbour list.

    ``extra_labels`` (``{field: trailing shape}``, see :func:`~nearsight.data.validate.label_shapes`)
    adds ``ref_<field>`` and ``has_<field>`` for labels beyond energy/forces/stress, with zeros and
    a false mask where the frame lacks one, so that every graph of a data set has the same keys.
    """
    edge_index, shifts = neighbour_list(frame.positions, frame.cell, frame.pbc, cutoff)
    n = frame.n_atoms
    graph = {
        keys.POSITIONS: torch.as_tensor(frame.positions, dtype=dtype),
        keys.ATOMIC_NUMBERS: torch.as_tensor(frame.numbers, dtype=torch.int64),
        keys.CELL: torch.as_tensor(frame.cell, dtype=dtype).reshape(1, 3, 3),
        keys.PBC: torch.as_tensor(frame.pbc, dtype=torch.bool).reshape(1, 3),
        keys.BATCH: torch.zeros(n, dtype=torch.int64),
        keys.N_ATOMS: torch.tensor([n], dtype=torch.int64),
        keys.EDGE_INDEX: torch.as_tensor(edge_index),
        keys.CELL_SHIFTS: torch.as_tensor(shifts, dtype=dtype),
        keys.TOTAL_CHARGE: torch.tensor([frame.total_charge], dtype=dtype),
        keys.EXTERNAL_FIELD: torch.as_tensor(external_field(frame), dtype=dtype).reshape(1, 3),
        keys.SPIN_MULTIPLICITY: torch.tensor([frame.spin_multiplicity], dtype=dtype),
    }
    if labels:
        graph.update(_labels(frame, dtype))
        graph.update(_extra_labels(frame, extra_labels or {}, dtype))
    return graph


def atoms_to_graph(atoms, cutoff: float, dtype: torch.dtype = torch.float64) -> dict[str, torch.Tensor]:
    """Graph of an ``ase.Atoms`` without labels (for inference); total charge and spin multiplicity
    from ``atoms.info["charge"]`` (0 where absent) and ``atoms.info["multiplicity"]`` (1), checked."""
    from .label_keys import LabelKeys, electronic_inputs
    from .validate import check_electronic_state

    charge, multiplicity, given = electronic_inputs(atoms.info, LabelKeys(), "atoms.info")
    frame = Frame(
        numbers=atoms.numbers,
        positions=atoms.positions,
        cell=atoms.cell.array,
        pbc=atoms.pbc,
        total_charge=charge,
        spin_multiplicity=multiplicity,
        inputs_given=given,
        source="<atoms>",
    )
    check_electronic_state(frame)
    if "external_field" in atoms.info:  # V/Å, read by frame_to_graph
        frame.info["external_field"] = atoms.info["external_field"]
    return frame_to_graph(frame, cutoff, dtype, labels=False)


def external_field(frame: Frame) -> np.ndarray:
    """The uniform external electric field E ``[3]`` (V/Å) of a frame: ``info["external_field"]``
    (three numbers; zeros where absent)."""
    value = frame.info.get("external_field")
    if value is None:
        return np.zeros(3)
    try:
        field = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        field = np.empty(0)
    if field.shape != (3,) or not np.isfinite(field).all():
        raise ValueError(f"{frame.where}: external_field = {value!r} must be three finite numbers (V/Å)")
    return field


def collate(graphs: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Concatenate single- or multi-structure graphs into one batch."""
    if len(graphs) == 1:
        return dict(graphs[0])
    out: dict[str, torch.Tensor] = {}
    atom_offset = 0
    graph_offset = 0
    edges, batches = [], []
    for g in graphs:
        edges.append(g[keys.EDGE_INDEX] + atom_offset)
        batches.append(g[keys.BATCH] + graph_offset)
        atom_offset += g[keys.POSITIONS].shape[0]
        graph_offset += g[keys.N_ATOMS].shape[0]
    out[keys.EDGE_INDEX] = torch.cat(edges, dim=1)
    out[keys.BATCH] = torch.cat(batches)
    for key in graphs[0]:
        if key in out:
            continue
        out[key] = torch.cat([g[key] for g in graphs], dim=0)
    return out


def graph_to(graph: dict[str, torch.Tensor], dtype: torch.dtype | None = None, device=None) -> dict:
    """Move a graph to a device and cast its floating tensors to ``dtype``."""
    out = {}
    for key, value in graph.items():
        if dtype is not None and value.is_floating_point():
            value = value.to(dtype)
        out[key] = value.to(device) if device is not None else value
    return out
