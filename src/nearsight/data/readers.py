"""Readers that turn files into lists of :class:`~nearsight.data.frame.Frame`.

Supported inputs: anything ``ase.io.read`` understands (extxyz, ...), ASE
databases (``.db``), DeePMD npy system directories and mlearn JSON files.
All labels come out in eV, Å and eV/Å³ with ASE's stress sign.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers as _SYMBOL_TO_Z

from nearsight import keys as nskeys
from nearsight import units
from nearsight.data.frame import Frame

__all__ = ["LabelKeys", "read_frames", "read_many", "read_deepmd", "read_mlearn", "read_ase_db", "read_ase"]

# VASP orders the six stress components xx, yy, zz, xy, yz, zx (checked against
# finite-strain energy differences of the mlearn silicon "Elastic" set).
_VASP_ORDER = ((0, 0), (1, 1), (2, 2), (0, 1), (1, 2), (2, 0))
# ASE's Voigt order: xx, yy, zz, yz, xz, xy.
_ASE_ORDER = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))


def _six_to_3x3(values: np.ndarray, order: tuple[tuple[int, int], ...]) -> np.ndarray:
    out = np.zeros((3, 3))
    for value, (i, j) in zip(values, order, strict=True):
        out[i, j] = out[j, i] = value
    return out


def stress_to_3x3(value: Any, where: str) -> np.ndarray:
    """A 6-Voigt (ASE order), 9-element or 3×3 stress as a 3×3 array."""
    arr = np.asarray(value, dtype=np.float64)
    if arr.size == 6:
        return _six_to_3x3(arr.reshape(6), _ASE_ORDER)
    if arr.size == 9:
        return arr.reshape(3, 3).copy()
    raise ValueError(f"{where}: stress has shape {arr.shape}; expected 6 (Voigt), 9 or 3x3 values")


def virial_to_stress(virial: Any, cell: np.ndarray, where: str) -> np.ndarray:
    """ASE stress (eV/Å³) from a virial in eV: σ = -W / V."""
    w = stress_to_3x3(virial, where)
    volume = abs(float(np.linalg.det(np.asarray(cell, dtype=np.float64).reshape(3, 3))))
    if volume < 1e-12:
        raise ValueError(f"{where}: a virial needs a cell with non-zero volume, got volume {volume}")
    return -w / volume


@dataclass(frozen=True)
class LabelKeys:
    """Where labels sit in ``atoms.info`` / ``atoms.arrays`` (or a database row)."""

    energy: str = "energy"
    forces: str = "forces"
    stress: str = "stress"
    virial: str = "virial"
    config_type: str = "config_type"
    weight: str = "weight"
    # labels beyond energy/forces/stress: (declared output field, key in the file), e.g.
    # (("charges", "mulliken"), ("dipole", "dipole")); per-atom fields are looked up in
    # atoms.arrays first, per-structure fields in atoms.info
    extra: tuple[tuple[str, str], ...] = ()


def extra_label_keys(extra: Mapping[str, str] | None) -> tuple[tuple[str, str], ...]:
    """Checked ``(field, file key)`` pairs of ``extra`` (``{field: key in the file}``).

    A field must be declared in :mod:`nearsight.keys` as a per-atom or per-structure float
    output other than energy, forces and stress (those have their own keys).
    """
    pairs = []
    for name, key in (extra or {}).items():
        declared = nskeys.FIELDS.get(name)
        if name in (nskeys.ENERGY, nskeys.FORCES, nskeys.STRESS):
            raise ValueError(f"extra label {name!r}: use the reader's {name}_key for {name}")
        if declared is None or declared.dtype != "float" or declared.per == "edge":
            allowed = sorted(
                n for n, f in nskeys.FIELDS.items()
                if f.dtype == "float" and f.per != "edge" and n not in (nskeys.ENERGY, nskeys.FORCES, nskeys.STRESS)
            )  # fmt: skip
            raise ValueError(f"extra label {name!r} is not a declared output field; declared: {allowed}")
        if not isinstance(key, str) or not key:
            raise ValueError(
                f"extra label {name!r}: the key in the file must be a non-empty string, got {key!r}"
            )
        pairs.append((str(name), key))
    return tuple(pairs)


def _select(items: list[Any], index: int | str | slice) -> list[Any]:
    """Items picked by an ASE-style index (``":"``, ``"-1"``, ``"::2"``, 3, slice)."""
    if isinstance(index, str):
        from ase.io.formats import string2index

        index = string2index(index)
    if isinstance(index, slice):
        return items[index]
    try:
        return [items[int(index)]]
    except IndexError:
        raise ValueError(f"index {index} out of range for {len(items)} frames") from None


def _lookup(key: str, *sources: Mapping[str, Any] | None) -> Any:
    for source in sources:
        if source is not None and key in source and source[key] is not None:
            return source[key]
    return None


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
    energy = _lookup(keys.energy, info, results)
    forces = _lookup(keys.forces, arrays, info, results)
    stress = _lookup(keys.stress, info, results)
    if stress is not None:
        stress = stress_to_3x3(stress, where)
    else:
        virial = _lookup(keys.virial, info, results)
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
        value = _lookup(key, arrays, info, results) if per_atom else _lookup(key, info, results)
        if value is None:
            continue
        try:
            labels[name] = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"{where}: label {key!r} ({name}) is not numeric: {value!r}") from None
    config_type = info.get(keys.config_type)
    weight = info.get(keys.weight, 1.0)
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
    )
    used = {keys.energy, keys.forces, keys.stress, keys.virial, keys.config_type, keys.weight}
    used |= {key for _, key in keys.extra}
    frame.info.update({k: v for k, v in info.items() if k not in used})
    return frame


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
    applied afterwards, so ``Frame.index`` is always the position in the file.
    """
    import ase.io

    images = ase.io.read(str(path), index=":", format=format)
    if isinstance(images, Atoms):
        images = [images]
    numbered = _select(list(enumerate(images)), index)
    keys = keys or LabelKeys()
    return [
        _frame_from_atoms(atoms, keys, source=str(path), index=i, info=atoms.info, arrays=atoms.arrays)
        for i, atoms in numbered
    ]


def read_ase_db(
    path: str | Path,
    *,
    index: int | str | slice = ":",
    keys: LabelKeys | None = None,
) -> list[Frame]:
    """Frames from an ASE database; labels from the row, ``key_value_pairs`` or ``data``."""
    import ase.db

    if not Path(path).exists():
        raise ValueError(f"{str(path)!r}: no such database file")
    keys = keys or LabelKeys()
    frames = []
    with ase.db.connect(str(path)) as db:
        rows = list(db.select())
    for i, row in _select(list(enumerate(rows)), index):
        atoms = row.toatoms()
        data = dict(row.data)
        info = {**data, **row.key_value_pairs}
        frame = _frame_from_atoms(atoms, keys, source=str(path), index=i, info=info, arrays=data)
        frame.info["db_id"] = int(row.id)
        frames.append(frame)
    return frames


def _load_npy(path: Path, n_frames: int | None, offset: int = 0) -> np.ndarray | None:
    """Array of ``path`` as ``[frames, values]`` float64; None if the file is absent."""
    if not path.exists():
        return None
    arr = np.load(path)
    arr = arr.reshape(arr.shape[0], -1) if arr.ndim > 1 else arr.reshape(-1, 1)
    if n_frames is not None and arr.shape[0] != n_frames:
        first = offset + min(arr.shape[0], n_frames)
        raise ValueError(
            f"{str(path)!r}, frame {first}: {path.name} has {arr.shape[0]} frames "
            f"but coord.npy has {n_frames}"
        )
    return arr.astype(np.float64)


def _row_shape(name: str, row: np.ndarray, n_atoms: int) -> np.ndarray:
    """A flat npy row in the declared shape of field ``name`` (one size set by the data at most)."""
    declared = nskeys.field(name)
    lead = (n_atoms,) if declared.per == "atom" else ()
    dims = lead + tuple(d if isinstance(d, int) else -1 for d in declared.shape)
    return row.reshape(dims) if dims.count(-1) <= 1 else row


def read_deepmd(
    path: str | Path,
    *,
    index: int | str | slice = ":",
    type_map: Sequence[str] | None = None,
    extra: tuple[tuple[str, str], ...] = (),
) -> list[Frame]:
    """Frames from one DeePMD system directory (``type.raw`` + ``set.*/*.npy``).

    Frame indices run across the sets in sorted order; ``info["set"]`` names the
    set.  A ``nopbc`` file makes the system non-periodic.  ``virial.npy`` (eV) is
    converted to stress = -virial / V.  ``extra`` (``(field, name)`` pairs, see
    :class:`LabelKeys`) reads further labels from ``set.*/<name>.npy`` (one row per frame).
    """
    root = Path(path)
    source = str(path)
    type_file = root / "type.raw"
    if not type_file.exists():
        raise ValueError(f"{source!r}: not a DeePMD system (no type.raw)")
    types = np.loadtxt(type_file, dtype=np.int64, ndmin=1).reshape(-1)
    if type_map is None:
        map_file = root / "type_map.raw"
        if not map_file.exists():
            raise ValueError(f"{source!r}: no type_map.raw; pass type_map=[symbols]")
        type_map = map_file.read_text().split()
    try:
        symbols_z = [_SYMBOL_TO_Z[s] for s in type_map]
    except KeyError as err:
        raise ValueError(f"{source!r}: unknown element {err.args[0]!r} in type_map") from None
    if types.size and (types.min() < 0 or types.max() >= len(symbols_z)):
        raise ValueError(f"{str(type_file)!r}: type index out of range for type_map {type_map}")
    numbers = np.asarray(symbols_z, dtype=np.int64)[types]
    n_atoms = len(types)
    periodic = not (root / "nopbc").exists()
    sets = sorted(p for p in root.glob("set.*") if p.is_dir())
    if not sets:
        raise ValueError(f"{source!r}: DeePMD system has no set.* directories")

    frames: list[Frame] = []
    for set_dir in sets:
        coord_file = set_dir / "coord.npy"
        coord = _load_npy(coord_file, None)
        if coord is None:
            raise ValueError(f"{str(set_dir)!r}: missing coord.npy")
        n = coord.shape[0]
        arrays = {
            name: _load_npy(set_dir / f"{name}.npy", n, offset=len(frames))
            for name in ("box", "energy", "force", "virial")
        }
        more = {field: _load_npy(set_dir / f"{key}.npy", n, offset=len(frames)) for field, key in extra}
        widths = {"coord": 3 * n_atoms, "force": 3 * n_atoms, "box": 9, "energy": 1, "virial": 9}
        for name, width in widths.items():
            arr = coord if name == "coord" else arrays[name]
            if arr is not None and arr.shape[1] != width:
                raise ValueError(
                    f"{str(set_dir / (name + '.npy'))!r}, frame {len(frames)}: "
                    f"{arr.shape[1]} values per frame, expected {width} ({n_atoms} atoms)"
                )
        if periodic and arrays["box"] is None:
            raise ValueError(f"{str(set_dir)!r}: missing box.npy for a periodic system")
        for k in range(n):
            running = len(frames)
            cell = arrays["box"][k].reshape(3, 3) if arrays["box"] is not None else np.zeros((3, 3))
            stress = None
            if arrays["virial"] is not None:
                stress = virial_to_stress(arrays["virial"][k], cell, f"{source!r}, frame {running}")
            frame = Frame(
                numbers=numbers,
                positions=coord[k].reshape(n_atoms, 3),
                cell=cell,
                pbc=np.full(3, periodic),
                energy=None if arrays["energy"] is None else float(arrays["energy"][k, 0]),
                forces=None if arrays["force"] is None else arrays["force"][k].reshape(n_atoms, 3),
                stress=stress,
                source=source,
                index=running,
                info={"set": set_dir.name, "set_index": k},
                labels={
                    field: _row_shape(field, rows[k], n_atoms)
                    for field, rows in more.items()
                    if rows is not None
                },
            )
            frames.append(frame)
    return _select(frames, index)


def read_mlearn(path: str | Path, *, index: int | str | slice = ":") -> list[Frame]:
    """Frames from an mlearn JSON file (pymatgen structures + VASP outputs).

    ``outputs.virial_stress`` is VASP's stress in kbar (positive = compressive),
    ordered xx, yy, zz, xy, yz, zx; it becomes σ_ASE = -s · kbar.  ``group``
    becomes the config type.
    """
    source = str(path)
    try:
        with open(path) as fh:
            records = json.load(fh)
    except json.JSONDecodeError as err:
        raise ValueError(f"{source!r}: not valid JSON ({err})") from None
    if isinstance(records, dict):
        records = [records]
    frames = []
    for i, rec in _select(list(enumerate(records)), index):
        where = f"{source!r}, frame {i}"
        try:
            structure = rec["structure"]
            lattice = np.asarray(structure["lattice"]["matrix"], dtype=np.float64)
            sites = structure["sites"]
        except (KeyError, TypeError):
            raise ValueError(f"{where}: record has no pymatgen 'structure'") from None
        numbers, positions = [], []
        for site in sites:
            species = max(site["species"], key=lambda s: s.get("occu", 1.0))
            symbol = species["element"]
            if symbol not in _SYMBOL_TO_Z:
                raise ValueError(f"{where}: unknown element {symbol!r}")
            numbers.append(_SYMBOL_TO_Z[symbol])
            xyz = site.get("xyz")
            positions.append(xyz if xyz is not None else np.asarray(site["abc"]) @ lattice)
        outputs = rec.get("outputs") or {}
        stress = None
        if outputs.get("virial_stress") is not None:
            s = np.asarray(outputs["virial_stress"], dtype=np.float64).reshape(-1)
            if s.size != 6:
                raise ValueError(f"{where}: virial_stress has {s.size} values, expected 6")
            stress = -_six_to_3x3(s, _VASP_ORDER) * units.KBAR
        forces = outputs.get("forces")
        info = {k: rec[k] for k in ("group", "description", "tag") if k in rec}
        frames.append(
            Frame(
                numbers=np.asarray(numbers, dtype=np.int64),
                positions=np.asarray(positions, dtype=np.float64).reshape(len(numbers), 3),
                cell=lattice,
                pbc=np.asarray(structure["lattice"].get("pbc", (True, True, True)), dtype=bool),
                energy=outputs.get("energy"),
                forces=None if forces is None else np.asarray(forces, dtype=np.float64),
                stress=stress,
                config_type=str(rec.get("group") or "default"),
                source=source,
                index=i,
                info=info,
            )
        )
    return frames


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
    energy_key: str = "energy",
    forces_key: str = "forces",
    stress_key: str = "stress",
    virial_key: str = "virial",
    config_type_key: str = "config_type",
    weight_key: str = "weight",
    type_map: Sequence[str] | None = None,
    validate: bool = True,
    min_distance: float = 0.5,
    extra_labels: Mapping[str, str] | None = None,
) -> list[Frame]:
    """Read every frame (or those picked by ``index``) of one file or DeePMD directory.

    ``format``: ``"deepmd"``, ``"mlearn"``, ``"db"`` or any ``ase.io`` format;
    by default guessed from the path.  Missing labels are ``None``.  ``extra_labels``
    (``{declared output field: key in the file}``, e.g. ``{"charges": "mulliken"}``)
    reads labels beyond energy/forces/stress into ``Frame.labels``.  With
    ``validate`` the frames are checked by :func:`validate_frames` (no labels
    required) and a ``ValueError`` names the file and frame of any problem.
    """
    p = Path(path)
    if not p.exists():
        raise ValueError(f"{str(path)!r}: no such file or directory")
    kind = _detect_format(p, format)
    extra = extra_label_keys(extra_labels)
    keys = LabelKeys(energy_key, forces_key, stress_key, virial_key, config_type_key, weight_key, extra)
    if kind == "deepmd":
        frames = read_deepmd(path, index=index, type_map=type_map, extra=extra)
    elif kind == "mlearn":
        if extra:
            raise ValueError(
                f"{str(path)!r}: mlearn JSON files hold no labels beyond energy, forces and stress"
            )
        frames = read_mlearn(path, index=index)
    elif kind == "db":
        frames = read_ase_db(path, index=index, keys=keys)
    else:
        frames = read_ase(path, format=format, index=index, keys=keys)
    if validate:
        from nearsight.data.validate import validate_frames

        validate_frames(frames, require=(), min_distance=min_distance)
    return frames


def read_many(paths: Iterable[str | Path], **kwargs: Any) -> list[Frame]:
    """:func:`read_frames` on each path, concatenated in order."""
    frames: list[Frame] = []
    for path in paths:
        frames.extend(read_frames(path, **kwargs))
    return frames
