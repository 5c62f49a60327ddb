"""The outputs of a diabatic model per structure: adiabatic energies, per-state forces and the
couplings between states, from the summed diabatic matrix V_d (``keys.DIABATIC_MATRIX``).

    E_0 ≤ E_1 ≤ ...   eigenvalues of V_d              keys.STATE_ENERGIES, keys.ENERGY = E_0
    F_i = −∇E_i = −u_iᵀ(∇V_d)u_i                        keys.STATE_FORCES, keys.FORCES = F_0
    h_ij = u_iᵀ(∇V_d)u_j  (i < j)                       keys.STATE_COUPLINGS

with derivatives that stay finite at degeneracies (:mod:`~nearsight.nonadiabatic.eigen`, broadening
ε recorded with the model).  :class:`~nearsight.models.forcefield.ForceField` calls these.
"""

from __future__ import annotations

import torch

from .. import keys
from .couplings import derivative_couplings
from .eigen import adiabatic_energies
from .matrix import pair_indices


def adiabatic_outputs(V: torch.Tensor, epsilon: float) -> dict[str, torch.Tensor]:
    """``{STATE_ENERGIES: [n_graphs, S], ENERGY: [n_graphs]}`` of diabatic matrices ``[n_graphs, S, S]``."""
    E = adiabatic_energies(V, epsilon)
    return {keys.STATE_ENERGIES: E, keys.ENERGY: E[:, 0]}


def state_derivatives(
    out: dict[str, torch.Tensor],
    positions: torch.Tensor,
    batch: torch.Tensor,
    epsilon: float,
    create_graph: bool = False,
) -> dict[str, torch.Tensor]:
    """Per-state forces ``[n_atoms, S, 3]``, the ground state's ``[n_atoms, 3]`` and the couplings
    ``[n_atoms, P, 3]`` (eV/Å) of ``out[keys.DIABATIC_MATRIX]``, a function of ``positions``."""
    V = out[keys.DIABATIC_MATRIX]
    h, _ = derivative_couplings(V, positions, batch, epsilon, create_graph)  # [n_atoms, S, S, 3]
    forces = -torch.diagonal(h, dim1=1, dim2=2).movedim(-1, 1)  # [n_atoms, S, 3]
    a, b = pair_indices(V.shape[-1], V.device)
    return {
        keys.STATE_FORCES: forces,
        keys.FORCES: forces[:, 0],
        keys.STATE_COUPLINGS: h[:, a, b],
    }
