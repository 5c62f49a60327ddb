"""Checks that catch broken input data before it reaches a model.

Every error is a ``ValueError`` whose message starts with the file and frame
(``Frame.where``) and names the offending value.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from ase.data import chemical_symbols

from nearsight import keys
from nearsight.data.frame import Frame

__all__ = [
    "validate_frame", "validate_frames", "label_shapes", "LABELS", "check_electronic_state",
    "check_inputs_in_every_frame", "check_full_or_no_periodicity",
]  # fmt: skip

LABELS = ("energy", "forces", "stress")


def _label(frame: Frame, name: str) -> np.ndarray | float | None:
    """Label ``name`` of ``frame`` (energy, forces, stress or an extra label), None if absent."""
    return getattr(frame, name) if name in LABELS else frame.labels.get(name)


def _check_label_name(name: str) -> None:
    if name not in LABELS and name not in keys.FIELDS:
        raise ValueError(f"unknown label {name!r} in require; choose from {LABELS} or a declared field")


def _expected_shape(frame: Frame, name: str) -> tuple[int | str, ...]:
    declared = keys.field(name)
    return ((frame.n_atoms,) if declared.per == "atom" else ()) + declared.shape


def _check_extra_shapes(frame: Frame) -> None:
    """Each extra label has its declared shape (sizes named by a string are checked across frames)."""
    for name, value in frame.labels.items():
        if name not in keys.FIELDS:
            raise ValueError(f"{frame.where}: label {name!r} is not a declared field of nearsight.keys")
        expected = _expected_shape(frame, name)
        ok = value.ndim == len(expected) and all(
            isinstance(e, str) or e == n for e, n in zip(expected, value.shape)
        )
        if not ok:
            shown = tuple(e if isinstance(e, int) else f"{e}" for e in expected)
            raise ValueError(f"{frame.where}: label {name!r} has shape {value.shape}, expected {shown}")


def label_shapes(frames: Sequence[Frame], names: Iterable[str]) -> dict[str, tuple[int, ...]]:
    """The concrete trailing shape of each extra label (declared sizes named by a string, such
    as ``n_states``, resolved from the frames and required to agree between them)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for name in names:
        declared = keys.field(name)
        lead = 1 if declared.per == "atom" else 0
        for frame in frames:
            value = frame.labels.get(name)
            if value is None:
                continue
            shape = tuple(int(n) for n in value.shape[lead:])
            if name in shapes and shapes[name] != shape:
                raise ValueError(
                    f"{frame.where}: label {name!r} has trailing shape {shape}, but earlier frames have "
                    f"{shapes[name]} ({', '.join(map(str, declared.shape))})"
                )
            shapes[name] = shape
        if name not in shapes:  # no frame carries it: the declared shape, if it names no size
            if not all(isinstance(d, int) for d in declared.shape):
                raise ValueError(
                    f"label {name!r}: no frame carries it, so its shape {declared.shape} is unknown"
                )
            shapes[name] = tuple(int(d) for d in declared.shape)
    return shapes


def _symbol(z: int) -> str:
    return chemical_symbols[z] if 0 < z < len(chemical_symbols) else f"Z={z}"


def _check_finite(frame: Frame, name: str, value: np.ndarray | float) -> None:
    arr = np.asarray(value, dtype=np.float64)
    bad = ~np.isfinite(arr)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0]) if arr.ndim else ()
        at = f" at {first}" if first else ""
        raise ValueError(f"{frame.where}: {name} is not finite{at}: {arr[first] if first else arr}")


def _check_shapes(frame: Frame) -> None:
    n = frame.n_atoms
    if n == 0:
        raise ValueError(f"{frame.where}: frame has zero atoms")
    if frame.positions.shape != (n, 3):
        raise ValueError(f"{frame.where}: positions shape {frame.positions.shape} != ({n}, 3)")
    if frame.forces is not None and frame.forces.shape != (n, 3):
        raise ValueError(f"{frame.where}: forces shape {frame.forces.shape} != ({n}, 3)")
    if frame.stress is not None and frame.stress.shape != (3, 3):
        raise ValueError(f"{frame.where}: stress shape {frame.stress.shape} != (3, 3)")
    _check_extra_shapes(frame)


def _check_cell(frame: Frame) -> None:
    periodic = np.flatnonzero(frame.pbc)
    if periodic.size == 0:
        return
    vectors = frame.cell[periodic]
    lengths = np.linalg.norm(vectors, axis=1)
    for axis, length in zip(periodic, lengths, strict=True):
        if length < 1e-8:
            raise ValueError(
                f"{frame.where}: cell vector {axis} is zero but the direction is periodic "
                f"(cell {frame.cell.tolist()})"
            )
    # Singular values of the unit-normalised periodic vectors: one near zero
    # means they are linearly dependent.
    sv = np.linalg.svd(vectors / lengths[:, None], compute_uv=False)
    if sv.min() < 1e-6:
        volume = abs(float(np.linalg.det(frame.cell)))
        raise ValueError(
            f"{frame.where}: periodic cell is singular (volume {volume:.3g} Å³, cell {frame.cell.tolist()})"
        )


def _check_distances(frame: Frame, min_distance: float) -> None:
    if min_distance <= 0 or frame.n_atoms == 0:
        return
    from vesin import NeighborList

    if frame.pbc.any():
        box, periodic = frame.cell, frame.pbc.tolist()
    else:
        box, periodic = np.zeros((3, 3)), False
    nl = NeighborList(cutoff=float(min_distance), full_list=False)
    i, j, shifts, d = nl.compute(frame.positions, box, periodic, quantities="ijSd")
    if len(d) == 0:
        return
    k = int(np.argmin(d))
    a, b = int(i[k]), int(j[k])
    if d[k] >= min_distance:
        return
    image = f" (periodic image {shifts[k].tolist()})" if np.any(shifts[k]) else ""
    raise ValueError(
        f"{frame.where}: atoms {a} ({_symbol(int(frame.numbers[a]))}) and {b} "
        f"({_symbol(int(frame.numbers[b]))}){image} are {float(d[k]):.4f} Å apart, "
        f"closer than min_distance={min_distance} Å"
    )


def _check_species(frame: Frame, known_species: Iterable[int] | None) -> None:
    bad = (frame.numbers < 1) | (frame.numbers >= len(chemical_symbols))
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{frame.where}: atom {k} has invalid atomic number {frame.numbers[k]}")
    if known_species is None:
        return
    known = {int(z) for z in known_species}
    unknown = sorted(set(frame.numbers.tolist()) - known)
    if unknown:
        k = int(np.flatnonzero(frame.numbers == unknown[0])[0])
        names = ", ".join(_symbol(z) for z in unknown)
        known_names = ", ".join(_symbol(z) for z in sorted(known))
        raise ValueError(
            f"{frame.where}: element {names} (atom {k}) is not among the known species [{known_names}]"
        )


def _whole(value: float) -> bool:
    return bool(np.isfinite(value)) and abs(value - round(value)) <= 1e-6


def check_electronic_state(frame: Frame) -> None:
    """Total charge Q a whole number of e; spin multiplicity M = 2S + 1 a whole number ≥ 1.  Where
    the file states M, the electron count N_e = Σ Z − Q must be ≥ M − 1 and have the parity of
    M − 1 = 2S (an even number of electrons has odd multiplicity: singlet, triplet, ...)."""
    q, m = frame.total_charge, frame.spin_multiplicity
    if not _whole(q):
        raise ValueError(f"{frame.where}: total charge {q!r} must be a whole number of e")
    if not _whole(m) or m < 1:
        raise ValueError(
            f"{frame.where}: spin multiplicity {m!r} must be a whole number >= 1 (M = 2S + 1: 1 singlet, "
            "2 doublet, ...; a file whose key holds S or 2S needs converting)"
        )
    if "spin_multiplicity" not in frame.inputs_given:
        return
    electrons = int(frame.numbers.sum()) - int(round(q))
    unpaired = int(round(m)) - 1
    if unpaired > electrons or (electrons - unpaired) % 2:
        raise ValueError(
            f"{frame.where}: spin multiplicity {int(round(m))} is impossible with {electrons} electrons "
            f"(Σ Z = {int(frame.numbers.sum())}, total charge {int(round(q))}): M − 1 = 2S must have the "
            "parity of the electron count and not exceed it"
        )


def check_inputs_in_every_frame(
    frames: Sequence[Frame], names: Iterable[str], keys_in_file: dict[str, str]
) -> None:
    """Each per-structure input in ``names`` (``"total_charge"``, ``"spin_multiplicity"``) stated
    by every frame or by none: a file that gives Q for some frames only leaves the others
    ambiguous (0 by default, or a label forgotten?).  Raises naming the first frame without it,
    one with it and the key (``keys_in_file[name]``)."""
    frames = sorted(frames, key=lambda f: (f.source, f.index))  # in file order, whatever the split
    for name in names:
        with_it = [f for f in frames if name in f.inputs_given]
        without = [f for f in frames if name not in f.inputs_given]
        if with_it and without:
            what = "total charge" if name == "total_charge" else "spin multiplicity"
            raise ValueError(
                f"{without[0].where}: no {what} (info key {keys_in_file[name]!r}), but {len(with_it)} of "
                f"{len(frames)} frames have one (e.g. {with_it[0].where}); the model reads it, so give it "
                "in every frame or in none"
            )


def check_full_or_no_periodicity(frames: Sequence[Frame]) -> None:
    """Every frame periodic along all three axes or along none (slabs and wires raise, naming the
    frame and its pbc): what Ewald/PME and the direct Coulomb sum handle."""
    for frame in frames:
        if 0 < int(frame.pbc.sum()) < 3:
            raise ValueError(
                f"{frame.where}: pbc = {frame.pbc.tolist()} (mixed periodicity: a slab or a wire); Coulomb "
                "handles fully periodic or non-periodic structures only"
            )


def validate_frame(
    frame: Frame,
    *,
    require: Sequence[str] = (),
    min_distance: float = 0.5,
    known_species: Iterable[int] | None = None,
) -> None:
    """Raise ``ValueError`` if ``frame`` is malformed or lacks a label in ``require``.

    Checks: at least one atom; array shapes; finite positions, cell and labels;
    valid and known elements; non-singular periodic cell; no two atoms (or
    periodic images) closer than ``min_distance`` Å (0 disables).
    """
    for label in require:
        _check_label_name(label)
        if _label(frame, label) is None:
            raise ValueError(f"{frame.where}: required label {label!r} is missing")
    _check_shapes(frame)
    _check_finite(frame, "positions", frame.positions)
    _check_finite(frame, "cell", frame.cell)
    for label in LABELS:
        value = getattr(frame, label)
        if value is not None:
            _check_finite(frame, label, value)
    for label, value in frame.labels.items():
        _check_finite(frame, label, value)
    check_electronic_state(frame)
    if not np.isfinite(frame.weight) or frame.weight < 0:
        raise ValueError(f"{frame.where}: weight {frame.weight} must be finite and >= 0")
    _check_species(frame, known_species)
    _check_cell(frame)
    _check_distances(frame, min_distance)


def validate_frames(
    frames: Sequence[Frame],
    *,
    require: Sequence[str] = ("energy", "forces"),
    min_distance: float = 0.5,
    known_species: Iterable[int] | None = None,
    strict: bool = False,
) -> None:
    """Validate every frame; raise ``ValueError`` naming the file and frame.

    A label in ``require`` missing from *every* frame is an error (a label
    missing from only some frames is allowed and masked in the loss); with
    ``strict=True`` each frame must carry every required label.
    """
    known = None if known_species is None else [int(z) for z in known_species]
    for label in require:
        _check_label_name(label)
    for frame in frames:
        validate_frame(
            frame,
            require=require if strict else (),
            min_distance=min_distance,
            known_species=known,
        )
    label_shapes(frames, {name for f in frames for name in f.labels})  # sizes agree across frames
    for label in require:
        if frames and all(_label(f, label) is None for f in frames):
            sources = sorted({f.source for f in frames})
            raise ValueError(
                f"required label {label!r} is missing in all {len(frames)} frames "
                f"(frames {frames[0].index}..{frames[-1].index}) of {', '.join(map(repr, sources))}"
            )
