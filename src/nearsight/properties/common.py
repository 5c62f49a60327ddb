"""What every property shares: calculators for a model or a committee, input checks, committee spread.

A property is computed through an ASE calculator, so it works for any nearsight model (one file, a
Δ-model with its baseline, a long-range model) and for any other ASE calculator (EMT, a DFT code),
which is how the tests compare against phonopy and matscipy called directly. A committee is the
same property computed once per member: :func:`committee_spread` turns the members' numbers into a
mean and a standard deviation per quantity, so a user sees where the model is unsure
(e.g. phonon frequencies ± σ).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator

ModelLike = Any  # a model file path, an nn.Module, or an ASE Calculator


def as_calculators(
    models: ModelLike | Sequence[ModelLike], dtype: str = "float64", device: str = "cpu"
) -> list[Calculator]:
    """One ASE calculator per model: files and modules become a ``NearsightCalculator`` each,
    calculators are kept as they are. Properties are computed in float64 by default (finite
    differences of float32 energies are noise at the 0.01 Å displacements phonons use)."""
    from torch import nn

    from ..calculator import NearsightCalculator

    if isinstance(models, (str, os.PathLike, nn.Module, Calculator)):
        models = [models]
    models = list(models)
    if not models:
        raise ValueError("no model given")
    calcs = []
    for m in models:
        if isinstance(m, Calculator):
            calcs.append(m)
        elif isinstance(m, (str, os.PathLike, nn.Module)):
            calcs.append(NearsightCalculator(m, dtype=dtype, device=device))
        else:
            raise TypeError(f"a model must be a file path, a torch module or an ASE calculator, got {m!r}")
    return calcs


def interaction_range(calc: Calculator) -> float | None:
    """The distance (Å) beyond which moving one atom cannot change the force on another:
    2 × layers × r_c for a local nearsight model (two atoms interact through a common neighbour
    within r_c of each, once per message-passing layer), None where unknown or infinite (a model
    with long-range terms, a calculator that is not nearsight's)."""
    forcefield = getattr(calc, "forcefield", None)
    if forcefield is None:
        return None
    model = forcefield.model
    if getattr(model, "model_type", None) == "longrange":  # Coulomb and dispersion reach every image
        return None
    from ..models.aoti import interaction_layers

    return 2.0 * interaction_layers(model) * float(forcefield.cutoff)


def perpendicular_widths(cell: np.ndarray) -> np.ndarray:
    """The distances between opposite faces of a cell (Å): V / |a_j × a_k| for each axis i."""
    cell = np.asarray(cell, dtype=float)
    volume = abs(np.linalg.det(cell))
    return np.array(
        [volume / np.linalg.norm(np.cross(cell[(i + 1) % 3], cell[(i + 2) % 3])) for i in range(3)]
    )


def require_periodic(atoms: Atoms, what: str, where: str = "the structure") -> None:
    """Stop with a message when a property that needs a crystal gets a molecule or a slab."""
    if not np.all(atoms.pbc) or abs(atoms.cell.volume) < 1e-9:
        raise ValueError(
            f"{where}: {what} needs a crystal periodic in all three directions with a cell, got pbc = "
            f"{atoms.pbc.tolist()} and cell volume {abs(atoms.cell.volume):.3g} Å³ (for a molecule use "
            "nearsight vibrations)"
        )


def require_relaxed(
    atoms: Atoms,
    fmax: float,
    what: str,
    where: str = "the structure",
    stress_max: float | None = None,
) -> None:
    """Stop when the structure is not at a minimum of the calculator attached to ``atoms``: the largest
    force above ``fmax`` (eV/Å) or, with ``stress_max`` (eV/Å³), a stress component above it.
    Harmonic properties about a point that is not a minimum are not what the user asked for."""
    forces = atoms.get_forces()
    worst = int(np.argmax(np.linalg.norm(forces, axis=1))) if len(atoms) else 0
    largest = float(np.linalg.norm(forces[worst])) if len(atoms) else 0.0
    if largest > fmax:
        raise ValueError(
            f"{where} is not relaxed for {what}: the force on atom {worst} is {largest:.3g} eV/Å "
            f"(> fmax = {fmax:g} eV/Å); relax it first (nearsight relax, or relax=True)"
        )
    if stress_max is not None:
        stress = np.abs(atoms.get_stress(voigt=True))
        if stress.max() > stress_max:
            raise ValueError(
                f"{where} is not relaxed for {what}: a stress component is {stress.max():.3g} eV/Å³ "
                f"({stress.max() * 160.21766:.3g} GPa, > {stress_max:g} eV/Å³); relax the cell first "
                "(nearsight relax, or relax=True)"
            )


def over_members(
    compute: Callable[..., Any], atoms: Atoms, calcs: Sequence[Calculator], **kwargs
) -> list[Any]:
    """``compute(copy of atoms, calc, **kwargs)`` for each committee member's calculator."""
    results = []
    for calc in calcs:
        member = atoms.copy()
        member.calc = None
        results.append(compute(member, calc, **kwargs))
    return results


def committee_spread(summaries: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Mean and standard deviation (ddof = 0, as the committee calculator) over members of each numeric
    entry of their summaries (a number or an array of one shape); other entries, and entries that
    are None for any member, are left out.
    One summary gives σ = 0."""
    if not summaries:
        raise ValueError("no committee members")
    out: dict[str, dict[str, Any]] = {}
    for key in summaries[0]:
        values = [s.get(key) for s in summaries]
        if any(v is None for v in values):  # e.g. C11 of a crystal that is not cubic
            continue
        try:
            arrays = [np.asarray(v, dtype=float) for v in values]
        except (TypeError, ValueError):
            continue
        if any(a.shape != arrays[0].shape for a in arrays):
            continue
        stacked = np.stack(arrays)
        mean, std = stacked.mean(axis=0), stacked.std(axis=0)
        out[key] = {"mean": mean.tolist(), "std": std.tolist()}
    return out
