"""Labels of a store written as an extxyz file, the format the training readers take: energies,
forces, other oracles' labels beside them and extra labels (per-state energies, forces, couplings)
under their own names.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from nearsight._files import atomic_write
from nearsight.qm.labelling import LabelStore
from nearsight.qm.oracles import Oracle, geometry_hash


def export_extxyz(
    path: str | Path,
    store: LabelStore | str | Path,
    oracle: Oracle | str,
    structures: Sequence[Atoms] | None = None,
    *,
    energy_key: str = "energy",
    forces_key: str = "forces",
    also: Mapping[str, Oracle | str] | None = None,
    info: Sequence[Mapping[str, Any]] | None = None,
) -> int:
    """Write the successful labels of ``oracle`` to an extxyz file, atomically; returns the frame count.

    Frames: ``structures`` in their order (each with a successful label; the
    others are skipped), or every label of ``oracle`` in the store.  Energies go
    to ``atoms.info[energy_key]``, forces to ``atoms.arrays[forces_key]``.
    ``also`` maps a prefix to another oracle whose labels are added where they
    exist as ``info[f"{prefix}_energy"]`` and ``arrays[f"{prefix}_forces"]``.
    ``info[i]`` is merged into the info of ``structures[i]``.
    Extra labels (:attr:`Label.extra`) of ``oracle`` go under their own names: a
    field declared per atom in :mod:`nearsight.keys` (or an undeclared array of
    two or more dimensions with ``n_atoms`` first) to ``atoms.arrays[name]``,
    flattened to ``[n_atoms, -1]`` (extxyz arrays are 2-D); any other to
    ``atoms.info[name]``.
    Readable by ``read_frames(path, energy_key=..., forces_key=...)``.
    """
    import ase.io

    store = store if isinstance(store, LabelStore) else LabelStore(store)
    main = store.labels(oracle)
    others = {prefix: store.labels(o) for prefix, o in (also or {}).items()}
    if info is not None and (structures is None or len(info) != len(structures)):
        raise ValueError("export_extxyz: info needs structures of the same length")
    if structures is None:
        keys = list(main)
        sources = [main[k][0] for k in keys]
    else:
        keys = [geometry_hash(a) for a in structures]
        sources = list(structures)
    frames = []
    seen = set()
    for i, (key, atoms) in enumerate(zip(keys, sources)):
        if key not in main or key in seen:
            continue
        seen.add(key)
        _, label = main[key]
        out = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
        out.info[energy_key] = float(label.energy)
        if label.forces is not None:
            out.arrays[forces_key] = np.asarray(label.forces, dtype=np.float64)
        for name, value in label.extra.items():
            value = np.asarray(value, dtype=np.float64)
            if _per_atom(name, value, len(out)):
                out.arrays[name] = value.reshape(len(out), -1)
            else:
                out.info[name] = value if value.ndim else float(value)
        for prefix, labels in others.items():
            if key in labels:
                other = labels[key][1]
                out.info[f"{prefix}_energy"] = float(other.energy)
                if other.forces is not None:
                    out.arrays[f"{prefix}_forces"] = np.asarray(other.forces, dtype=np.float64)
        if info is not None:
            out.info.update(dict(info[i]))
        frames.append(out)
    atomic_write(path, lambda fh: ase.io.write(fh, frames, format="extxyz"))
    return len(frames)


def _per_atom(name: str, value: np.ndarray, n_atoms: int) -> bool:
    """Whether extra label ``name`` is per atom: as declared in :mod:`nearsight.keys`, else by its shape."""
    from nearsight import keys

    declared = keys.FIELDS.get(name)
    if declared is not None:
        return declared.per == "atom"
    return value.ndim >= 2 and value.shape[0] == n_atoms
