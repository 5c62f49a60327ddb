"""Parallel, cached, resumable labelling of structures with an oracle.

:func:`label_structures` sends the structures to worker processes (they only
compute) and writes every label from this, the parent, process into a
:class:`LabelStore` -- an ASE SQLite database -- one transaction per label, as
soon as the label arrives.  A rerun (after a crash or ``kill -9``) finds the
labels already stored and computes only the rest; nothing is stored twice and a
half-written row cannot exist.

Each label is keyed by a content hash of the geometry (atomic numbers,
positions and cell rounded to 1e-8 Å, pbc) and of the oracle's settings
(method, basis, functional, charge, spin, tolerances, ...), so one store can
hold labels from several oracles for the same geometries.

Successful labels are ASE database rows: energy and forces as the row's
calculator results (``ase.io.read(store)`` and
:func:`nearsight.data.readers.read_frames` see them) and key-value pairs
``hash``, ``geometry_hash``, ``oracle_id``, ``method``, ``basis``, ``ok``,
``wall_time``; the full provenance is in ``row.data["provenance"]`` and extra
labels (:attr:`Label.extra`, e.g. per-state energies) in ``row.data["extra"]``
(absent in rows written before extras existed: they load with no extras).
Failures (unconverged SCF, exceptions, timeouts, non-finite values) are kept
in a separate table ``nearsight_failures`` of the same file, so that no reader
of the ASE rows can ever take a failed structure for training data; they are
not retried unless ``retry_failed=True``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from nearsight.progress import progress_bar
from nearsight.qm.oracles import Label, Oracle, describe, geometry_hash

__all__ = ["LabelStore", "LabellingResult", "label_hash", "label_structures"]

log = logging.getLogger(__name__)

_FAILURES = "nearsight_failures"
_FAILURES_SCHEMA = f"""CREATE TABLE IF NOT EXISTS {_FAILURES} (
    hash TEXT PRIMARY KEY,
    geometry_hash TEXT NOT NULL,
    oracle_id TEXT NOT NULL,
    method TEXT,
    basis TEXT,
    error TEXT NOT NULL,
    wall_time REAL,
    structure TEXT NOT NULL,
    ctime REAL NOT NULL
)"""


def label_hash(geometry: str, oracle_id: str) -> str:
    """The store key of one (geometry hash, oracle id) pair."""
    return hashlib.sha256(f"{geometry}:{oracle_id}".encode()).hexdigest()


def _plain(value: Any) -> Any:
    """JSON-able copy of a provenance value (numpy scalars and arrays to Python)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


class LabelStore:
    """Labels in one ASE SQLite database file; written only by the process that owns it."""

    def __init__(self, path: str | Path) -> None:
        import ase.db

        self.path = Path(path)
        if self.path.suffix != ".db":
            raise ValueError(f"LabelStore: {str(self.path)!r} must end in .db (an ASE SQLite database)")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = ase.db.connect(str(self.path), type="db", append=True)
        with self.db as db:
            db.count()  # creates the ASE tables in a new file
            db.connection.execute(_FAILURES_SCHEMA)
            # a failure superseded by a later success (retry) is dropped
            ok_hashes = {row.get("hash") for row in db.select(columns=["key_value_pairs"])}
            stale = [h for (h,) in db.connection.execute(f"SELECT hash FROM {_FAILURES}") if h in ok_hashes]
            db.connection.executemany(f"DELETE FROM {_FAILURES} WHERE hash=?", [(h,) for h in stale])

    def __repr__(self) -> str:
        return f"LabelStore({str(self.path)!r})"

    # ---------------------------------------------------------------- reading
    def ok_hashes(self) -> set[str]:
        """Hashes of the successful labels."""
        return {row.get("hash") for row in self.db.select(columns=["key_value_pairs"])} - {None}

    def failed_hashes(self) -> set[str]:
        with self.db as db:
            return {h for (h,) in db.connection.execute(f"SELECT hash FROM {_FAILURES}")}

    def failures(self) -> list[dict[str, Any]]:
        """Every recorded failure: hash, geometry_hash, oracle_id, method, basis, error, wall_time, atoms."""
        with self.db as db:
            cur = db.connection.execute(
                f"SELECT hash, geometry_hash, oracle_id, method, basis, error, wall_time, structure, ctime "
                f"FROM {_FAILURES} ORDER BY ctime"
            )
            rows = cur.fetchall()
        out = []
        for h, g, oid, method, basis, error, wall, structure, ctime in rows:
            s = json.loads(structure)
            atoms = Atoms(numbers=s["numbers"], positions=s["positions"], cell=s["cell"], pbc=s["pbc"])
            out.append(
                {
                    "hash": h,
                    "geometry_hash": g,
                    "oracle_id": oid,
                    "method": method,
                    "basis": basis,
                    "error": error,
                    "wall_time": wall,
                    "atoms": atoms,
                    "ctime": ctime,
                }
            )
        return out

    def __len__(self) -> int:
        return self.db.count()

    def _label_from_row(self, row: Any) -> Label:
        forces = row.get("forces")
        return Label(
            energy=float(row.energy),
            forces=None if forces is None else np.array(forces, dtype=np.float64),
            ok=True,
            error=None,
            method=row.get("method", ""),
            basis=row.get("basis"),
            provenance=dict(row.data.get("provenance", {})),
            wall_time=float(row.get("wall_time", 0.0)),
            extra={str(k): np.asarray(v, dtype=np.float64) for k, v in row.data.get("extra", {}).items()},
        )

    def labels(self, oracle: Oracle | str | None = None) -> dict[str, tuple[Atoms, Label]]:
        """Successful labels (of one oracle, or all), by geometry hash when one oracle is given, else by hash."""
        oracle_id = oracle if isinstance(oracle, str) or oracle is None else oracle.oracle_id
        selection = {} if oracle_id is None else {"oracle_id": oracle_id}
        out = {}
        for row in self.db.select(**selection):
            key = row.get("geometry_hash") if oracle_id is not None else row.get("hash")
            out[key] = (row.toatoms(), self._label_from_row(row))
        return out

    def atoms(self, oracle: Oracle | str | None = None) -> list[Atoms]:
        """Successful labels as Atoms with a SinglePointCalculator (energy, forces), in storage order."""
        return [atoms for atoms, _ in self.labels(oracle).values()]

    def get(self, key: str) -> Label | None:
        """The label stored under ``key`` (a :func:`label_hash`): ok, failed, or None when absent."""
        rows = list(self.db.select(hash=key))
        if rows:
            return self._label_from_row(rows[0])
        with self.db as db:
            row = db.connection.execute(
                f"SELECT method, basis, error, wall_time FROM {_FAILURES} WHERE hash=?", (key,)
            ).fetchone()
        if row is None:
            return None
        return Label.failure(row[2], method=row[0], basis=row[1], wall_time=row[3] or 0.0)

    # ---------------------------------------------------------------- writing
    def write(
        self, atoms: Atoms, label: Label, oracle: Oracle, extra: Mapping[str, Any] | None = None
    ) -> str:
        """Store one label in one transaction; returns its hash.

        A successful label becomes an ASE row (and removes an earlier failure of
        the same hash); a failed one goes to the failures table.
        """
        geometry = geometry_hash(atoms)
        oracle_id = oracle.oracle_id
        key = label_hash(geometry, oracle_id)
        with self.db as db:
            if label.ok:
                if next(iter(db.select(hash=key)), None) is not None:
                    raise ValueError(
                        f"{self}: {describe(atoms)} already has a label of oracle {oracle_id} "
                        f"(hash {key[:12]}): duplicate labelling refused"
                    )
                clean = Atoms(
                    numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc
                )
                results = {"energy": float(label.energy)}
                if label.forces is not None:
                    results["forces"] = np.asarray(label.forces, dtype=np.float64)
                clean.calc = SinglePointCalculator(clean, **results)
                kvp = {
                    "hash": key,
                    "geometry_hash": geometry,
                    "oracle_id": oracle_id,
                    "method": label.method or oracle.method,
                    "ok": True,
                    "wall_time": float(label.wall_time),
                }
                basis = label.basis if label.basis is not None else oracle.basis
                if basis is not None:
                    kvp["basis"] = str(basis)
                kvp.update(dict(extra or {}))
                data: dict[str, Any] = {"provenance": _plain(label.provenance)}
                if label.extra:
                    data["extra"] = {k: np.asarray(v, dtype=np.float64) for k, v in label.extra.items()}
                db.write(clean, key_value_pairs=kvp, data=data)
                db.connection.execute(f"DELETE FROM {_FAILURES} WHERE hash=?", (key,))
            else:
                structure = json.dumps(
                    {
                        "numbers": atoms.numbers.tolist(),
                        "positions": atoms.positions.tolist(),
                        "cell": atoms.cell.array.tolist(),
                        "pbc": atoms.pbc.tolist(),
                    }
                )
                db.connection.execute(
                    f"INSERT OR REPLACE INTO {_FAILURES} VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        key,
                        geometry,
                        oracle_id,
                        label.method or oracle.method,
                        label.basis if label.basis is not None else oracle.basis,
                        label.error or "unknown error",
                        float(label.wall_time),
                        structure,
                        time.time(),
                    ),
                )
        return key


@dataclass
class LabellingResult:
    """What :func:`label_structures` did.  ``labels[i]`` belongs to ``structures[i]``."""

    labels: list[Label]
    hashes: list[str]
    computed: int = 0  # labels computed in this call (ok or failed)
    cached: int = 0  # unique structures found in the store
    duplicates: int = 0  # input structures identical to an earlier one
    failed: int = 0  # structures without a usable label (new or recorded failures)
    wall_time: float = 0.0
    structures: list[Atoms] = field(default_factory=list, repr=False)

    @property
    def ok(self) -> list[bool]:
        return [label.ok for label in self.labels]

    def ok_atoms(self) -> list[Atoms]:
        """The successfully labelled structures (each once) with a SinglePointCalculator."""
        out, seen = [], set()
        for atoms, label, key in zip(self.structures, self.labels, self.hashes):
            if not label.ok or key in seen:
                continue
            seen.add(key)
            copy = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
            results = {"energy": label.energy}
            if label.forces is not None:
                results["forces"] = label.forces
            copy.calc = SinglePointCalculator(copy, **results)
            out.append(copy)
        return out


def label_structures(
    structures: Iterable[Atoms],
    oracle: Oracle,
    store: LabelStore | str | Path,
    n_workers: int = 2,
    *,
    timeout_s: float | None = None,
    retry_failed: bool = False,
    threads_per_worker: int | None = 1,
    extra: Callable[[int, Atoms], Mapping[str, Any]] | None = None,
    progress: Callable[[int, int, Label], None] | None = None,
) -> LabellingResult:
    """Label every structure once with ``oracle``, caching and resuming through ``store``.

    ``n_workers >= 1``: that many worker processes (forked by a fresh fork
    server, or spawned; each with ``threads_per_worker`` OpenMP/BLAS threads,
    ``None``: as inherited); the timeout (``timeout_s``, by
    default ``oracle.timeout_s``) kills a worker that takes longer on one
    structure.  ``n_workers == 0``: labels in this process by ``oracle(atoms)``.
    Structures already in the store are not recomputed (failures neither,
    unless ``retry_failed``); identical structures in the input are computed
    once.  ``extra(i, atoms)`` gives key-value pairs stored with new
    successful labels.  ``progress(done, total, label)`` is called after each
    new label.
    """
    if n_workers < 0:
        raise ValueError(f"label_structures: n_workers must be >= 0, got {n_workers}")
    start = time.perf_counter()
    structures = list(structures)
    for i, atoms in enumerate(structures):
        if not isinstance(atoms, Atoms):
            raise TypeError(f"label_structures: structure {i} is a {type(atoms).__name__}, not ase.Atoms")
    store = store if isinstance(store, LabelStore) else LabelStore(store)
    oracle_id = oracle.oracle_id
    hashes = [label_hash(geometry_hash(atoms), oracle_id) for atoms in structures]
    ok_done = store.ok_hashes()
    failed_done = set() if retry_failed else store.failed_hashes()

    todo: dict[str, int] = {}  # hash -> first index
    duplicates = 0
    cached_keys: set[str] = set()
    for i, key in enumerate(hashes):
        if key in todo or key in cached_keys:
            duplicates += 1
        elif key in ok_done or key in failed_done:
            cached_keys.add(key)
        else:
            todo[key] = i
    result_by_key: dict[str, Label] = {}
    total = len(todo)
    log.info(
        "labelling with %s: %d structures, %d to compute, %d in the store, %d duplicates",
        oracle.name,
        len(structures),
        total,
        len(cached_keys),
        duplicates,
    )

    enabled = None if todo else False  # no bar when everything is in the store
    bar = progress_bar(total=total, desc=f"labelling ({oracle.name})", unit="structure", enabled=enabled)
    warn = bar.wrap(log.warning)  # the warnings print above the bar
    n_failed = 0

    def record(key: str, label: Label) -> None:
        nonlocal n_failed
        i = todo[key]
        store.write(
            structures[i],
            label,
            oracle,
            extra=None if extra is None or not label.ok else extra(i, structures[i]),
        )
        result_by_key[key] = label
        if not label.ok:
            n_failed += 1
            warn("structure %d: %s", i, label.error)
        bar.set_postfix(failed=n_failed, refresh=False)
        bar.update()
        if progress is not None:
            progress(len(result_by_key), total, label)

    with bar:
        if todo and n_workers == 0:
            for key, i in todo.items():
                record(key, _call_with_timeout(oracle, structures[i], timeout_s))
        elif todo:
            from nearsight.qm._workers import WorkerPool

            tasks = [(key, structures[i]) for key, i in todo.items()]
            limit = timeout_s if timeout_s is not None else oracle.timeout_s
            with WorkerPool(oracle, min(n_workers, len(tasks)), limit, threads_per_worker) as pool:
                for key, label in pool.run(tasks):
                    record(key, label)

    if cached_keys:
        stored = {label_hash(g, oracle_id): label for g, (_, label) in store.labels(oracle_id).items()}
        for failure in store.failures():
            stored.setdefault(
                failure["hash"],
                Label.failure(
                    failure["error"],
                    method=failure["method"],
                    basis=failure["basis"],
                    wall_time=failure["wall_time"] or 0.0,
                ),
            )
        for key in cached_keys:
            if key not in stored:  # pragma: no cover - the store changed under us
                raise RuntimeError(f"label_structures: label {key} vanished from {store}")
            result_by_key[key] = stored[key]
    labels = [result_by_key[key] for key in hashes]
    return LabellingResult(
        labels=labels,
        hashes=hashes,
        computed=len(todo),
        cached=len(cached_keys),
        duplicates=duplicates,
        failed=sum(not result_by_key[k].ok for k in set(hashes)),
        wall_time=time.perf_counter() - start,
        structures=structures,
    )


def _call_with_timeout(oracle: Oracle, atoms: Atoms, timeout_s: float | None) -> Label:
    if timeout_s is None or timeout_s == oracle.timeout_s:
        return oracle(atoms)
    from nearsight.qm._workers import WorkerPool

    with WorkerPool(oracle, 1, timeout_s) as pool:
        return pool.run_one(atoms)
