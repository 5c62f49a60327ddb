"""DeePMD-kit npy system directories (``type.raw``, ``type_map.raw``, ``set.*/*.npy``) as frames."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from ase.data import atomic_numbers as _SYMBOL_TO_Z

from nearsight import keys as nskeys
from nearsight.data.frame import Frame, select
from nearsight.data.label_keys import virial_to_stress


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
    return select(frames, index)
