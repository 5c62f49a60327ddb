"""Enumeration of angular triplets (j, i, k) from a neighbour list."""

from __future__ import annotations

import torch


def unordered_edge_pairs(centres: torch.Tensor, n_atoms: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All pairs of edges (a, b), a < b, that share a centre atom.

    ``centres`` ``[n_edges]`` must be sorted (edges grouped by centre).
    Returns two index tensors ``[n_triplets]`` into the edge list.  Memory and
    time are linear in the number of triplets.
    """
    n_edges = centres.shape[0]
    device = centres.device
    # (a scatter, not bincount: its length does not depend on the values, so it traces for export)
    counts = torch.zeros(n_atoms, dtype=torch.int64, device=device).index_add_(
        0, centres, torch.ones_like(centres)
    )  # [n_atoms]
    first = torch.cumsum(counts, 0) - counts  # [n_atoms] first edge of each centre
    edge = torch.arange(n_edges, device=device)
    local = edge - first[centres]  # position of the edge within its centre
    n_partners = counts[centres] - 1 - local  # partners b > a with the same centre
    a = torch.repeat_interleave(edge, n_partners)
    start = torch.cumsum(n_partners, 0) - n_partners
    step = torch.arange(a.shape[0], device=device) - torch.repeat_interleave(start, n_partners)
    b = a + 1 + step
    return a, b
