"""What every local descriptor shares: a graph-in, features-out torch module with a
DScribe-style ``compute(atoms)`` for use outside a model.

A descriptor's ``forward(graph)`` reads ``graph[keys.EDGE_VECTORS]`` (built from
positions, so autograd reaches the positions and the cell), and returns
``[n_atoms, n_features]``.  Forces and stress of a model built on it come from
autograd: no dense ``N x N x 3 x D`` derivative array is ever formed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from .. import keys


def atomic_numbers_of(species: Sequence[int | str]) -> list[int]:
    """Sorted distinct atomic numbers from numbers or chemical symbols (DScribe's convention)."""
    from ase.data import atomic_numbers

    out = []
    for s in species:
        if isinstance(s, str):
            if s not in atomic_numbers:
                raise ValueError(f"unknown chemical symbol {s!r} in species {list(species)!r}")
            out.append(atomic_numbers[s])
        else:
            out.append(int(s))
    if not out or len(set(out)) != len(out) or min(out) < 1 or max(out) > 118:
        raise ValueError(f"species must be distinct elements, got {list(species)!r}")
    return sorted(out)


class Descriptor(nn.Module):
    """Base class: subclasses set ``species``, ``r_cut``, ``periodic`` and implement
    ``forward``, ``n_features`` and ``get_config``."""

    species: list[int]
    r_cut: float
    periodic: bool

    @property
    def neighbour_cutoff(self) -> float:
        """Radius of the neighbour list the descriptor needs (may exceed ``r_cut``)."""
        return self.r_cut

    @property
    def n_features(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def get_config(self) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def graph(self, atoms, dtype: torch.dtype = torch.float64, requires_grad: bool = False) -> dict:
        """The neighbour graph of ``atoms`` at this descriptor's cutoff, with edge vectors.

        With ``periodic=False`` the cell and pbc of ``atoms`` are ignored, as in DScribe.
        """
        from ..data.neighbours import atoms_to_graph
        from ..models.forcefield import edge_vectors

        if not self.periodic and any(atoms.pbc):
            atoms = atoms.copy()
            atoms.pbc = False
        unknown = sorted(set(atoms.numbers.tolist()) - set(self.species))
        if unknown:
            from ase.data import chemical_symbols

            raise ValueError(
                f"atoms contain element(s) {[chemical_symbols[z] for z in unknown]} not in the "
                f"descriptor's species {[chemical_symbols[z] for z in self.species]}"
            )
        graph = atoms_to_graph(atoms, self.neighbour_cutoff, dtype)
        if requires_grad:
            graph[keys.POSITIONS].requires_grad_(True)
        graph[keys.EDGE_VECTORS] = edge_vectors(
            graph[keys.POSITIONS],
            graph[keys.CELL],
            graph[keys.BATCH],
            graph[keys.EDGE_INDEX],
            graph[keys.CELL_SHIFTS],
        )
        return graph

    def compute(self, atoms, dtype: torch.dtype = torch.float64) -> np.ndarray:
        """Features ``(n_atoms, n_features)`` of one ``ase.Atoms``, in DScribe's order."""
        was = self.training
        self.eval()
        try:
            with torch.no_grad():
                out = self(self.graph(atoms, dtype))
        finally:
            self.train(was)
        return out.detach().cpu().numpy()

    def compute_with_gradient(self, atoms, dtype: torch.dtype = torch.float64) -> np.ndarray:
        """Dense derivatives ``(n_atoms, n_atoms, 3, n_features)``: d features[i] / d positions[j].

        DScribe's ``derivatives`` layout, for tests and small systems only (memory is O(N² D));
        models never need it, they backpropagate through ``forward``.  Forward-mode AD, one pass
        per Cartesian coordinate.
        """
        import torch.autograd.forward_ad as fwad

        from ..models.forcefield import edge_vectors

        graph = self.graph(atoms, dtype)
        pos = graph[keys.POSITIONS]
        n = pos.shape[0]
        out = np.zeros((n, n, 3, self.n_features))
        for j in range(n):
            for c in range(3):
                tangent = torch.zeros_like(pos)
                tangent[j, c] = 1.0
                with fwad.dual_level(), torch.no_grad():
                    dual = fwad.make_dual(pos, tangent)
                    g = dict(graph)
                    g[keys.POSITIONS] = dual
                    g[keys.EDGE_VECTORS] = edge_vectors(
                        dual, g[keys.CELL], g[keys.BATCH], g[keys.EDGE_INDEX], g[keys.CELL_SHIFTS]
                    )
                    out[:, j, c, :] = fwad.unpack_dual(self(g)).tangent.cpu().numpy()
        return out
