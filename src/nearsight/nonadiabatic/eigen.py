"""Adiabatic energies and states of a diabatic matrix, with derivatives finite at degeneracies.

For a symmetric V_d ``[..., n, n]`` the adiabatic energies E_1 ≤ ... ≤ E_n are its eigenvalues and
the adiabatic states u_i its eigenvectors.  At a conical intersection two eigenvalues meet with a
cusp: E is continuous but not differentiable there, and the textbook derivatives of the
eigen-decomposition contain 1/(E_j − E_i).  ``torch.linalg.eigvalsh`` gives NaN second derivatives
at an exact degeneracy, which force training (a loss on ∂E/∂R, differentiated by the parameters)
needs.  Two ways out, both with a broadening ε (Eh or eV, the units of V_d) recorded with the
model:

* two states, in closed form: with m = (V_11 + V_22)/2, δ = (V_11 − V_22)/2 and c = V_12,

      E_± = m ± g,    g = √(δ² + c² + ε²),

  smooth everywhere (the cusp is rounded over a gap of 2ε, 1e-10 by default: invisible at any
  scale a model resolves), with first derivatives bounded and second derivatives finite;
* more states: ``torch.linalg.eigh`` forward, and a backward in which each 1/(λ_j − λ_i) of the
  eigenvector derivative is replaced by the Lorentzian-broadened (λ_j − λ_i)/((λ_j − λ_i)² + ε²),
  written with differentiable operations so that it can itself be differentiated.
"""

from __future__ import annotations

import torch

DEFAULT_EPSILON = 1e-10


def two_state_parts(V: torch.Tensor, epsilon: float = DEFAULT_EPSILON):
    """(m, δ, c, g) of a 2×2 diabatic matrix ``[..., 2, 2]``: mean, half difference, coupling and
    half gap √(δ² + c² + ε²), each ``[...]``."""
    a, b = V[..., 0, 0], V[..., 1, 1]
    c = 0.5 * (V[..., 0, 1] + V[..., 1, 0])
    delta = 0.5 * (a - b)
    return 0.5 * (a + b), delta, c, torch.sqrt(delta**2 + c**2 + epsilon**2)


def adiabatic_energies(V: torch.Tensor, epsilon: float = DEFAULT_EPSILON) -> torch.Tensor:
    """E ``[..., n]`` (ascending) of diabatic matrices ``[..., n, n]``; see the module for ε."""
    _check(V)
    if V.shape[-1] == 1:
        return V[..., 0]
    if V.shape[-1] == 2:
        m, _, _, g = two_state_parts(V, epsilon)
        return torch.stack([m - g, m + g], dim=-1)
    return _BroadenedEigh.apply(0.5 * (V + V.transpose(-1, -2)), float(epsilon))[0]


def adiabatic_states(V: torch.Tensor, epsilon: float = DEFAULT_EPSILON) -> tuple[torch.Tensor, torch.Tensor]:
    """(E ``[..., n]``, U ``[..., n, n]``): energies and eigenvectors (U[..., :, i] belongs to E_i).

    Two states: U from the mixing angle θ (tan 2θ = c/δ), u_1 = (−sin θ, cos θ),
    u_2 = (cos θ, sin θ), with cos 2θ = δ/g and sin 2θ = c/g; more states: ``eigh`` with the
    broadened backward.  The sign of each column is a convention (see
    :func:`~nearsight.nonadiabatic.couplings.align_signs` for continuity along a path)."""
    _check(V)
    n = V.shape[-1]
    if n == 1:
        return V[..., 0], torch.ones_like(V)
    if n == 2:
        m, delta, c, g = two_state_parts(V, epsilon)
        cos2, sin2 = delta / g, c / g
        theta = 0.5 * torch.atan2(sin2, cos2)
        s, k = torch.sin(theta), torch.cos(theta)
        U = torch.stack([torch.stack([-s, k], -1), torch.stack([k, s], -1)], -1)  # columns u_1, u_2
        return torch.stack([m - g, m + g], dim=-1), U
    return _BroadenedEigh.apply(0.5 * (V + V.transpose(-1, -2)), float(epsilon))


def _check(V: torch.Tensor) -> None:
    if V.dim() < 2 or V.shape[-1] != V.shape[-2]:
        raise ValueError(f"a diabatic matrix must have shape [..., n, n], got {list(V.shape)}")


class _BroadenedEigh(torch.autograd.Function):
    """``eigh`` whose backward replaces 1/(λ_j − λ_i) by (λ_j − λ_i)/((λ_j − λ_i)² + ε²)."""

    @staticmethod
    def forward(ctx, A: torch.Tensor, epsilon: float):  # noqa: ANN001, ANN205
        values, vectors = torch.linalg.eigh(A)
        ctx.save_for_backward(values, vectors)
        ctx.epsilon = epsilon
        return values, vectors

    @staticmethod
    def backward(ctx, grad_values: torch.Tensor | None, grad_vectors: torch.Tensor | None):  # noqa: ANN001, ANN205
        values, vectors = ctx.saved_tensors
        inner = torch.zeros_like(vectors)
        if grad_values is not None:
            inner = inner + torch.diag_embed(grad_values)
        if grad_vectors is not None:
            diff = values[..., None, :] - values[..., :, None]  # [..., i, j] = λ_j − λ_i
            F = diff / (diff**2 + ctx.epsilon**2)
            F = F - torch.diag_embed(torch.diagonal(F, dim1=-2, dim2=-1))  # zero diagonal
            inner = inner + F * (vectors.transpose(-1, -2) @ grad_vectors)
        grad = vectors @ inner @ vectors.transpose(-1, -2)
        return 0.5 * (grad + grad.transpose(-1, -2)), None
