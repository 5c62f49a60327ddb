"""The one wrapper that turns a per-atom energy model into a force field.

    E = Σ_i ε_i,   F_i = -∂E/∂R_i,   W = -∂E/∂ε,   σ = (1/V) ∂E/∂ε

The strain ε is applied as a symmetric displacement of positions and cell,
``R -> R (I + ε)``, ``cell -> cell (I + ε)`` (Knuth-style strain derivative as
in NequIP's ``ForceStressOutput``), so that forces and stress are exact
autograd derivatives of the same energy.  Models only see edge vectors
computed here from positions, cell and integer shifts.
"""

from __future__ import annotations

import torch
from torch import nn

from .. import keys
from ..nn import scatter_sum


def edge_vectors(
    positions: torch.Tensor,
    cell: torch.Tensor,
    batch: torch.Tensor,
    edge_index: torch.Tensor,
    shifts: torch.Tensor,
) -> torch.Tensor:
    """r_ij = R_j - R_i + S_ij @ cell  ``[n_edges, 3]``."""
    i, j = edge_index[0], edge_index[1]
    if cell.shape[0] == 1:  # one structure: one matrix product, no per-edge copy of the cell
        offsets = shifts @ cell[0]
    else:
        offsets = torch.einsum("ek,ekl->el", shifts, cell[batch[i]])  # [n_edges, 3]
    return positions[j] - positions[i] + offsets


class ForceField(nn.Module):
    """Energy, forces and (optionally) virial and stress of any per-atom energy model.

    ``model(graph)`` must return per-atom energies ``[n_atoms]`` from
    ``graph[keys.EDGE_VECTORS]`` and the species; it must expose ``cutoff``
    (Å) and ``species`` (atomic numbers).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    @property
    def cutoff(self) -> float:
        return float(self.model.cutoff)

    @property
    def species(self) -> list[int]:
        return list(self.model.species)

    def forward(
        self,
        graph: dict[str, torch.Tensor],
        forces: bool = True,
        stress: bool = False,
        create_graph: bool = False,
    ) -> dict[str, torch.Tensor]:
        """Return ENERGY [n_graphs], ATOMIC_ENERGIES and, as asked, FORCES, VIRIAL, STRESS.

        ``create_graph=True`` keeps the graph of the derivatives (training on forces).
        Stress is zero for structures with zero cell volume (non-periodic).
        """
        positions = graph[keys.POSITIONS]
        cell = graph[keys.CELL]
        batch = graph[keys.BATCH]
        n_graphs = cell.shape[0]
        inputs: list[torch.Tensor] = []
        if forces or stress:
            positions = positions.detach().requires_grad_(True)
            inputs.append(positions)
        strain = None
        if stress:
            strain = torch.zeros((n_graphs, 3, 3), dtype=cell.dtype, device=cell.device)
            strain.requires_grad_(True)
            inputs.append(strain)
            sym = 0.5 * (strain + strain.transpose(1, 2))
            positions = positions + torch.einsum("ak,akl->al", positions, sym[batch])
            cell = cell + torch.bmm(cell, sym)
        vectors = edge_vectors(positions, cell, batch, graph[keys.EDGE_INDEX], graph[keys.CELL_SHIFTS])
        data = dict(graph)
        data[keys.POSITIONS] = positions
        data[keys.CELL] = cell
        data[keys.EDGE_VECTORS] = vectors
        atomic = self.model(data)  # [n_atoms]
        energy = scatter_sum(atomic, batch, n_graphs)  # [n_graphs]
        out = {keys.ENERGY: energy, keys.ATOMIC_ENERGIES: atomic}
        if not inputs:
            return out
        grads = torch.autograd.grad(energy.sum(), inputs, create_graph=create_graph, allow_unused=True)
        grads = [torch.zeros_like(x) if g is None else g for g, x in zip(grads, inputs)]
        if forces:
            out[keys.FORCES] = -grads[0]
        if stress:
            d_strain = grads[-1]  # [n_graphs, 3, 3] = dE/dε
            volume = torch.linalg.det(graph[keys.CELL]).abs()  # [n_graphs]
            safe = torch.where(volume > 0, volume, torch.ones_like(volume))
            out[keys.VIRIAL] = -d_strain
            out[keys.STRESS] = torch.where(
                (volume > 0)[:, None, None], d_strain / safe[:, None, None], torch.zeros_like(d_strain)
            )
        return out
