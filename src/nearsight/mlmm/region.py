"""The ML region of an ML/MM system and the calculator that describes it.

:func:`check_region` turns ``ml_atoms`` (integer indices, or a boolean mask over all atoms) into a
sorted array of unique indices and refuses anything else with a ``ValueError`` that names the bad
values: indices outside ``[0, n_atoms)`` (negative indices too: a region is never counted from
the end), repeated indices, an empty region, a mask of the wrong length.

:func:`ml_calculator` gives the ASE calculator of the region: a nearsight model (module or model
file) becomes a :class:`~nearsight.NearsightCalculator`; any ASE calculator is used as it is.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from ase.calculators.calculator import Calculator

if TYPE_CHECKING:
    from torch import nn

_SHOWN = 10  # bad indices named in a message


def check_region(ml_atoms: Sequence[int] | np.ndarray, n_atoms: int, what: str = "the system") -> np.ndarray:
    """Sorted unique indices ``[n_ml]`` (int64) of the ML atoms among ``n_atoms`` atoms of ``what``."""
    values = np.asarray(ml_atoms)
    if values.dtype == bool:
        if values.shape != (n_atoms,):
            raise ValueError(
                f"ML region: a boolean mask must have one entry per atom of {what} ({n_atoms}), "
                f"got shape {values.shape}"
            )
        values = np.flatnonzero(values)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"ML region: ml_atoms must be a non-empty list of atom indices, got {ml_atoms!r}")
    if not np.issubdtype(values.dtype, np.integer):
        if not np.issubdtype(values.dtype, np.floating) or not np.all(values == np.round(values)):
            raise ValueError(f"ML region: atom indices must be whole numbers, got {_listed(values)}")
        values = values.astype(np.int64)
    values = values.astype(np.int64)
    bad = values[(values < 0) | (values >= n_atoms)]
    if bad.size:
        raise ValueError(
            f"ML region: atom indices {_listed(bad)} are out of range for {what} of {n_atoms} atoms "
            f"(valid: 0 to {n_atoms - 1})"
        )
    unique, counts = np.unique(values, return_counts=True)
    if np.any(counts > 1):
        raise ValueError(f"ML region: atom indices {_listed(unique[counts > 1])} are given more than once")
    return unique


def ml_calculator(
    model_or_calc: nn.Module | str | os.PathLike | Calculator, dtype: str = "float64", **kwargs
) -> Calculator:
    """The ASE calculator of the ML region: ``model_or_calc`` itself if it is one, else a
    :class:`~nearsight.NearsightCalculator` of the model (``torch.nn.Module`` or model file)."""
    if isinstance(model_or_calc, Calculator):
        if kwargs:
            raise TypeError(f"options {sorted(kwargs)} apply to a model, not to a calculator that is given")
        return model_or_calc
    from torch import nn

    if isinstance(model_or_calc, (nn.Module, str, os.PathLike)):
        from ..calculator import NearsightCalculator

        return NearsightCalculator(model_or_calc, dtype=dtype, **kwargs)
    raise TypeError(
        "the ML region needs a nearsight model (torch module or model file) or an ASE calculator, "
        f"got {type(model_or_calc).__name__}"
    )


def model_species(calc: Calculator) -> list[int] | None:
    """Atomic numbers a nearsight calculator's model covers (None for other calculators)."""
    forcefield = getattr(calc, "forcefield", None)
    return None if forcefield is None else [int(z) for z in forcefield.species]


def check_species(numbers: Sequence[int], calc: Calculator, where: str) -> None:
    """``ValueError`` naming the elements of the ML region the model has no weights for."""
    species = model_species(calc)
    if species is None:
        return
    from ase.data import chemical_symbols

    missing = sorted(set(int(z) for z in numbers) - set(species))
    if missing:
        raise ValueError(
            f"ML region of {where}: element(s) {[chemical_symbols[z] for z in missing]} are not among the "
            f"model's species {[chemical_symbols[z] for z in species]}"
        )


def predicts_charges(model: nn.Module) -> bool:
    """Whether a nearsight model returns charges: a short-range model built with a charge head
    (``charges=True``), alone or inside a long-range model."""
    short = getattr(model, "short", model)
    config = getattr(short, "get_config", lambda: {})()
    return bool(config.get("charges"))


def _listed(values: np.ndarray) -> str:
    shown = [v.item() if hasattr(v, "item") else v for v in values[:_SHOWN]]
    more = f" (and {len(values) - _SHOWN} more)" if len(values) > _SHOWN else ""
    return f"{shown}{more}"
