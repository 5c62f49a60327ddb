"""The per-atom reference energy both model types add to their learned part, switched so that
an atom without neighbours has its isolated-atom energy exactly.

    ε_i = E0_Z + g_i · (e_Z − E0_Z + learned_i),    g_i = 1 − exp(−c_i / c_0),
    c_i = Σ_j f_c(r_ij),    c_0 = 0.1

E0_Z is the energy of an isolated atom of element Z (the reference energies the user gives, or
the least-squares per-element energies), e_Z the mean energy per atom of Z in the training data
(E0_Z plus the mean residual per atom: the networks' starting point) and c_i a smooth
coordination number (cosine cutoff at the model's cutoff: f_c and f_c' vanish at r_c).  g is 1
within 1e-10 for the atoms of a molecule or a solid (c ≳ 2.3), 1 − 8e-5 for one neighbour at
15 % of the cutoff (H₂ with r_c = 5 Å), 0.97 at 60 %, and goes smoothly to 0 as the last
neighbour leaves, so an isolated atom has ε = E0_Z exactly and dissociation limits are right.
Files written before the switch existed (``isolated_reference`` = 0) keep ε = e_Z + learned.
"""

from __future__ import annotations

import torch

from .. import keys
from ..nn import cosine_cutoff

SWITCH_COORDINATION = 0.1  # c_0


def coordination(graph: dict[str, torch.Tensor], cutoff: float) -> torch.Tensor:
    """c_i = Σ_j f_c(r_ij) ``[n_atoms]`` (cosine cutoff: smooth at r_c)."""
    r = torch.linalg.vector_norm(graph[keys.EDGE_VECTORS], dim=-1)  # [n_edges]
    fc = cosine_cutoff(r, cutoff)
    out = torch.zeros(graph[keys.ATOMIC_NUMBERS].shape[0], dtype=fc.dtype, device=fc.device)
    return out.index_add_(0, graph[keys.EDGE_INDEX][0], fc)  # (a scatter TorchScript compiles)


def switch(graph: dict[str, torch.Tensor], cutoff: float, c0: float = SWITCH_COORDINATION) -> torch.Tensor:
    """g_i = 1 − exp(−c_i / c_0) ``[n_atoms]``: 0 for an atom without neighbours, ≈ 1 with some."""
    return -torch.expm1(-coordination(graph, cutoff) / c0)


def switched(isolated: torch.Tensor, g: torch.Tensor, rest: torch.Tensor) -> torch.Tensor:
    """E0 + g (rest − E0) ``[n_atoms]``, with ``rest`` = e_Z + the learned part."""
    return isolated + g * (rest - isolated)
