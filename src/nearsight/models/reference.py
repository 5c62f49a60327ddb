"""The per-atom reference energy both model types add to their learned part, and the switch that
turns a learned part off as an atom loses its neighbours.

    ε_i^ref = E0_Z + (e_Z − E0_Z) φ_i,    φ_i = c_i / c̄_Z,    c_i = Σ_j f_c(r_ij)
    g_i     = 1 − exp(−c_i / c_0),        c_0 = 0.1

E0_Z is the energy of an isolated atom of element Z (the reference energies the user gives, or
the least-squares per-element energies), e_Z the mean energy per atom of Z in the training data
(E0_Z plus the mean residual per atom), c_i a smooth coordination number (cosine cutoff at the
model's cutoff) and c̄_Z its mean over the training atoms of Z.  In a typical environment
ε^ref ≈ e_Z, the good starting point the networks learn corrections to; an atom without
neighbours gets exactly E0_Z, so dissociation limits are right, when the learned part vanishes
for it: the equivariant model's does by construction (no neighbours, no messages); the descriptor
networks are multiplied by g, which is 1 within 1e-10 for the atoms of a molecule or a solid
(c ≳ 2.3), 1 − 8e-5 for one neighbour at 15 % of the cutoff (H₂ with r_c = 5 Å), 0.97 at 60 %,
and goes smoothly to 0 with the last neighbour (f_c and so c are smooth at r_c).  Files
written before the isolated-atom reference existed have c̄ = 0 and E0 = 0: then φ = g = 1 and
ε^ref = e_Z, their behaviour.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .. import keys
from ..nn import cosine_cutoff, scatter_sum


def coordination(graph: dict[str, torch.Tensor], cutoff: float) -> torch.Tensor:
    """c_i = Σ_j f_c(r_ij) ``[n_atoms]`` (cosine cutoff: smooth at r_c)."""
    r = torch.linalg.vector_norm(graph[keys.EDGE_VECTORS], dim=-1)  # [n_edges]
    n = graph[keys.ATOMIC_NUMBERS].shape[0]
    return scatter_sum(cosine_cutoff(r, cutoff), graph[keys.EDGE_INDEX][0], n)


def reference_energy(
    typical: torch.Tensor, isolated: torch.Tensor, mean_coordination: torch.Tensor, c: torch.Tensor
) -> torch.Tensor:
    """ε^ref ``[n_atoms]`` from each atom's e_Z, E0_Z, c̄_Z and c_i (all ``[n_atoms]``)."""
    phi = torch.where(mean_coordination > 0, c / mean_coordination.clamp(min=1e-12), torch.ones_like(c))
    return isolated + (typical - isolated) * phi


SWITCH_COORDINATION = 0.1  # c_0: g = 1 − exp(−c / c_0)


def switch(c: torch.Tensor) -> torch.Tensor:
    """g = 1 − exp(−c / c_0) ``[n_atoms]``: 0 for an atom without neighbours, ≈ 1 with one."""
    return -torch.expm1(-c / SWITCH_COORDINATION)


@torch.no_grad()
def mean_coordination(
    graphs: Sequence[dict[str, torch.Tensor]], cutoff: float, z_to_index: torch.Tensor, n_elements: int
) -> torch.Tensor:
    """c̄_Z ``[n_elements]`` over the atoms of ``graphs`` (graphs carry ``keys.EDGE_VECTORS``
    or the inputs to compute them)."""
    from .forcefield import edge_vectors

    total = torch.zeros(n_elements, dtype=torch.float64)
    count = torch.zeros(n_elements, dtype=torch.float64)
    for g in graphs:
        g = dict(g)
        if keys.EDGE_VECTORS not in g:
            g[keys.EDGE_VECTORS] = edge_vectors(
                g[keys.POSITIONS], g[keys.CELL], g[keys.BATCH], g[keys.EDGE_INDEX], g[keys.CELL_SHIFTS]
            )
        element = z_to_index[g[keys.ATOMIC_NUMBERS]]
        total.index_add_(0, element, coordination(g, cutoff).double())
        count.index_add_(0, element, torch.ones_like(element, dtype=torch.float64))
    return total / count.clamp(min=1)
