"""TorchScript export of a nearsight potential for use outside Python (LibTorch/C++, LAMMPS-style
drivers): energy, per-atom energies and forces from positions and a neighbour list.

    from nearsight.models.export import export_torchscript
    export_torchscript(model, "model.ts")               # torch.jit.script + save
    m = torch.jit.load("model.ts")
    out = m(positions, numbers, cell, batch, edge_index, shifts)   # {"energy", "atomic_energies", "forces"}

TorchScript (not ``torch.export``): the model's shapes depend on the data (neighbour counts), and
forces need ``torch.autograd.grad`` inside the exported program, which TorchScript supports.
The caller supplies the neighbour list: ``edge_index`` ``[2, E]`` (row 0 centre i, row 1 neighbour
j, all pairs within the cutoff stored in the file's ``cutoff`` attribute) and integer cell shifts
``[E, 3]`` with r_ij = R_j − R_i + shifts @ cell[batch[i]].  Units: Å, eV, eV/Å.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from .. import keys


class TorchScriptForceField(nn.Module):
    """Energy and forces of a per-atom energy model, written for ``torch.jit.script``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.cutoff = float(model.cutoff)
        self.species: list[int] = [int(z) for z in model.species]

    def forward(
        self,
        positions: torch.Tensor,
        numbers: torch.Tensor,
        cell: torch.Tensor,
        batch: torch.Tensor,
        edge_index: torch.Tensor,
        shifts: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        positions = positions.detach().requires_grad_(True)
        i, j = edge_index[0], edge_index[1]
        offsets = torch.einsum("ek,ekl->el", shifts.to(cell.dtype), cell[batch[i]])
        vectors = positions[j] - positions[i] + offsets
        graph: dict[str, torch.Tensor] = {
            keys.POSITIONS: positions,
            keys.ATOMIC_NUMBERS: numbers,
            keys.CELL: cell,
            keys.BATCH: batch,
            keys.EDGE_INDEX: edge_index,
            keys.CELL_SHIFTS: shifts,
            keys.EDGE_VECTORS: vectors,
        }
        atomic = self.model(graph)[keys.ATOMIC_ENERGIES]
        energy = torch.zeros(cell.shape[0], dtype=atomic.dtype, device=atomic.device).index_add(
            0, batch, atomic
        )
        grads = torch.autograd.grad([energy.sum()], [positions], allow_unused=True)
        g = grads[0]
        forces = torch.zeros_like(positions) if g is None else -g
        return {
            keys.ENERGY: energy.detach(),
            keys.ATOMIC_ENERGIES: atomic.detach(),
            keys.FORCES: forces.detach(),
        }


def export_torchscript(model: nn.Module, path: str | os.PathLike | None = None) -> torch.jit.ScriptModule:
    """Script ``model`` (a nearsight per-atom energy model) with its force wrapper; save if ``path``."""
    if getattr(model, "n_states", 1) > 1:
        raise ValueError(
            f"TorchScript export covers single-state models; this one has n_states = {model.n_states} "
            "(use it from Python: nearsight.calculator or nearsight surface-hop)"
        )
    scripted = torch.jit.script(TorchScriptForceField(model.eval()))
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.jit.save(scripted, str(path))
    return scripted
