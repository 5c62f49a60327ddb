"""Readers that turn files into lists of :class:`~nearsight.data.frame.Frame`.

Supported inputs: anything ``ase.io.read`` understands (extxyz, ...), ASE
databases (``.db``), DeePMD npy system directories (:mod:`~nearsight.data.deepmd`) and
mlearn JSON files (:mod:`~nearsight.data.mlearn`).  All labels come out in eV, Å and eV/Å³
with ASE's stress sign; where they sit in a file is :mod:`~nearsight.data.label_keys`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from nearsight import keys as nskeys
from nearsight.data.deepmd import read_deepmd
from nearsight.data.frame import Frame, select
from nearsight.data.label_keys import (
    LABEL_KEY_CANDIDATES,
    LabelKeys,
    detect_label_keys,
    electronic_inputs,
    extra_label_keys,
    lookup,
    no_labels_error,
    stress_to_3x3,
    virial_to_stress,
)
from nearsight.data.mlearn import read_mlearn
from nearsight.data.read_errors import read_error

__all__ = [
    "LABEL_KEY_CANDIDATES",
    "LabelKeys",
    "detect_label_keys",
    "read_frames",
    "read_frames_and_keys",
    "read_many",
    "read_deepmd",
    "read_mlearn",
    "read_ase_db",
    "read_ase",
]


def _frame_from_atoms(
    atoms: Atoms,
    keys: LabelKeys,
    *,
    source: str,
    index: int,
    info: Mapping[str, Any],
    arrays: Mapping[str, Any],
) -> Frame:
    """Geometry from ``atoms``; labels from ``info``/``arrays`` or the calculator results."""
    where = f"{source!r}, frame {index}"
    results = atoms.calc.results if atoms.calc is not None else {}
    energy = lookup(keys.energy, info, results)
    forces = lookup(keys.forces, arrays, info, results)
    stress = lookup(keys.stress, info, results)
    if stress is not None:
        stress = stress_to_3x3(stress, where)
    else:
        virial = lookup(keys.virial, info, results)
        if virial is not None:
            stress = virial_to_stress(virial, atoms.cell.array, where)
    if energy is not None:
        try:
            energy = float(np.asarray(energy, dtype=np.float64).reshape(()))
        except ValueError:
            raise ValueError(f"{where}: energy {energy!r} is not a single number") from None
    if forces is not None:
        forces = np.asarray(forces, dtype=np.float64)
    labels = {}
    for name, key in keys.extra:
        per_atom = nskeys.field(name).per == "atom"
        value = lookup(key, arrays, info, results) if per_atom else lookup(key, info, results)
        if value is None:
            continue
        try:
            value = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"{where}: label {key!r} ({name}) is not numeric: {value!r}") from None
        declared = nskeys.field(name)
        if not per_atom and all(isinstance(d, int) for d in declared.shape):
            if value.size == int(np.prod(declared.shape)) and value.ndim > len(declared.shape):
                value = value.reshape(declared.shape)  # e.g. a dipole stored as [[x, y, z]]
        tail = declared.shape[1:]
        if (
            per_atom
            and value.ndim == 2
            and len(declared.shape) >= 2
            and all(isinstance(d, int) for d in tail)
        ):
            size = int(np.prod(tail))  # extxyz arrays are 2-D: [n_atoms, S * 3] -> [n_atoms, S, 3]
            if value.shape[1] % size == 0:
                value = value.reshape(value.shape[0], value.shape[1] // size, *tail)
        labels[name] = value
    config_type = info.get(keys.config_type)
    weight = info.get(keys.weight, 1.0)
    charge, multiplicity, given = electronic_inputs(info, keys, where)
    frame = Frame.from_atoms(
        atoms,
        energy=energy,
        forces=forces,
        stress=stress,
        source=source,
        index=index,
        config_type=None if config_type is None else str(config_type),
        weight=float(weight),
        labels=labels,
        total_charge=charge,
        spin_multiplicity=multiplicity,
        inputs_given=given,
    )
    used = {
        keys.energy,
        keys.forces,
        keys.stress,
        keys.virial,
        keys.config_type,
        keys.weight,
        keys.total_charge,
        keys.spin_multiplicity,
    }
    used |= {key for _, key in keys.extra}
    frame.info.update({k: v for k, v in info.items() if k not in used})
    return frame


def _read_images(path: str | Path, format: str | None) -> list[Atoms]:
    """Every image of ``path`` by ``ase.io.read``; a file it cannot parse raises a ``ValueError``
    naming the file and the frame (and for (ext)xyz files the line)."""
    import ase.io

    try:
        images = ase.io.read(str(path), index=":", format=format)
    except Exception as exc:  # noqa: BLE001 - ASE's parsers raise many types; re-raised naming the frame
        raise ValueError(read_error(Path(path), format, exc)) from exc
    return [images] if isinstance(images, Atoms) else list(images)


# one structure of a file: the atoms, where its labels sit (info, arrays) and extra frame info
_Record = tuple[Atoms, Mapping[str, Any], Mapping[str, Any], dict[str, Any]]


def _ase_records(path: str | Path, format: str | None) -> list[_Record]:
    """The records of a file ``ase.io`` reads (labels in ``info``, ``arrays`` or the calculator)."""
    return [(atoms, atoms.info, atoms.arrays, {}) for atoms in _read_images(path, format)]


def _db_records(path: str | Path) -> list[_Record]:
    """The records of an ASE database: labels from the row, ``key_value_pairs`` or ``data``."""
    import ase.db

    if not Path(path).exists():
        raise ValueError(f"{str(path)!r}: no such database file")
    with ase.db.connect(str(path)) as db:
        rows = list(db.select())
    records = []
    for row in rows:
        data = dict(row.data)
        records.append((row.toatoms(), {**data, **row.key_value_pairs}, data, {"db_id": int(row.id)}))
    return records


def _present_keys(records: Sequence[_Record]) -> dict[str, set[str]]:
    """The label-like keys of the records: ``info``, ``arrays`` and calculator ``results``."""
    found: dict[str, set[str]] = {"info": set(), "arrays": set(), "results": set()}
    for atoms, info, arrays, _ in records:
        found["info"].update(map(str, info))
        found["arrays"].update(str(k) for k in arrays if k not in ("numbers", "positions"))
        if atoms.calc is not None:
            found["results"].update(map(str, atoms.calc.results))
    return found


def _frames_of(
    records: Sequence[_Record], keys: LabelKeys, source: str, index: int | str | slice
) -> list[Frame]:
    """Frames of the records picked by ``index`` (``Frame.index``: the position in the file)."""
    frames = []
    for i, (atoms, info, arrays, extra) in select(list(enumerate(records)), index):
        frame = _frame_from_atoms(atoms, keys, source=source, index=i, info=info, arrays=arrays)
        frame.info.update(extra)
        frames.append(frame)
    return frames


def read_ase(
    path: str | Path,
    format: str | None = None,
    *,
    index: int | str | slice = ":",
    keys: LabelKeys | None = None,
) -> list[Frame]:
    """Frames from any file that ``ase.io.read`` can read (extxyz, ...).

    Labels are looked up under the given keys in ``atoms.info`` / ``atoms.arrays``
    first, then in the calculator results (where ASE's extxyz reader puts
    ``energy``, ``forces`` and ``stress``).  The whole file is read and ``index``
    applied afterwards, so ``Frame.index`` is always the position in the file.  A file
    ASE cannot parse (truncated, a wrong atom count, text in a number, an unknown
    property type) raises a ``ValueError`` naming the file, the frame and, for
    (ext)xyz files, the line.
    """
    return _frames_of(_ase_records(path, format), keys or LabelKeys(), str(path), index)


def read_ase_db(
    path: str | Path,
    *,
    index: int | str | slice = ":",
    keys: LabelKeys | None = None,
) -> list[Frame]:
    """Frames from an ASE database; labels from the row, ``key_value_pairs`` or ``data``."""
    return _frames_of(_db_records(path), keys or LabelKeys(), str(path), index)


def _detect_format(path: Path, format: str | None) -> str:
    if format in ("deepmd", "mlearn", "db"):
        return format
    if format is not None:
        return "ase"
    if path.is_dir():
        if (path / "type.raw").exists():
            return "deepmd"
        systems = sorted(str(p.parent) for p in path.glob("*/type.raw"))
        hint = f"; it holds DeePMD systems {systems}, use read_many" if systems else ""
        raise ValueError(f"{str(path)!r}: directory is not a DeePMD system (no type.raw){hint}")
    if path.suffix.lower() == ".json":
        return "mlearn"
    if path.suffix.lower() == ".db":
        return "db"
    return "ase"


def read_frames(
    path: str | Path,
    format: str | None = None,
    *,
    index: int | str | slice = ":",
    energy_key: str | None = "energy",
    forces_key: str | None = "forces",
    stress_key: str | None = "stress",
    virial_key: str | None = "virial",
    config_type_key: str = "config_type",
    weight_key: str = "weight",
    type_map: Sequence[str] | None = None,
    validate: bool = True,
    min_distance: float = 0.5,
    extra_labels: Mapping[str, str] | None = None,
    total_charge_key: str = "charge",
    multiplicity_key: str = "multiplicity",
) -> list[Frame]:
    """Read every frame (or those picked by ``index``) of one file or DeePMD directory.

    ``format``: ``"deepmd"``, ``"mlearn"``, ``"db"`` or any ``ase.io`` format;
    by default guessed from the path.  Missing labels are ``None``.  A label key of
    ``None`` is detected from the file (:func:`detect_label_keys`: ``energy``,
    ``REF_energy``, ``DFT_energy``, ``dft_energy``, ...).  ``total_charge_key`` and
    ``multiplicity_key`` name the info keys of each structure's total charge Q (e, 0 where
    absent) and spin multiplicity M = 2S + 1 (1 where absent).  ``extra_labels``
    (``{declared output field: key in the file}``, e.g. ``{"charges": "mulliken"}``)
    reads labels beyond energy/forces/stress into ``Frame.labels``.  With
    ``validate`` the frames are checked by :func:`validate_frames` (no labels
    required) and a ``ValueError`` names the file and frame of any problem.
    """
    frames, _ = read_frames_and_keys(
        path,
        format,
        index=index,
        energy_key=energy_key,
        forces_key=forces_key,
        stress_key=stress_key,
        virial_key=virial_key,
        config_type_key=config_type_key,
        weight_key=weight_key,
        type_map=type_map,
        validate=validate,
        min_distance=min_distance,
        extra_labels=extra_labels,
        total_charge_key=total_charge_key,
        multiplicity_key=multiplicity_key,
    )
    return frames


def read_frames_and_keys(
    path: str | Path,
    format: str | None = None,
    *,
    index: int | str | slice = ":",
    energy_key: str | None = None,
    forces_key: str | None = None,
    stress_key: str | None = None,
    virial_key: str | None = None,
    config_type_key: str = "config_type",
    weight_key: str = "weight",
    type_map: Sequence[str] | None = None,
    validate: bool = True,
    min_distance: float = 0.5,
    extra_labels: Mapping[str, str] | None = None,
    require_labels: bool = False,
    total_charge_key: str = "charge",
    multiplicity_key: str = "multiplicity",
) -> tuple[list[Frame], dict[str, str | None]]:
    """:func:`read_frames` with every label key detected unless given, and the keys it used.

    Returns the frames and ``{"energy": key or None, "forces": ..., "stress": ..., "virial": ...}``
    (for DeePMD and mlearn files the files and fields the labels come from).  With
    ``require_labels`` a file where no frame has an energy, forces or stress label, or a key
    given here that no frame has, is a ``ValueError`` that lists the keys the file holds.
    """
    p = Path(path)
    source = repr(str(path))
    if not p.exists():
        raise ValueError(f"{source}: no such file or directory")
    kind = _detect_format(p, format)
    extra = extra_label_keys(extra_labels)
    given = {"energy": energy_key, "forces": forces_key, "stress": stress_key, "virial": virial_key}
    if kind == "deepmd":
        frames = read_deepmd(path, index=index, type_map=type_map, extra=extra)
        used: dict[str, str | None] = {
            "energy": "energy.npy", "forces": "force.npy", "stress": None, "virial": "virial.npy",
        }  # fmt: skip
    elif kind == "mlearn":
        if extra:
            raise ValueError(f"{source}: mlearn JSON files hold no labels beyond energy, forces and stress")
        frames = read_mlearn(path, index=index)
        used = {
            "energy": "outputs.energy", "forces": "outputs.forces", "stress": "outputs.virial_stress",
            "virial": None,
        }  # fmt: skip
    else:
        records = _db_records(path) if kind == "db" else _ase_records(path, format)
        present = _present_keys(records)
        everywhere = set().union(*present.values())
        used = detect_label_keys(everywhere, given, source)
        if require_labels:
            for label, key in given.items():
                if key is not None and key not in everywhere and label != "virial":
                    listing = "; ".join(
                        f"{kind} keys {sorted(names)}" for kind, names in present.items() if names
                    )
                    raise ValueError(
                        f"{source}: {label}_key {key!r}: no frame has it; the file has {listing}"
                    )
        keys = LabelKeys(
            used["energy"], used["forces"], used["stress"], used["virial"], config_type_key, weight_key, extra,
            total_charge=total_charge_key, spin_multiplicity=multiplicity_key,
        )  # fmt: skip
        frames = _frames_of(records, keys, str(path), index)
        if require_labels and not any(
            f.energy is not None or f.forces is not None or f.stress is not None for f in frames
        ):
            raise no_labels_error(source, present, given)
    if (
        require_labels
        and kind in ("deepmd", "mlearn")
        and not any(f.energy is not None or f.forces is not None or f.stress is not None for f in frames)
    ):
        raise ValueError(f"{source}: no frame has an energy, forces or stress label")
    if validate:
        from nearsight.data.validate import validate_frames

        validate_frames(frames, require=(), min_distance=min_distance)
    return frames, used


def read_many(paths: Iterable[str | Path], **kwargs: Any) -> list[Frame]:
    """:func:`read_frames` on each path, concatenated in order."""
    frames: list[Frame] = []
    for path in paths:
        frames.extend(read_frames(path, **kwargs))
    return frames
