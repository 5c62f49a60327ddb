"""A trained diabatic model of a molecule as a potential of Cartesian coordinates in atomic units,
for surface hopping (:mod:`nearsight.simulate.surface_hopping`, ``nearsight surface-hop``).

    V_d(q) [Eh] = model(R = q · a_0) [eV] / E_h,    q ``[T, 3N]`` bohr,  masses ``[3N]`` m_e

The neighbour lists are rebuilt from each geometry (the model's cutoff); V_d stays differentiable in
q, so the surface-hopping code takes forces and couplings by autograd.
"""

from __future__ import annotations

import os

import torch
from ase import Atoms, units

from .. import keys
from ..data.neighbours import atoms_to_graph, collate
from ..models.forcefield import ForceField
from ..models.io import load_model

HARTREE_EV = float(units.Hartree)
BOHR_ANGSTROM = float(units.Bohr)
AMU_ELECTRON_MASSES = float(units._amu / units._me)  # 1822.888...


class MolecularDiabatic:
    """``potential(q)`` for the structure ``atoms`` and the diabatic model in ``model``.

    ``model``: a model file (or a loaded model) with ``n_states`` ≥ 2.  Attributes: ``masses``
    ``[3N]`` (electron masses, each atom's mass three times), ``q0`` ``[3N]`` (bohr, the positions of
    ``atoms``), ``n_states``.
    """

    def __init__(self, model: str | os.PathLike | torch.nn.Module, atoms: Atoms) -> None:
        loaded = load_model(model, dtype=torch.float64) if not isinstance(model, torch.nn.Module) else model
        n_states = int(getattr(loaded, "n_states", 1))
        if n_states < 2:
            raise ValueError(
                f"{model!r}: surface hopping needs a diabatic model (n_states >= 2), got {n_states}"
            )
        self.force_field = ForceField(loaded).double().eval()
        self.n_states = n_states
        self.atoms = atoms.copy()
        self.masses = (
            torch.tensor(atoms.get_masses(), dtype=torch.float64).repeat_interleave(3) * AMU_ELECTRON_MASSES
        )
        self.q0 = torch.tensor(atoms.positions, dtype=torch.float64).reshape(-1) / BOHR_ANGSTROM

    def graph(self, q: torch.Tensor) -> dict[str, torch.Tensor]:
        """One batch of the T structures at ``q`` ``[T, 3N]`` (bohr), positions differentiable in q."""
        n = len(self.atoms)
        positions = q.reshape(q.shape[0], n, 3) * BOHR_ANGSTROM  # [T, N, 3] Å
        graphs = []
        for t in range(q.shape[0]):
            atoms = self.atoms.copy()
            atoms.positions = positions[t].detach().numpy()
            graphs.append(atoms_to_graph(atoms, self.force_field.cutoff, torch.float64))
        batch = collate(graphs)
        batch[keys.POSITIONS] = positions.reshape(-1, 3)
        return batch

    def __call__(self, q: torch.Tensor) -> torch.Tensor:
        """V_d ``[T, S, S]`` (Eh) at ``q`` ``[T, 3N]`` (bohr)."""
        out = self.force_field(self.graph(q), forces=False)
        return out[keys.DIABATIC_MATRIX] / HARTREE_EV
