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


def _dipole_derivative(
    model: nn.Module, atoms: Atoms, dtype: torch.dtype, wrt: str, needs: str, external_field=None
) -> np.ndarray:
    """∂μ_a/∂x for x = ``graph[wrt]`` (positions ``[n_atoms, 3]`` or the field ``[1, 3]``): ``[3, *x.shape]``."""
    forcefield = ForceField(model).to(dtype).eval()
    graph = atoms_to_graph(atoms, forcefield.cutoff, dtype)
    if external_field is not None:
        field = torch.as_tensor(np.asarray(external_field, dtype=np.float64), dtype=dtype)
        graph[keys.EXTERNAL_FIELD] = field.reshape(1, 3)
    x = graph[wrt].clone().requires_grad_(True)
    graph[wrt] = x
    out = forcefield(graph, forces=False)
    if keys.DIPOLE not in out:
        raise ValueError(
            f"{type(model).__name__} predicts no dipole: {needs} need(s) a model with charges inside a "
            "long-range model (model.longrange.coulomb)"
        )
    dipole = out[keys.DIPOLE][0]  # [3]
    rows = []
    for a in range(3):
        (grad,) = torch.autograd.grad(dipole[a], x, retain_graph=a < 2, allow_unused=True)
        rows.append(torch.zeros_like(x) if grad is None else grad)
    return torch.stack(rows, 0).detach().cpu().numpy()


def born_effective_charges(model: nn.Module, atoms: Atoms, dtype: torch.dtype = torch.float64) -> np.ndarray:
    """Z* ``[n_atoms, 3, 3]`` (e; Z[i, α, β] = ∂μ_α/∂R_iβ) of ``atoms`` for a model with charges."""
    rows = _dipole_derivative(model, atoms, dtype, keys.POSITIONS, "Born effective charges")  # [3, n, 3]
    return rows.transpose(1, 0, 2)  # [n_atoms, 3 (α), 3 (β)]


def polarisability(
    model: nn.Module, atoms: Atoms, dtype: torch.dtype = torch.float64, external_field=None
) -> np.ndarray:
    """α ``[3, 3]`` (e·Å²/V; α[a, b] = ∂μ_a/∂E_b) of ``atoms`` at the field ``external_field`` (V/Å;
    default ``atoms.info["external_field"]`` or zero), for a model that predicts a dipole."""
    rows = _dipole_derivative(model, atoms, dtype, keys.EXTERNAL_FIELD, "the polarisability", external_field)
    return rows[:, 0, :]  # [3 (a), 3 (b)]
