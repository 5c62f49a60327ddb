"""Per-element reference energies and simple dataset statistics."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from ase.data import atomic_numbers as _SYMBOL_TO_Z
from ase.data import chemical_symbols

from nearsight.data.frame import Frame

__all__ = [
    "composition_matrix",
    "fit_reference_energies",
    "isolated_atom_energies",
    "force_rms",
    "energy_residual_std",
]


def composition_matrix(frames: Sequence[Frame], species: Sequence[int]) -> np.ndarray:
    """``[n_frames, n_species]`` counts of each element in each frame."""
    column = {int(z): k for k, z in enumerate(species)}
    counts = np.zeros((len(frames), len(species)))
    for row, frame in enumerate(frames):
        for z, n in zip(*np.unique(frame.numbers, return_counts=True), strict=True):
            if int(z) not in column:
                raise ValueError(f"{frame.where}: element Z={int(z)} is not in species {species}")
            counts[row, column[int(z)]] = n
    return counts


def fit_reference_energies(frames: Sequence[Frame], species: Sequence[int] | None = None) -> dict[int, float]:
    """Least-squares per-element energies e_Z with E_k ≈ Σ_Z n_kZ e_Z.

    Only frames with an energy take part.  ``species`` defaults to every element
    found in them.  The fit uses ``numpy.linalg.lstsq``, which returns the
    minimum-norm solution when the compositions do not determine e_Z (e.g. a
    single-element set, or several elements always in the same ratio): the
    sum Σ n_Z e_Z is then still right for those compositions, the split is not,
    and a ``UserWarning`` says so (e.g. every frame of an ethanol MD has the same
    composition C2H6O: use isolated-atom energies to get a meaningful split).
    An element in ``species`` that never occurs gets 0.
    """
    labelled = [f for f in frames if f.energy is not None]
    if not labelled:
        raise ValueError("fit_reference_energies: no frame has an energy")
    if species is None:
        species = sorted({int(z) for f in labelled for z in np.unique(f.numbers)})
    species = [int(z) for z in species]
    counts = composition_matrix(labelled, species)
    energies = np.array([f.energy for f in labelled], dtype=np.float64)
    solution, _, rank, _ = np.linalg.lstsq(counts, energies, rcond=None)
    occurring = [z for z, column in zip(species, counts.T, strict=True) if column.any()]
    if rank < len(occurring):
        files = sorted({str(f.source) for f in labelled})
        source = ", ".join(files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else "")
        symbols = [chemical_symbols[z] for z in occurring]
        how = (
            "all have the same composition"
            if len({tuple(row) for row in (counts / counts.sum(axis=1, keepdims=True)).round(12)}) == 1
            else f"have compositions that fix only {rank} combination(s) of the {len(occurring)} elements"
        )
        warnings.warn(
            f"reference_energies least_squares: the {len(labelled)} frames with an energy ({source}) "
            f"{how}, so the split of the energy between the elements {symbols} is arbitrary (the "
            "minimum-norm solution); per-atom energies are not comparable across elements. Give "
            "isolated-atom energies (data.reference_energies: a file or {element: eV}) for a physical split",
            UserWarning,
            stacklevel=2,
        )
    return {z: float(e) for z, e in zip(species, solution, strict=True)}


def _to_z(key: int | str) -> int:
    if isinstance(key, (int, np.integer)):
        return int(key)
    text = str(key).strip()
    if text.isdigit():
        return int(text)
    if text not in _SYMBOL_TO_Z:
        raise ValueError(f"unknown element {key!r}")
    return _SYMBOL_TO_Z[text]


def isolated_atom_energies(
    source: str | Path | Mapping[int | str, float], *, energy_key: str = "energy"
) -> dict[int, float]:
    """Isolated-atom energies ``{Z: eV}`` from a ``{symbol or Z: energy}`` dict or a file.

    In a file, single-atom frames with an energy are used; if any frame has
    config_type ``isolated_atom`` only those are.  Two different energies for
    one element are an error.
    """
    if isinstance(source, Mapping):
        return {_to_z(k): float(v) for k, v in source.items()}
    from nearsight.data.readers import read_frames

    frames = read_frames(source, energy_key=energy_key, validate=False)
    single = [f for f in frames if f.n_atoms == 1 and f.energy is not None]
    tagged = [f for f in single if f.config_type == "isolated_atom"]
    chosen = tagged or single
    if not chosen:
        raise ValueError(f"{str(source)!r}: no single-atom frame with an energy")
    out: dict[int, float] = {}
    for frame in chosen:
        z = int(frame.numbers[0])
        if z in out and not np.isclose(out[z], frame.energy, rtol=0, atol=1e-8):
            raise ValueError(
                f"{frame.where}: second isolated-atom energy {frame.energy} for Z={z} differs from {out[z]}"
            )
        out[z] = float(frame.energy)
    return out


def force_rms(frames: Sequence[Frame]) -> float:
    """Root mean square of all force components (eV/Å) over frames that have forces."""
    parts = [f.forces.reshape(-1) for f in frames if f.forces is not None]
    if not parts:
        raise ValueError("force_rms: no frame has forces")
    values = np.concatenate(parts)
    return float(np.sqrt(np.mean(values**2)))


def energy_residual_std(frames: Sequence[Frame], ref: Mapping[int, float]) -> float:
    """Standard deviation (eV) of E_k - Σ_i e_{Z_i} over frames that have an energy."""
    residuals = []
    for frame in frames:
        if frame.energy is None:
            continue
        missing = set(np.unique(frame.numbers).tolist()) - set(ref)
        if missing:
            raise ValueError(f"{frame.where}: no reference energy for Z={sorted(missing)}")
        baseline = sum(ref[int(z)] for z in frame.numbers)
        residuals.append(frame.energy - baseline)
    if not residuals:
        raise ValueError("energy_residual_std: no frame has an energy")
    return float(np.std(residuals))
