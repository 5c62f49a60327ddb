"""Loss terms of several electronic states, each normalised as in the seed's loss, per state:

    state_energies   (1/S) Σ_s (E_s − E_s^ref)² / σ_E,s²
    state_forces     (1/(3nS)) Σ_s Σ_i ‖F_s,i − F_s,i^ref‖² / σ_F,s²
    state_couplings  (1/(3nP)) Σ_p min_± Σ_i ‖h_p,i ∓ h_p,i^ref‖² / σ_h,p²
    state_coupling_directions  (1/P) Σ_p min_± ‖ĥ_p ∓ ĥ_p^ref‖² / σ_d,p²,  ĥ = h / ‖h‖

States are in adiabatic order (ascending energy, ground state first) and σ is one number per state
(per pair for the couplings), recorded with the loss.  The sign of a coupling label is that of the
reference calculation's states, arbitrary: the coupling term takes, per structure and pair, the
better of both signs (a sign-free loss).  σ defaults: the spread of each state's energies about the
per-element reference energies, the RMS force component of each state, the RMS coupling component
of each pair.

The direction term compares each structure's coupling vector (all atoms, 3n components) after
dividing it by its norm: min_± ‖ĥ ∓ ĥ^ref‖² = 2(1 − |cos θ|), so it trains the sign-free cosine
that validation reports, and every structure counts the same whatever the size of its coupling.
The squared-error term is dominated by the structures near an intersection, where |h| is largest;
far from one, where h is small, it leaves the direction of h nearly free.  σ_d defaults to 1 (the
term then lies in [0, 2]); a label of zero norm contributes nothing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from .. import keys
from ..data.frame import Frame
from ..nn import scatter_sum
from ..training.loss import LossTerm, register_loss_term


class _PerState(LossTerm):
    """A term with one σ per state (or pair); a single number applies to all."""

    def __init__(self, sigma: float | Sequence[float], weight: float = 1.0) -> None:
        values = [sigma] if isinstance(sigma, (int, float)) else list(sigma)
        bad = [s for s in values if not (isinstance(s, (int, float)) and math.isfinite(s) and s > 0)]
        if not values or bad:
            raise ValueError(f"loss term {self.name!r}: sigma = {sigma!r} must be positive (one per state)")
        super().__init__(float(values[0]), weight)
        self.sigma = float(values[0]) if isinstance(sigma, (int, float)) else [float(s) for s in values]

    def sigmas(self, n: int, like: torch.Tensor) -> torch.Tensor:
        """``[n]`` σ per state (or pair)."""
        values = [self.sigma] * n if isinstance(self.sigma, float) else self.sigma
        if len(values) != n:
            raise ValueError(f"loss term {self.name!r}: {len(values)} σ values for {n} states")
        return like.new_tensor(values)

    def per_atom_error(self, diff: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """``[n_graphs, K]``: Σ_atoms ‖diff‖² / (3 n) per structure and state; diff ``[n_atoms, K, 3]``."""
        n_graphs = batch[keys.N_ATOMS].shape[0]
        per_graph = scatter_sum((diff**2).sum(-1), batch[keys.BATCH], n_graphs)  # [n_graphs, K]
        return per_graph / (3.0 * batch[keys.N_ATOMS].to(diff.dtype))[:, None]

    @classmethod
    def per_state_rms(cls, frames: Sequence[Frame]) -> list[float]:
        """RMS of the label components of each state (pair) over the frames that carry it."""
        values = [v for f in frames if (v := cls.label_values(f)) is not None]
        if not values:
            return [1.0]
        stacked = np.concatenate([v.reshape(v.shape[0], v.shape[1], -1) for v in values])  # [atoms, K, 3]
        rms = np.sqrt(np.mean(stacked**2, axis=(0, 2)))
        return [float(r) if r > 0 else 1.0 for r in rms]


@register_loss_term
class StateEnergiesTerm(_PerState):
    """(1/S) Σ_s (E_s − E_s^ref)² / σ_E,s²."""

    name = "state_energies"
    output = keys.STATE_ENERGIES

    def __call__(self, pred: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> torch.Tensor:
        diff = self.prediction(pred) - batch[self.label_key]  # [n_graphs, S]
        return self.weight * ((diff / self.sigmas(diff.shape[1], diff)) ** 2).mean(-1)

    @classmethod
    def default_sigma(cls, frames: Sequence[Frame], stats: dict) -> list[float]:
        """Per state: the standard deviation of E_s − Σ_i e_Z_i over the frames (1e-6 eV at least)."""
        shift = stats.get("energy_shift") or {}
        rows = []
        for f in frames:
            values = cls.label_values(f)
            if values is not None:
                reference = sum(float(shift.get(int(z), 0.0)) for z in f.numbers)
                rows.append(np.asarray(values, dtype=np.float64).reshape(-1) - reference)
        if not rows:
            return [1.0]
        return [float(max(s, 1e-6)) for s in np.std(np.stack(rows), axis=0)]


@register_loss_term
class StateForcesTerm(_PerState):
    """(1/(3nS)) Σ_s Σ_i ‖F_s,i − F_s,i^ref‖² / σ_F,s²."""

    name = "state_forces"
    output = keys.STATE_FORCES

    def __call__(self, pred: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> torch.Tensor:
        diff = self.prediction(pred) - batch[self.label_key]  # [n_atoms, S, 3]
        error = self.per_atom_error(diff, batch) / self.sigmas(diff.shape[1], diff) ** 2
        return self.weight * error.mean(-1)

    @classmethod
    def default_sigma(cls, frames: Sequence[Frame], stats: dict) -> list[float]:
        return cls.per_state_rms(frames)


@register_loss_term
class StateCouplingsTerm(_PerState):
    """(1/(3nP)) Σ_p min_± Σ_i ‖h_p,i ∓ h_p,i^ref‖² / σ_h,p²: sign-free in each label."""

    name = "state_couplings"
    output = keys.STATE_COUPLINGS

    def __call__(self, pred: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> torch.Tensor:
        h, ref = self.prediction(pred), batch[self.label_key]  # [n_atoms, P, 3]
        error = torch.minimum(self.per_atom_error(h - ref, batch), self.per_atom_error(h + ref, batch))
        return self.weight * (error / self.sigmas(h.shape[1], h) ** 2).mean(-1)

    @classmethod
    def default_sigma(cls, frames: Sequence[Frame], stats: dict) -> list[float]:
        return cls.per_state_rms(frames)


@register_loss_term
class StateCouplingDirectionsTerm(_PerState):
    """(1/P) Σ_p min_± ‖ĥ_p ∓ ĥ_p^ref‖² / σ_d,p², ĥ = h / ‖h‖ over the structure: 2(1 − |cos θ_p|)/σ²."""

    name = "state_coupling_directions"
    output = keys.STATE_COUPLINGS
    EPSILON = 1e-12  # eV/Å: ‖h‖ below this counts as zero

    def __call__(self, pred: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> torch.Tensor:
        h, ref = self.prediction(pred), batch[self.label_key]  # [n_atoms, P, 3]
        n_graphs = batch[keys.N_ATOMS].shape[0]

        def per_graph(x: torch.Tensor) -> torch.Tensor:  # [n_graphs, P]: Σ over a structure's atoms
            return scatter_sum(x.sum(-1), batch[keys.BATCH], n_graphs)

        norm_h = torch.sqrt(per_graph(h * h) + self.EPSILON**2)
        norm_ref = torch.sqrt(per_graph(ref * ref))
        cosine = per_graph(h * ref) / (norm_h * norm_ref.clamp_min(self.EPSILON))
        error = torch.where(norm_ref > self.EPSILON, 2.0 * (1.0 - cosine.abs()), torch.zeros_like(cosine))
        return self.weight * (error / self.sigmas(h.shape[1], h) ** 2).mean(-1)

    @classmethod
    def default_sigma(cls, frames: Sequence[Frame], stats: dict) -> list[float]:
        """1 per pair."""
        return [1.0] * len(cls.per_state_rms(frames))


def sign_free_cosine(predicted: np.ndarray, label: np.ndarray) -> float:
    """|cos| of the angle between two coupling vectors (any shape, flattened): 1 when parallel or
    antiparallel, 0 when orthogonal; NaN when either is zero."""
    a, b = np.ravel(predicted), np.ravel(label)
    norm = float(np.linalg.norm(a) * np.linalg.norm(b))
    return abs(float(a @ b)) / norm if norm > 0 else float("nan")
