"""Long-lived worker processes that run an oracle, with a per-task timeout.

The parent sends one structure at a time to an idle worker over a pipe and
waits for the label.  A worker that exceeds the timeout is killed (SIGKILL)
and replaced; a worker that dies (crash, out of memory) is replaced too.  In
both cases the task gets a failed :class:`~nearsight.qm.oracles.Label`.
Workers only compute; they never touch the label store.

Workers are started by a fork server (or ``spawn``), never forked from the
parent, which may run torch or OpenMP threads.  A worker exits when the parent closes its pipe,
so workers do not outlive a parent killed with ``kill -9``.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

from ase import Atoms

from nearsight.qm.oracles import Label, Oracle, PySCFOracle, describe

_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
_STARTUP_TIMEOUT_S = 300.0


def _limit_threads(threads: int | None, oracle: Oracle) -> None:
    """At most ``threads`` OpenMP/BLAS threads in this (worker) process."""
    if threads is None:
        return
    os.environ.update({k: str(int(threads)) for k in _THREAD_VARIABLES})
    try:  # libraries already loaded (numpy's BLAS, torch's OpenMP) ignore the variables
        from threadpoolctl import threadpool_limits

        threadpool_limits(int(threads))
    except ImportError:
        pass
    if isinstance(oracle, PySCFOracle):
        from pyscf import lib

        lib.num_threads(int(threads))


def _worker_main(conn: Connection, oracle: Oracle, threads: int | None = None) -> None:
    _limit_threads(threads, oracle)
    conn.send(("ready", os.getpid()))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):  # parent gone
            return
        if message is None:
            return
        task_id, atoms = message
        label = oracle.label(atoms)
        try:
            conn.send((task_id, label))
        except (BrokenPipeError, OSError):
            return


@contextlib.contextmanager
def _thread_environment(threads: int | None) -> Iterator[None]:
    """Thread-count variables set while a worker is spawned (the child inherits them)."""
    if threads is None:
        yield
        return
    saved = {k: os.environ.get(k) for k in _THREAD_VARIABLES}
    os.environ.update({k: str(int(threads)) for k in _THREAD_VARIABLES})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _context() -> Any:
    """``forkserver`` where available (one fresh server process that has imported this
    module forks the workers: fast to start, and safe because the server runs no
    threads), else ``spawn``.  ``NEARSIGHT_QM_START_METHOD`` overrides it."""
    method = os.environ.get("NEARSIGHT_QM_START_METHOD")
    if method is None:
        method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
    if method not in ("forkserver", "spawn"):
        raise ValueError(f"NEARSIGHT_QM_START_METHOD={method!r}: use 'forkserver' or 'spawn'")
    ctx = mp.get_context(method)
    if method == "forkserver":
        ctx.set_forkserver_preload(["__main__", __name__])
    return ctx


@dataclass(eq=False)
class _Worker:
    process: Any
    conn: Connection
    spawned: float
    ready: bool = False
    task: tuple[Any, Atoms] | None = None
    started: float = 0.0


class WorkerPool:
    """``n_workers`` processes running ``oracle.label``; ``timeout_s`` per structure."""

    def __init__(
        self,
        oracle: Oracle,
        n_workers: int = 1,
        timeout_s: float | None = None,
        threads_per_worker: int | None = None,
    ) -> None:
        if n_workers < 1:
            raise ValueError(f"WorkerPool: n_workers must be >= 1, got {n_workers}")
        if timeout_s is not None and not timeout_s > 0:
            raise ValueError(f"WorkerPool: timeout_s must be positive, got {timeout_s}")
        self.oracle = oracle
        self.timeout_s = timeout_s
        self.threads = threads_per_worker
        self._ctx = _context()
        self._workers: list[_Worker] = []
        for _ in range(n_workers):
            self._workers.append(self._start())

    def _start(self) -> _Worker:
        parent, child = self._ctx.Pipe(duplex=True)
        process = self._ctx.Process(target=_worker_main, args=(child, self.oracle, self.threads), daemon=True)
        with _thread_environment(self.threads):
            process.start()
        child.close()
        return _Worker(process, parent, time.monotonic())

    def _stop(self, worker: _Worker) -> None:
        with contextlib.suppress(OSError):
            worker.conn.close()
        if worker.process.is_alive():
            worker.process.kill()
        worker.process.join(timeout=10)

    def _replace(self, worker: _Worker) -> None:
        self._stop(worker)
        self._workers[self._workers.index(worker)] = self._start()

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Ask idle workers to exit, kill busy ones."""
        for worker in self._workers:
            if worker.task is None and worker.process.is_alive():
                with contextlib.suppress(OSError):
                    worker.conn.send(None)
        deadline = time.monotonic() + 5.0
        for worker in self._workers:
            if worker.task is None:
                worker.process.join(timeout=max(0.0, deadline - time.monotonic()))
            self._stop(worker)
        self._workers = []

    @property
    def n_busy(self) -> int:
        return sum(w.task is not None for w in self._workers)

    def _failure(self, atoms: Atoms, error: str, wall: float) -> Label:
        return Label.failure(
            f"{self.oracle.name} for {describe(atoms)}: {error}",
            method=self.oracle.method,
            basis=self.oracle.basis,
            provenance={"oracle": type(self.oracle).__name__, **self.oracle.settings()},
            wall_time=wall,
        )

    def run(self, tasks: list[tuple[Any, Atoms]]) -> Iterator[tuple[Any, Label]]:
        """Yield ``(task_id, label)`` for every task, in order of completion."""
        pending = list(reversed(tasks))
        while pending or self.n_busy:
            for worker in self._workers:
                if worker.ready and worker.task is None and pending:
                    worker.task = pending.pop()
                    worker.started = time.monotonic()
                    try:
                        worker.conn.send(worker.task)
                    except (BrokenPipeError, OSError):
                        pass  # the worker died; its sentinel reports it below
            yield from self._collect()

    def run_one(self, atoms: Atoms) -> Label:
        return next(iter(self.run([(0, atoms)])))[1]

    def _collect(self) -> Iterator[tuple[Any, Label]]:
        now = time.monotonic()
        waits = []
        for w in self._workers:
            if not w.ready:
                waits.append(w.spawned + _STARTUP_TIMEOUT_S - now)
            elif w.task is not None and self.timeout_s is not None:
                waits.append(w.started + self.timeout_s - now)
        timeout = max(0.0, min(waits)) if waits else None
        objects = [w.conn for w in self._workers] + [w.process.sentinel for w in self._workers]
        ready = set(wait(objects, timeout=timeout))
        now = time.monotonic()
        for worker in list(self._workers):
            dead = worker.process.sentinel in ready
            if worker.conn in ready:
                try:
                    message = worker.conn.recv()
                except (EOFError, OSError):
                    dead = True
                else:
                    if not worker.ready:
                        worker.ready = message[0] == "ready"
                    elif worker.task is not None and message[0] == worker.task[0]:
                        worker.task = None
                        yield message
                    continue
            task = worker.task
            if dead:
                worker.process.join(timeout=5)
                code = worker.process.exitcode
                if not worker.ready:
                    raise RuntimeError(
                        f"WorkerPool: a worker for {self.oracle.name} died while starting (exit code {code}); "
                        "workers are started fresh (forkserver/spawn), so a calling script needs an `if __name__ == '__main__':` guard "
                        "and the oracle must be importable in a fresh process"
                    )
                self._replace(worker)
                if task is not None:
                    error = f"worker process died (exit code {code})"
                    yield task[0], self._failure(task[1], error, now - worker.started)
            elif task is not None and self.timeout_s is not None and now - worker.started >= self.timeout_s:
                self._replace(worker)
                error = f"timeout after {self.timeout_s:g} s (worker killed)"
                yield task[0], self._failure(task[1], error, now - worker.started)
            elif not worker.ready and now - worker.spawned > _STARTUP_TIMEOUT_S:
                raise RuntimeError(
                    f"WorkerPool: a worker for {self.oracle.name} did not start in {_STARTUP_TIMEOUT_S:g} s"
                )
