"""Learned potentials of a few generalised coordinates: a diabatic matrix, or adiabatic energies directly.

For model systems given in a handful of coordinates q (Tully's models, Ferretti's conical
intersection, a reaction path), a small network of q alone is the whole model:

* :class:`DiabaticNetwork`: q → the n(n+1)/2 independent elements of a symmetric V_d(q), smooth in q;
  adiabatic energies, forces and couplings follow by diagonalisation
  (:mod:`~nearsight.nonadiabatic.eigen`), so a conical intersection is a genuine cusp wherever the
  learned diagonal difference and coupling vanish together;
* :class:`AdiabaticNetwork`: q → n adiabatic energies directly (what SchNarc-style models learn),
  smooth everywhere, so it can only round a cusp off.

:func:`fit_adiabatic` trains either on adiabatic energies and gradients of every state, each term
of the loss normalised by its σ as in the seed's loss (σ_E the standard deviation of the energies,
σ_F the RMS of the gradient components, unless given).
"""

from __future__ import annotations

import torch
from torch import nn

from .couplings import derivative_couplings
from .eigen import DEFAULT_EPSILON, adiabatic_energies


def _mlp(n_in: int, hidden: tuple[int, ...], n_out: int) -> nn.Sequential:
    layers, width = [], n_in
    for h in hidden:
        layers += [nn.Linear(width, h), nn.Tanh()]
        width = h
    layers.append(nn.Linear(width, n_out))
    return nn.Sequential(*layers).double()


class _Normalised(nn.Module):
    """An MLP on standardised coordinates with outputs scaled to the energy statistics."""

    def __init__(self, n_coordinates: int, n_out: int, hidden: tuple[int, ...]) -> None:
        super().__init__()
        self.net = _mlp(n_coordinates, hidden, n_out)
        self.register_buffer("q_mean", torch.zeros(n_coordinates, dtype=torch.float64))
        self.register_buffer("q_std", torch.ones(n_coordinates, dtype=torch.float64))
        self.register_buffer("e_mean", torch.zeros((), dtype=torch.float64))
        self.register_buffer("e_std", torch.ones((), dtype=torch.float64))

    def set_statistics(self, q: torch.Tensor, energies: torch.Tensor) -> None:
        with torch.no_grad():
            self.q_mean.copy_(q.mean(0))
            self.q_std.copy_(q.std(0).clamp_min(1e-12))
            self.e_mean.copy_(energies.mean())
            self.e_std.copy_(energies.std().clamp_min(1e-12))

    def raw(self, q: torch.Tensor) -> torch.Tensor:
        return self.net((q - self.q_mean) / self.q_std) * self.e_std


class DiabaticNetwork(_Normalised):
    """q ``[B, D]`` → V_d ``[B, n, n]``; :meth:`energies` gives the adiabatic energies ``[B, n]``."""

    def __init__(
        self,
        n_coordinates: int,
        n_states: int = 2,
        hidden: tuple[int, ...] = (64, 64),
        epsilon: float = DEFAULT_EPSILON,
    ) -> None:
        super().__init__(n_coordinates, n_states * (n_states + 1) // 2, hidden)
        self.n_states, self.epsilon = n_states, epsilon
        self.register_buffer("index", torch.triu_indices(n_states, n_states), persistent=False)

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        out = self.raw(q)  # [B, n(n+1)/2]
        n = self.n_states
        upper = out.new_zeros((q.shape[0], n * n))
        upper = upper.index_copy(1, self.index[0] * n + self.index[1], out).reshape(-1, n, n)
        V = upper + upper.transpose(1, 2) - torch.diag_embed(torch.diagonal(upper, dim1=1, dim2=2))
        return V + self.e_mean * torch.eye(n, dtype=V.dtype)

    def energies(self, q: torch.Tensor) -> torch.Tensor:
        return adiabatic_energies(self(q), self.epsilon)


class AdiabaticNetwork(_Normalised):
    """q ``[B, D]`` → adiabatic energies ``[B, n]`` directly (the comparison: no cusp possible)."""

    def __init__(self, n_coordinates: int, n_states: int = 2, hidden: tuple[int, ...] = (64, 64)) -> None:
        super().__init__(n_coordinates, n_states, hidden)
        self.n_states = n_states

    def energies(self, q: torch.Tensor) -> torch.Tensor:
        return self.raw(q) + self.e_mean


def energies_and_gradients(model: nn.Module, q: torch.Tensor, create_graph: bool = False):
    """(E ``[B, n]``, ∂E/∂q ``[B, n, D]``) of a model with ``energies(q)``."""
    q = q.detach().requires_grad_(True)
    E = model.energies(q)
    grads = [torch.autograd.grad(E[:, i].sum(), q, create_graph=create_graph, retain_graph=True)[0] for i in range(E.shape[1])]  # fmt: skip
    return E, torch.stack(grads, 1)


def couplings(model: DiabaticNetwork, q: torch.Tensor, create_graph: bool = False) -> torch.Tensor:
    """h ``[B, n, n, D]``: h_ij = u_iᵀ(∂V_d/∂q)u_j of a diabatic network at ``q`` ``[B, D]``."""
    q = q.detach().requires_grad_(True)
    batch = torch.arange(q.shape[0], device=q.device)
    h, _ = derivative_couplings(model(q), q, batch, model.epsilon, create_graph=create_graph)
    return h


def sign_free_error(predicted: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Squared error ``[B, n, n, D]`` of off-diagonal couplings whose sign is arbitrary: for each
    sample and state pair the smaller of |h − h_ref|² and |h + h_ref|² (summed over D), per element."""
    plus = (predicted - label).pow(2).sum(-1, keepdim=True)
    minus = (predicted + label).pow(2).sum(-1, keepdim=True)
    return torch.minimum(plus, minus).expand_as(predicted) / predicted.shape[-1]


def fit_adiabatic(
    model: nn.Module,
    q: torch.Tensor,
    energies: torch.Tensor,
    gradients: torch.Tensor,
    steps: int = 3000,
    lr: float = 3e-3,
    sigma_energy: float | None = None,
    sigma_gradient: float | None = None,
    seed: int = 0,
    coupling_labels: torch.Tensor | None = None,
    sigma_coupling: float | None = None,
) -> list[float]:
    """Train ``model`` on adiabatic energies ``[B, n]`` and gradients ``[B, n, D]`` at ``q`` ``[B, D]``
    (full batch, Adam with cosine decay); the loss is mean((ΔE/σ_E)²) + mean((Δ∇E/σ_F)²), plus, with
    ``coupling_labels`` ``[B, n, n, D]`` (h_ij, diabatic models only), the sign-free
    mean(min(|h − h_ref|², |h + h_ref|²)/σ_h²) over the off-diagonal pairs.  Returns the loss history."""
    torch.manual_seed(seed)
    model.set_statistics(q, energies)
    s_e = float(sigma_energy or energies.std())
    s_f = float(sigma_gradient or gradients.pow(2).mean().sqrt())
    off = None
    if coupling_labels is not None:
        if not isinstance(model, DiabaticNetwork):
            raise ValueError("coupling labels need a DiabaticNetwork (an adiabatic network has no couplings)")
        n = energies.shape[1]
        off = ~torch.eye(n, dtype=torch.bool)
        s_h = float(sigma_coupling or coupling_labels[:, off].pow(2).mean().sqrt())
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, steps, eta_min=lr * 1e-3)
    history = []
    for _ in range(steps):
        optimiser.zero_grad()
        E, G = energies_and_gradients(model, q, create_graph=True)
        loss = ((E - energies) / s_e).pow(2).mean() + ((G - gradients) / s_f).pow(2).mean()
        if off is not None:
            h = couplings(model, q, create_graph=True)
            loss = loss + (sign_free_error(h[:, off], coupling_labels[:, off]) / s_h**2).mean()
        loss.backward()
        optimiser.step()
        schedule.step()
        history.append(float(loss.detach()))
    return history
