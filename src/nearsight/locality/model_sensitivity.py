"""The force response of a nearsight model, exact by automatic differentiation, and its hard range.

A model with T message-passing layers (1 for a descriptor model) and cutoff r_c gives atom k an
energy ε_k that depends only on atoms within T hops of k, a hop being a pair closer than r_c: the
*receptive field*, radius T·r_c.  The force response of centre i to atom j,

    K_ij = ‖∂F_i/∂R_j‖₂ = ‖Σ_k ∂²ε_k/∂R_i∂R_j‖₂,

needs an ε_k that sees both i and j, so it vanishes exactly when r_ij > 2·T·r_c (as
:func:`nearsight.properties.common.interaction_range` says), and already beyond r_c for a model
whose energies are sums of pair terms.  The blocks ∂F_i/∂R_j are rows of the Hessian, from
autograd of the forces: 3 backward passes per centre, no finite-difference noise.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from ase import Atoms
from torch import nn

from .force_response import ForceResponse, check_centres

__all__ = ["model_force_response", "receptive_field", "load_locality_model"]


def load_locality_model(model: nn.Module | str | os.PathLike):
    """A :class:`nearsight.calculator.NearsightCalculator` in float64 for a model or model file (a
    calculator is returned as it is).

    Raises
    ------
    ValueError
        A model file that does not exist (the message names the path).
    """
    from ..calculator import NearsightCalculator

    if isinstance(model, NearsightCalculator):
        return model
    if not isinstance(model, (str, os.PathLike, nn.Module)):
        raise TypeError(
            f"a model must be a model file, a torch module or a NearsightCalculator, got {model!r}"
        )
    if isinstance(model, (str, os.PathLike)) and not os.path.isfile(model):
        raise ValueError(f"model file {os.fspath(model)!r} does not exist")
    return NearsightCalculator(model, dtype="float64")


def receptive_field(model: nn.Module) -> dict[str, float | int | None]:
    """``{"cutoff": r_c, "layers": T, "receptive_field": T·r_c, "force_range": 2·T·r_c}`` in Å;
    the ranges are None for a model with long-range terms (Coulomb, dispersion reach every atom)."""
    from ..models.aoti import interaction_layers

    layers = interaction_layers(model)
    cutoff = float(model.cutoff)
    local = getattr(model, "model_type", None) != "longrange"
    return {
        "cutoff": cutoff,
        "layers": layers,
        "receptive_field": layers * cutoff if local else None,
        "force_range": 2 * layers * cutoff if local else None,
    }


def model_force_response(
    atoms: Atoms,
    model: nn.Module | str | os.PathLike,
    centres: Sequence[int] | None = None,
    fit_window: tuple[float | None, float | None] = (None, None),
) -> ForceResponse:
    """K_ij of a nearsight model (module docstring), from the exact Hessian rows of the centres.

    Parameters
    ----------
    atoms : Atoms
        The structure (≥ 2 atoms).
    model : module, model file or NearsightCalculator
        A nearsight model; a module or file is evaluated in float64, a calculator in its own dtype.
    centres : sequence of int, optional
        Atoms whose force rows are computed (default all).
    fit_window : (r_min, r_max)
        Distances (Å) of the decay fit.

    Returns
    -------
    ForceResponse
        ``method`` is ``"autograd Hessian"``, ``noise`` 0 (exact zeros stay zero).
    """
    from .. import keys
    from ..data.neighbours import atoms_to_graph

    idx = check_centres(atoms, centres, "model force response")
    calc = load_locality_model(model)
    forcefield = calc.forcefield
    graph = atoms_to_graph(atoms, forcefield.cutoff, calc.dtype)
    if calc.head is not None:
        graph[keys.HEAD] = torch.tensor([calc.head])
    positions = graph[keys.POSITIONS].clone().requires_grad_(True)
    graph[keys.POSITIONS] = positions
    # forces=False: the wrapper then differentiates nothing and keeps our positions in the graph
    energy = forcefield(graph, forces=False)[keys.ENERGY].sum()
    (grad,) = torch.autograd.grad(energy, positions, create_graph=True)
    forces = -grad  # [n, 3]
    n = len(atoms)
    mic = bool(np.any(atoms.pbc))
    rows = []
    for c in idx:
        block = np.zeros((n, 3, 3))  # dF_c/dR_j: [j, force component, displacement component]
        for a in range(3):
            (g,) = torch.autograd.grad(forces[c, a], positions, retain_graph=True, allow_unused=True)
            if g is not None:
                block[:, a, :] = g.detach().double().cpu().numpy()
        dist = atoms.get_distances(int(c), np.arange(n), mic=mic)
        for j in range(n):
            if j != c:
                rows.append((int(c), j, dist[j], np.linalg.norm(block[j], 2), block[j]))
    name = type(forcefield.model).__name__
    if isinstance(model, (str, os.PathLike)):
        name += f" ({os.fspath(model)})"
    return ForceResponse.from_rows(
        rows,
        method="autograd Hessian",
        reference=name,
        noise=0.0,
        formula=atoms.get_chemical_formula(),
        fit_window=fit_window,
    )
