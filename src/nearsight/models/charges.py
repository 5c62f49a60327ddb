"""Atomic charges predicted by a model, conserved exactly per structure.

    q_i = q̃_i + (Q − Σ_{j ∈ s(i)} q̃_j) / N_{s(i)}

q̃_i are the raw charges of a charge head (a per-element network on the descriptors of a
Behler-Parrinello model, a scalar readout of the last layer of the equivariant model), Q the
total charge of the structure s(i) (``keys.TOTAL_CHARGE``; 0 where a graph does not carry it)
and N its number of atoms: the charges of every structure add up to its total charge exactly,
whatever the network predicts (Ko et al., Nat. Commun. 12, 398 (2021), the charge
equilibration of 4G-HDNNPs, uses the same constraint; here in its simplest form).
"""

from __future__ import annotations

import torch

from .. import keys


def total_charge(graph: dict[str, torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    """Q per structure ``[n_graphs]`` (e): ``graph[keys.TOTAL_CHARGE]``, or zeros."""
    n_graphs = graph[keys.N_ATOMS].shape[0]
    if keys.TOTAL_CHARGE in graph:
        return graph[keys.TOTAL_CHARGE].to(like.dtype)
    return like.new_zeros(n_graphs)


def conserve_charges(raw: torch.Tensor, graph: dict[str, torch.Tensor]) -> torch.Tensor:
    """q ``[n_atoms]`` from raw charges ``[n_atoms]``: Σ q = Q in every structure of ``graph``."""
    batch = graph[keys.BATCH]
    n_graphs = graph[keys.N_ATOMS].shape[0]
    excess = total_charge(graph, raw) - torch.zeros(n_graphs, dtype=raw.dtype, device=raw.device).index_add(
        0, batch, raw
    )  # [n_graphs]
    return raw + (excess / graph[keys.N_ATOMS].to(raw.dtype))[batch]
