"""The one wrapper that turns a per-atom energy model into a force field: the one place
where derivatives are taken.

    E = Σ_i ε_i,   F_i = -∂E/∂R_i,   W = -∂E/∂ε,   σ = (1/V) ∂E/∂ε

The strain ε is applied as a symmetric displacement of positions and cell,
``R -> R (I + ε)``, ``cell -> cell (I + ε)`` (Knuth-style strain derivative as
in NequIP's ``ForceStressOutput``), so that forces and stress are exact
autograd derivatives of the same energy.  Models only see edge vectors
computed here from positions, cell and integer shifts.

Several electronic states: a model that returns per-atom contributions to a diabatic matrix
(``keys.ATOMIC_DIABATIC``) gets the adiabatic energies E_0 ≤ E_1 ≤ ... (``keys.STATE_ENERGIES``; the
energy is the ground state's), their forces and the couplings h_ij = u_iᵀ(∇V_d)u_j
(``keys.STATE_COUPLINGS``), with derivatives finite at degeneracies (:mod:`nearsight.nonadiabatic`).
"""

from __future__ import annotations

import torch
from torch import nn

from .. import keys
from ..nn import scatter_sum
from ..nonadiabatic.states import adiabatic_outputs, state_derivatives


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

    ``model(graph)`` reads ``graph[keys.EDGE_VECTORS]`` and the species and returns a dict of
    named outputs (:mod:`nearsight.keys`): per-atom energies ``keys.ATOMIC_ENERGIES`` always,
    and whatever else it provides (charges, dipoles, per-state energies, ...); it must expose
    ``cutoff`` (Å) and ``species`` (atomic numbers).  Models never take derivatives: this
    wrapper sums every per-atom output declared with ``sum_to`` over each structure
    (atomic energies -> energy) and differentiates every output declared with ``forces``
    (energy -> forces, virial, stress; per-state energies -> per-state forces).
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
        """The model's outputs plus ENERGY [n_graphs] and, as asked, FORCES, VIRIAL, STRESS.

        ``forces`` also asks for the forces of any other energy-like output (e.g. STATE_FORCES).
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
        out = _summed(self.model(data), batch, n_graphs)
        diabatic = keys.DIABATIC_MATRIX in out
        if diabatic:  # adiabatic energies of the diabatic matrix; the energy is the ground state's
            out.update(adiabatic_outputs(out[keys.DIABATIC_MATRIX], self.model.epsilon))
        if not inputs:
            return out
        if forces and diabatic:  # forces of every state and the couplings from ∇V_d
            out.update(state_derivatives(out, inputs[0], batch, self.model.epsilon, create_graph))
            inputs = inputs[1:]  # the positions are done
        elif forces:
            for name in [k for k in out if k != keys.ENERGY and _forces_key(k)]:
                out[_forces_key(name)] = _component_forces(out[name], inputs[0], create_graph)
        if not inputs:
            return out
        energy = out[keys.ENERGY]
        grads = torch.autograd.grad(energy.sum(), inputs, create_graph=create_graph, allow_unused=True)
        grads = [torch.zeros_like(x) if g is None else g for g, x in zip(grads, inputs)]
        if forces and not diabatic:
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


def _forces_key(name: str) -> str | None:
    declared = keys.FIELDS.get(name)
    return None if declared is None else declared.forces


def _summed(outputs: dict[str, torch.Tensor], batch: torch.Tensor, n_graphs: int) -> dict[str, torch.Tensor]:
    """The model's outputs with every per-atom contribution summed per structure (``sum_to``)."""
    if not isinstance(outputs, dict) or not {keys.ATOMIC_ENERGIES, keys.ATOMIC_DIABATIC} & set(outputs):
        raise TypeError(
            "a nearsight model must return a dict of named outputs with at least "
            f"keys.ATOMIC_ENERGIES ({keys.ATOMIC_ENERGIES!r}) or keys.ATOMIC_DIABATIC, got {type(outputs).__name__}"
            + (f" with keys {sorted(outputs)}" if isinstance(outputs, dict) else "")
        )
    out: dict[str, torch.Tensor] = {}
    for name, value in outputs.items():
        declared = keys.FIELDS.get(name)
        if declared is not None and declared.sum_to is not None:
            out[declared.sum_to] = scatter_sum(value, batch, n_graphs)  # [n_graphs, ...]
        out[name] = value
    return out


def _component_forces(value: torch.Tensor, positions: torch.Tensor, create_graph: bool) -> torch.Tensor:
    """−∂value/∂R for each component of a per-structure output ``[n_graphs, *shape]``:
    ``[n_atoms, *shape, 3]`` (one backward pass per component)."""
    flat = value.reshape(value.shape[0], -1)
    columns = []
    for c in range(flat.shape[1]):
        (g,) = torch.autograd.grad(
            flat[:, c].sum(), [positions], create_graph=create_graph, retain_graph=True, allow_unused=True
        )
        columns.append(torch.zeros_like(positions) if g is None else -g)
    return torch.stack(columns, 1).reshape(positions.shape[0], *value.shape[1:], 3)
