"""Checks the ASE calculators apply to every structure they evaluate.

Shared by :class:`nearsight.NearsightCalculator` and
:class:`nearsight.uncertainty.EnsembleCalculator`, so that MD (``nearsight md``,
:func:`nearsight.simulate.md.run_md`) stops with one clear message instead of
propagating NaN:

* **close atoms**: two atoms (or an atom and a periodic image) closer than
  ``min_distance`` (default :data:`MIN_DISTANCE` = 0.1 Å) raise :class:`CloseAtomsError`
  naming both atoms (index and element) and their distance, before the model runs.
  Descriptors and radial bases are not defined at r = 0 (an ACSF or equivariant model
  returns NaN there, SOAP returns NaN forces) and no trained model has seen r < 0.1 Å.
* **non-finite output**: energy, forces or stress that are NaN or infinite raise
  :class:`NonFiniteOutputError` naming the atoms whose forces are not finite and the
  closest pair of atoms with its distance.
* **extrapolation**: a model that returns ``keys.EXTRAPOLATION`` (per atom, the number of
  descriptor components outside the range seen in training) is reported by
  :class:`ExtrapolationMonitor`: ``results["extrapolation"]`` (per-atom counts) and
  ``results["extrapolating_atoms"]`` (atoms with a count > 0); ``on_extrapolation``
  chooses ``"ignore"``, ``"warn"`` (an :class:`ExtrapolationWarning` the first time atoms
  extrapolate and again only when more atoms do than ever before, so a long MD run or a
  test set warns a few times, not at every step) or ``"raise"`` (:class:`ExtrapolationError`).

Both error types are ``ValueError`` subclasses (bad input: the structure), except
:class:`ExtrapolationError`, a ``RuntimeError``: the structure is valid, the model is not
trusted there.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import numpy as np
import torch
from ase import Atoms

from . import keys

__all__ = [
    "MIN_DISTANCE",
    "ON_EXTRAPOLATION",
    "CloseAtomsError",
    "ExtrapolationError",
    "ExtrapolationMonitor",
    "ExtrapolationWarning",
    "NonFiniteOutputError",
    "check_distances",
    "check_finite",
    "closest_pair",
]

MIN_DISTANCE = 0.1
"""Å: atoms closer than this are refused by the calculators (0 disables the check)."""

ON_EXTRAPOLATION = ("ignore", "warn", "raise")


class CloseAtomsError(ValueError):
    """Two atoms closer than the calculator's ``min_distance``."""


class NonFiniteOutputError(ValueError):
    """The model returned a NaN or infinite energy, force or stress."""


class ExtrapolationError(RuntimeError):
    """Atoms outside the training data, with ``on_extrapolation="raise"``.

    ``counts`` holds the per-atom counts of descriptor components out of range.
    """

    def __init__(self, message: str, counts: np.ndarray | None = None) -> None:
        super().__init__(message)
        self.counts = counts


class ExtrapolationWarning(UserWarning):
    """Atoms outside the training data (``on_extrapolation="warn"``)."""


def _pairs(graph: Mapping[str, torch.Tensor]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Centre, neighbour, integer shift and length of every edge of a one-structure graph."""
    edge_index = graph[keys.EDGE_INDEX].detach().cpu().numpy()
    shifts = graph[keys.CELL_SHIFTS].detach().cpu().double().numpy()  # [n_edges, 3]
    positions = graph[keys.POSITIONS].detach().cpu().double().numpy()  # [n_atoms, 3]
    cell = graph[keys.CELL].detach().cpu().double().numpy()[0]  # [3, 3]
    i, j = edge_index[0], edge_index[1]
    vectors = positions[j] - positions[i] + shifts @ cell  # [n_edges, 3]
    return i, j, shifts, np.linalg.norm(vectors, axis=1)


def _atom(atoms: Atoms, i: int) -> str:
    return f"{i} ({atoms.get_chemical_symbols()[i]})"


def _describe(atoms: Atoms, i: int, j: int, shift: np.ndarray, distance: float) -> str:
    image = f" (periodic image {shift.astype(int).tolist()})" if np.any(shift) else ""
    return f"atoms {_atom(atoms, i)} and {_atom(atoms, j)}{image} are {distance:.4g} Å apart"


def _structure(atoms: Atoms) -> str:
    return f"{atoms.get_chemical_formula()} ({len(atoms)} atoms)"


def closest_pair(
    atoms: Atoms, graph: Mapping[str, torch.Tensor]
) -> tuple[int, int, np.ndarray, float] | None:
    """The closest pair within the graph's cutoff: (i, j, integer cell shift, distance in Å), or None."""
    i, j, shifts, d = _pairs(graph)
    if len(d) == 0:
        return None
    k = int(np.argmin(d))
    return int(i[k]), int(j[k]), shifts[k], float(d[k])


def check_distances(atoms: Atoms, graph: Mapping[str, torch.Tensor], min_distance: float) -> None:
    """Raise :class:`CloseAtomsError` if two atoms of ``graph`` are closer than ``min_distance`` Å."""
    if min_distance <= 0:
        return
    pair = closest_pair(atoms, graph)
    if pair is not None and not pair[3] >= min_distance:  # also catches a NaN distance
        raise CloseAtomsError(
            f"{_structure(atoms)}: {_describe(atoms, *pair)}, closer than min_distance = {min_distance} Å: "
            "coincident or nearly coincident atoms, where the model is not defined"
        )


def check_finite(
    atoms: Atoms, graph: Mapping[str, torch.Tensor], results: Mapping[str, object], where: str = "the model"
) -> None:
    """Raise :class:`NonFiniteOutputError` if any value of ``results`` is NaN or infinite.

    The message names the outputs, the atoms with non-finite forces and the closest pair.
    """
    bad = [name for name, value in results.items() if not np.all(np.isfinite(np.asarray(value, dtype=float)))]
    if not bad:
        return
    detail = ", ".join(bad)
    forces = results.get("forces")
    if forces is not None:
        atoms_bad = np.flatnonzero(~np.all(np.isfinite(np.asarray(forces, dtype=float)), axis=-1))
        if len(atoms_bad):
            shown = ", ".join(_atom(atoms, int(a)) for a in atoms_bad[:10])
            more = f" and {len(atoms_bad) - 10} more" if len(atoms_bad) > 10 else ""
            detail += f" (forces on atom(s) {shown}{more})"
    pair = closest_pair(atoms, graph)
    closest = "no two atoms within the cutoff" if pair is None else f"closest pair: {_describe(atoms, *pair)}"
    raise NonFiniteOutputError(f"{_structure(atoms)}: {where} returned non-finite {detail}; {closest}")


class ExtrapolationMonitor:
    """Turns per-atom extrapolation counts into calculator results, warnings or errors.

    One instance per calculator: with ``mode="warn"`` it warns the first time atoms
    extrapolate, and again only when more atoms extrapolate than in any structure warned about.
    """

    def __init__(self, mode: str = "warn") -> None:
        if mode not in ON_EXTRAPOLATION:
            raise ValueError(f"on_extrapolation = {mode!r}: must be one of {list(ON_EXTRAPOLATION)}")
        self.mode = mode
        self._warned_atoms = 0  # the most extrapolating atoms warned about so far

    def report(self, atoms: Atoms, counts: np.ndarray | None) -> dict[str, object]:
        """``{"extrapolation": counts [n_atoms], "extrapolating_atoms": int}`` ({} if ``counts`` is None)."""
        if counts is None:
            return {}
        counts = np.asarray(counts, dtype=np.float64).reshape(len(atoms))
        n = int(np.count_nonzero(counts > 0))
        if n and self.mode == "raise":
            raise ExtrapolationError(f"the model extrapolates: {self.describe(atoms, counts)}", counts)
        if self.mode == "warn" and n > self._warned_atoms:
            self._warned_atoms = n
            warnings.warn(
                f"the model extrapolates: {self.describe(atoms, counts)} (warned again only if more "
                "atoms extrapolate)",
                ExtrapolationWarning,
                stacklevel=4,
            )
        return {"extrapolation": counts, "extrapolating_atoms": n}

    @staticmethod
    def describe(atoms: Atoms, counts: np.ndarray) -> str:
        """'k of n atoms outside the training data; worst: atom i (El), m descriptor components'."""
        out = np.flatnonzero(counts > 0)
        worst = int(np.argmax(counts))
        listed = ", ".join(str(int(a)) for a in out[:10]) + (", ..." if len(out) > 10 else "")
        return (
            f"{len(out)} of {len(atoms)} atoms of {atoms.get_chemical_formula()} outside the training data "
            f"(atoms {listed}); worst: atom {_atom(atoms, worst)}, {counts[worst]:g} descriptor "
            "component(s) out of range"
        )
