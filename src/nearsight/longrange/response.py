"""Response properties of models that predict charges.

Born effective charges are the derivatives of the dipole with respect to the atomic positions,

    Z*_{i,αβ} = ∂μ_α / ∂R_{i,β},    μ = Σ_j q_j R_j

taken by autograd through the charges' own dependence on the positions (so Z*_i ≠ q_i δ_αβ in
general).  For a neutral structure μ does not change under a rigid translation, hence the acoustic
sum rule Σ_i Z*_i = 0; IR intensities follow from Z* projected on the normal modes.

The polarisability is the derivative of the dipole with respect to a uniform external field E
(``keys.EXTERNAL_FIELD``, V/Å) at fixed nuclei,

    α_αβ = ∂μ_α / ∂E_β    (e·Å²/V;  α/(4πε₀) in Å³ is α · k_e with k_e = 14.3996 eV·Å/e²),

non-zero for models whose charges respond to the field (charge equilibration,
``model.longrange.charges: qeq``); for charges from a local head alone it vanishes.  It is
symmetric for QEq charges, which minimise an energy quadratic in q with a field term −Σ q_i R_i·E.
"""

from __future__ import annotations

import numpy as np
import torch
from ase import Atoms
from torch import nn

from .. import keys
from ..data.neighbours import atoms_to_graph
from ..models.forcefield import ForceField


def born_effective_charges(model: nn.Module, atoms: Atoms, dtype: torch.dtype = torch.float64) -> np.ndarray:
    """Z* ``[n_atoms, 3, 3]`` (e; Z[i, α, β] = ∂μ_α/∂R_iβ) of ``atoms`` for a model with charges."""
    forcefield = ForceField(model).to(dtype).eval()
    graph = atoms_to_graph(atoms, forcefield.cutoff, dtype)
    positions = graph[keys.POSITIONS].clone().requires_grad_(True)
    graph[keys.POSITIONS] = positions
    out = forcefield(graph, forces=False)
    if keys.DIPOLE not in out:
        raise ValueError(
            f"{type(model).__name__} predicts no dipole: Born effective charges need a model with a charge "
            "head inside a long-range model (model.longrange.coulomb)"
        )
    dipole = out[keys.DIPOLE][0]  # [3]
    rows = [torch.autograd.grad(dipole[a], positions, retain_graph=a < 2)[0] for a in range(3)]
    return torch.stack(rows, 1).detach().cpu().numpy()  # [n_atoms, 3 (α), 3 (β)]


def polarisability(
    model: nn.Module, atoms: Atoms, dtype: torch.dtype = torch.float64, external_field=None
) -> np.ndarray:
    """α ``[3, 3]`` (e·Å²/V; α[a, b] = ∂μ_a/∂E_b) of ``atoms`` at the field ``external_field`` (V/Å;
    default ``atoms.info["external_field"]`` or zero), for a model that predicts a dipole."""
    forcefield = ForceField(model).to(dtype).eval()
    graph = atoms_to_graph(atoms, forcefield.cutoff, dtype)
    if external_field is not None:
        graph[keys.EXTERNAL_FIELD] = torch.as_tensor(
            np.asarray(external_field, dtype=np.float64), dtype=dtype
        )
        graph[keys.EXTERNAL_FIELD] = graph[keys.EXTERNAL_FIELD].reshape(1, 3)
    field = graph[keys.EXTERNAL_FIELD].clone().requires_grad_(True)
    graph[keys.EXTERNAL_FIELD] = field
    out = forcefield(graph, forces=False)
    if keys.DIPOLE not in out:
        raise ValueError(
            f"{type(model).__name__} predicts no dipole: the polarisability needs a model with charges "
            "inside a long-range model (model.longrange.coulomb)"
        )
    dipole = out[keys.DIPOLE][0]  # [3]
    rows = []
    for a in range(3):
        (grad,) = torch.autograd.grad(dipole[a], field, retain_graph=a < 2, allow_unused=True)
        rows.append(torch.zeros_like(field) if grad is None else grad)
    return torch.cat(rows, 0).detach().cpu().numpy()  # [3 (a), 3 (b)]
