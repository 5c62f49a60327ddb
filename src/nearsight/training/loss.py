"""The energy + force loss of the seed, with an optional stress term.

    L = Σ_k w_k [ ((E_k − E_k^ref)/σ_E)² + (1/(3 n_k)) Σ_i ‖F_k,i − F_k,i^ref‖² / σ_F²
                  + λ_S (1/9) ‖σ_k − σ_k^ref‖² / σ_S² ]

averaged over the structures of a batch (a constant rescaling of the sum).  Under
data-parallel training each process sums over its share of a batch and divides by the
size of the whole batch (``n_total``), so the gradients added over the processes equal
those of one process on the whole batch.
Each term is masked where its label is missing; w_k are per-frame weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import keys
from ..nn import scatter_sum


@dataclass
class EnergyForceLoss:
    sigma_energy: float  # eV
    sigma_forces: float  # eV/Å
    sigma_stress: float = 1.0  # eV/Å³
    stress_weight: float = 0.0

    @property
    def needs_stress(self) -> bool:
        return self.stress_weight > 0

    def __call__(
        self, pred: dict[str, torch.Tensor], batch: dict[str, torch.Tensor], n_total: int | None = None
    ) -> torch.Tensor:
        weight = batch[keys.WEIGHT]  # [n_graphs]
        n_graphs = weight.shape[0]
        has_e = batch[keys.HAS_ENERGY].to(weight.dtype)
        has_f = batch[keys.HAS_FORCES].to(weight.dtype)
        e_term = ((pred[keys.ENERGY] - batch[keys.REF_ENERGY]) / self.sigma_energy) ** 2 * has_e
        total = e_term
        if keys.FORCES in pred:
            sq = ((pred[keys.FORCES] - batch[keys.REF_FORCES]) ** 2).sum(-1)  # [n_atoms]
            per_graph = scatter_sum(sq, batch[keys.BATCH], n_graphs)  # [n_graphs]
            n_atoms = batch[keys.N_ATOMS].to(weight.dtype)
            total = total + per_graph / (3.0 * n_atoms) / self.sigma_forces**2 * has_f
        if self.needs_stress and keys.STRESS in pred:
            has_s = batch[keys.HAS_STRESS].to(weight.dtype)
            sq = ((pred[keys.STRESS] - batch[keys.REF_STRESS]) ** 2).sum((-1, -2)) / 9.0
            total = total + self.stress_weight * sq / self.sigma_stress**2 * has_s
        return (weight * total).sum() / (n_total or n_graphs)

    def state_dict(self) -> dict:
        return {
            "sigma_energy": self.sigma_energy,
            "sigma_forces": self.sigma_forces,
            "sigma_stress": self.sigma_stress,
            "stress_weight": self.stress_weight,
        }
