"""An equivariant model evaluated only where it must be: the energies of some atoms (a LAMMPS rank's
own atoms) and their receptive field.

With T message-passing layers an atom's energy depends on atoms up to T hops away (a hop: an edge,
r < r_c), and the features of layer t matter only on atoms within T − 1 − t hops of an atom whose
energy is wanted. A domain-decomposed run holds ghost atoms out to T·r_c from its own; updating all
of them in every layer (what a plain graph does) costs several times the work of its own atoms. Given
the atoms each layer updates (``keys.LAYER_CENTRES``: index tensors C_0 ⊇ C_1 ⊇ … ⊇ C_{T−1}), layer t
computes A, B and h only on C_t, from neighbour features that layer t − 1 left on C_{t−1}:

    h_i^(t+1) = update_t(B_t(A_t(h^(t)_{N(i)})), h_i^(t)),   i ∈ C_t,

and the energy of i ∈ C_{T−1} is Σ_t readout_t(h_i^(t+1)) scaled and shifted as in the full model.
Those energies equal the full graph's to round-off (tests/test_equivariant.py); every other atom's
energy is 0. Sizes come only from the index tensors' shapes, so a traced model (``torch.export``)
has no relation between them to guard.
"""

from __future__ import annotations

import torch
from torch import nn

from .. import keys
from .reference import switch, switched


def layer_centres(
    graph: dict[str, torch.Tensor], num_layers: int, key: str = keys.LAYER_CENTRES
) -> list[torch.Tensor] | None:
    """The ``keys.LAYER_CENTRES`` index tensors of ``graph`` (or those of another per-layer ``key``,
    e.g. ``keys.LAYER_CHUNKS``), one per layer, or None when it has none."""
    if key + "_0" not in graph:
        return None
    out: list[torch.Tensor] = []
    for t in range(num_layers):
        out.append(graph[key + "_" + str(t)])
    return out


def run_on_centres(
    model: nn.Module, graph: dict[str, torch.Tensor], centres: list[torch.Tensor]
) -> torch.Tensor:
    """Atomic energies ``[n_atoms]`` of an :class:`~nearsight.models.equivariant.EquivariantPotential`
    (one state, no charge head) for the atoms of ``centres[-1]``, 0 elsewhere (module docstring)."""
    from ..nn import is_tracing
    from .chunked import chunk_atoms, chunked_layer

    element = model.elements(graph[keys.ATOMIC_NUMBERS])
    vectors = graph[keys.EDGE_VECTORS]
    edge_index = graph[keys.EDGE_INDEX]
    n = element.shape[0]
    traced = is_tracing()
    n_slots = graph[keys.NEIGHBOUR_SLOTS].shape[0] if traced else -1
    pad, n_nb = model.neighbour_layout(edge_index[0], n, n_slots)
    slots = pad.view(n, n_nb)  # each atom's edge rows, padded with the dummy row E
    # per edge once (the dummy edge lies beyond the cutoff: its radial weights are 0), gathered per layer
    dummy = torch.cat([vectors.new_full((1, 1), 2.0 * model.cutoff), vectors.new_zeros(1, 2)], 1)
    Y, radial = model._edges(torch.cat([vectors, dummy]))  # [E + 1, sh_dim], [E + 1, n_radial]
    neighbour = torch.cat([edge_index[1], edge_index[1].new_zeros(1)])
    onehot = torch.nn.functional.one_hot(element, len(model.species)).to(vectors.dtype)
    h = [model.embedding.index_select(0, element)[:, None, :]]  # [n, 1, C] 0e
    energy = vectors.new_zeros(n, 1)
    inv_nb = 1.0 / model.avg_num_neighbours
    chunks = layer_centres(graph, model.num_layers, keys.LAYER_CHUNKS) if traced else None
    for t, layer in enumerate(model.layers):
        c = centres[t]
        if chunks is not None:  # shape-static, in chunks of S atoms (nearsight.models.chunked)
            scalars, *gated = chunked_layer(
                layer, h, Y, radial, slots, neighbour, onehot, c, chunks[t], chunk_atoms(model), inv_nb
            )
            readout = scalars @ model.readouts[t] if t < model.num_layers - 1 else model.readout_mlp(scalars)
            energy = energy.index_add(0, c, readout)
            h = [x.new_zeros((n,) + x.shape[1:]).index_copy(0, c, x) for x in gated]
            continue
        m = c.shape[0]
        rows = slots.index_select(0, c).reshape(-1)  # [m * n_nb]
        G = Y.index_select(0, rows).view(m, n_nb, Y.shape[1])
        hidden = layer.radial.hidden(radial.index_select(0, rows))
        onehot_c = onehot.index_select(0, c)
        nbr = neighbour.index_select(0, rows)
        A = [a * inv_nb for a in layer.convolution(h, G, hidden, nbr, onehot_c, chunked=not traced)]
        if traced:
            B = layer.traced_symmetric_product(torch.cat(A, 1), onehot_c)
        else:
            B = layer.symmetric_product(torch.cat(A, 1), element.index_select(0, c))
        h_new = layer.update(B, [x.index_select(0, c) for x in h], onehot_c)
        scalars = h_new[layer.scalar_index][:, 0]
        if t < model.num_layers - 1:
            energy = energy.index_add(0, c, scalars @ model.readouts[t])
        else:
            energy = energy.index_add(0, c, model.readout_mlp(scalars))
        # the next layer reads its neighbours' rows, all of them in c; other rows stay 0
        h = [x.new_zeros((n,) + x.shape[1:]).index_copy(0, c, x) for x in layer.apply_gate(h_new)]
    own = centres[len(centres) - 1]
    z = element.index_select(0, own)
    e = energy.index_select(0, own).squeeze(-1) * model.energy_scale[z] + model.energy_shift[z]
    if model._isolated_reference():  # an isolated atom at E0_Z
        e = switched(model.isolated_energy[z], switch(graph, model.cutoff).index_select(0, own), e)
    return e.new_zeros(n).index_copy(0, own, e)
