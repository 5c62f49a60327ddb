"""Non-adiabatic couplings from a diabatic matrix and sign continuity of the adiabatic states.

With V_d(R) ``[n_graphs, n, n]`` a function of the positions R, the (energy-weighted) derivative
couplings and the non-adiabatic coupling vectors of adiabatic states i ≠ j are

    h_ij = u_iᵀ (∇_R V_d) u_j,    d_ij = ⟨ψ_i|∇_R ψ_j⟩ = h_ij / (E_j − E_i)

(Hellmann-Feynman for the off-diagonal element; d_ij = −d_ji, h_ij = h_ji).  For two states, in
terms of the half difference δ = (V_11 − V_22)/2, the coupling c = V_12 and the half gap
g = √(δ² + c² + ε²) of :mod:`~nearsight.nonadiabatic.eigen`,

    h_12 = (δ ∇c − c ∇δ) / g,    d_12 = h_12 / (2g),

for the eigenvector convention of :func:`~nearsight.nonadiabatic.eigen.adiabatic_states`; h stays
finite at the intersection, where d_12 diverges as 1/g (ε keeps it a number).  For more states
every ∇V_ab is taken (n(n+1)/2 backward passes) and contracted with the eigenvectors.

The sign of each adiabatic state is arbitrary, so along a trajectory each eigenvector is flipped
to overlap positively with the previous step's (:func:`align_signs`); the couplings follow.
"""

from __future__ import annotations

import torch

from .eigen import DEFAULT_EPSILON, adiabatic_states, two_state_parts


def derivative_couplings(
    V: torch.Tensor,
    positions: torch.Tensor,
    batch: torch.Tensor | None = None,
    epsilon: float = DEFAULT_EPSILON,
    create_graph: bool = False,
    states: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(h, d) ``[n_atoms, n, n, 3]`` each (units of V per Å, and 1/Å): h_ij and d_ij of every atom
    (any trailing shape of ``positions`` works: ``[B, D]`` generalised coordinates with
    ``batch = arange(B)`` give ``[B, n, n, D]``).

    ``V`` ``[n_graphs, n, n]`` depends on ``positions`` ``[n_atoms, 3]``; ``batch`` ``[n_atoms]``
    names each atom's structure (None: one structure).  ``create_graph`` keeps the graph, so that a
    loss on h can be differentiated (training on coupling labels).  ``states`` ``[n_graphs, n, n]``:
    eigenvectors to use (e.g. sign-aligned with a previous step); by default those of
    :func:`~nearsight.nonadiabatic.eigen.adiabatic_states`.  The diagonal of h holds the
    gradients ∇E_i; the diagonal of d is zero."""
    n = V.shape[-1]
    if batch is None:
        batch = torch.zeros(positions.shape[0], dtype=torch.long, device=positions.device)

    def grad(x: torch.Tensor) -> torch.Tensor:  # ∇ of a per-structure quantity [n_graphs], per atom
        (g,) = torch.autograd.grad(x.sum(), positions, create_graph=create_graph, retain_graph=True)
        return g

    E, U = adiabatic_states(V, epsilon)
    if n == 2 and states is None:  # three backward passes: ∇m, ∇δ, ∇c
        m, delta, c, g = two_state_parts(V, epsilon)
        grad_m, grad_delta, grad_c = grad(m), grad(delta), grad(c)
        per_atom = [(x / g)[batch].view(-1, *[1] * (positions.dim() - 1)) for x in (delta, c)]
        h12 = per_atom[0] * grad_c - per_atom[1] * grad_delta  # (δ∇c − c∇δ)/g
        grad_g = per_atom[0] * grad_delta + per_atom[1] * grad_c  # ∇g = (δ∇δ + c∇c)/g
        h = torch.stack(
            [torch.stack([grad_m - grad_g, h12], 1), torch.stack([h12, grad_m + grad_g], 1)], 1
        )  # [n_atoms, 2, 2, ...]
    else:
        U = U if states is None else states
        symmetric = 0.5 * (V + V.transpose(-1, -2))
        dV = positions.new_zeros((positions.shape[0], n, n, *positions.shape[1:]))
        for a in range(n):
            for b in range(a, n):
                dV[:, a, b] = grad(symmetric[:, a, b])
                if b != a:
                    dV[:, b, a] = dV[:, a, b]
        Ua = U[batch]  # [n_atoms, n, n]
        h = torch.einsum("nai,nabx,nbj->nijx", Ua, dV, Ua)
    gap = E[:, None, :] - E[:, :, None]  # [n_graphs, i, j] = E_j − E_i
    gap = gap + torch.eye(n, dtype=gap.dtype, device=gap.device)  # no division by zero on the diagonal
    d = h / gap[batch][..., None]
    d = d * (1 - torch.eye(n, dtype=d.dtype, device=d.device))[None, :, :, None]
    return h, d


def align_signs(states: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """``states`` ``[..., n, n]`` (eigenvectors in columns) with each column's sign flipped so that it
    overlaps non-negatively with the same column of ``reference`` (the previous step)."""
    overlap = (states * reference).sum(-2, keepdim=True)  # [..., 1, n]
    return states * torch.where(overlap < 0, -1.0, 1.0).to(states.dtype)
