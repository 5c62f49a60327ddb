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


# The keys under which files of common codes store the labels, tried when no key is given
# (``read_frames(..., energy_key=None)``, ``nearsight evaluate`` by default): ASE's own, MACE's
# ``REF_*``, and the ``DFT_*`` / ``dft_*`` (QUIP/GAP) and ``ref_*`` conventions.
LABEL_KEY_CANDIDATES: dict[str, tuple[str, ...]] = {
    "energy": ("energy", "REF_energy", "DFT_energy", "dft_energy", "ref_energy"),
    "forces": ("forces", "REF_forces", "DFT_forces", "dft_forces", "dft_force", "ref_forces"),
    "stress": ("stress", "REF_stress", "DFT_stress", "dft_stress", "ref_stress"),
    "virial": ("virial", "virials", "REF_virials", "REF_virial", "DFT_virial", "dft_virial", "ref_virial"),
}


@dataclass(frozen=True)
class LabelKeys:
    """Where labels sit in ``atoms.info`` / ``atoms.arrays`` (or a database row).

    A label key of ``None`` reads no such label (:func:`read_frames` first replaces a ``None``
    it was given by the key :func:`detect_label_keys` finds in the file).
    """

    energy: str | None = "energy"
    forces: str | None = "forces"
    stress: str | None = "stress"
    virial: str | None = "virial"
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


def _lookup(key: str | None, *sources: Mapping[str, Any] | None) -> Any:
    if key is None:
        return None
    for source in sources:
        if source is not None and key in source and source[key] is not None:
            return source[key]
    return None


def detect_label_keys(
    present: Iterable[str], given: Mapping[str, str | None], source: str = "<data>"
) -> dict[str, str | None]:
    """The key of each label (energy, forces, stress, virial): ``given[label]`` where not None,
    else the one of :data:`LABEL_KEY_CANDIDATES` among the keys ``present`` in the file (None
    if there is none).  Two candidates present for one label are an error: choose with its key.
    """
    present = set(present)
    out: dict[str, str | None] = {}
    for label, candidates in LABEL_KEY_CANDIDATES.items():
        if given.get(label) is not None:
            out[label] = given[label]
            continue
        found = [key for key in candidates if key in present]
        if len(found) > 1:
            raise ValueError(
                f"{source}: {label} labels under several keys {found}: choose one with "
                f"{label}_key (nearsight evaluate --{label}-key)"
            )
        out[label] = found[0] if found else None
    return out


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
    for i, (atoms, info, arrays, extra) in _select(list(enumerate(records)), index):
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
) -> list[Frame]:
    """Read every frame (or those picked by ``index``) of one file or DeePMD directory.

    ``format``: ``"deepmd"``, ``"mlearn"``, ``"db"`` or any ``ase.io`` format;
    by default guessed from the path.  Missing labels are ``None``.  A label key of
    ``None`` is detected from the file (:func:`detect_label_keys`: ``energy``,
    ``REF_energy``, ``DFT_energy``, ``dft_energy``, ...).  ``extra_labels``
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
    )
    return frames


def _no_labels_error(source: str, present: dict[str, set[str]], keys: dict[str, str | None]) -> ValueError:
    tried = {label: [key] if key else list(LABEL_KEY_CANDIDATES[label]) for label, key in keys.items()}
    listing = "; ".join(f"{part} keys {sorted(names)}" for part, names in present.items() if names)
    return ValueError(
        f"{source}: no frame has an energy, forces or stress label (looked for {tried}); the file has "
        f"{listing or 'no info or arrays keys'}: name the labels with energy_key, forces_key, stress_key "
        "(nearsight evaluate --energy-key ...)"
    )


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
            used["energy"], used["forces"], used["stress"], used["virial"], config_type_key, weight_key, extra
        )
        frames = _frames_of(records, keys, str(path), index)
        if require_labels and not any(
            f.energy is not None or f.forces is not None or f.stress is not None for f in frames
        ):
            raise _no_labels_error(source, present, given)
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
