"""nearsight.qm: PySCF/ASE oracles, failure handling, cached and resumable labelling."""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from pathlib import Path

import pytest
from ase import Atoms
from ase.calculators.emt import EMT

from nearsight.data.readers import read_frames
from nearsight.qm import (
    ASECalculatorOracle,
    LabelStore,
    PySCFOracle,
    export_extxyz,
    geometry_hash,
    label_hash,
    label_structures,
)
from nearsight.qm._workers import _context
from nearsight.qm.oracles import HARTREE_PER_BOHR_TO_EV_PER_ANGSTROM, HARTREE_TO_EV
from qm_helpers import CountingOracle, label_waters, raising_calculator
from qm_helpers import water as _water
from qm_helpers import waters as _waters

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="module")
def _one_pyscf_thread():
    """PySCF's OpenMP on one thread: the suite runs in parallel processes (and on shared machines)."""
    from pyscf import lib

    before = lib.num_threads()
    lib.num_threads(1)
    yield
    lib.num_threads(before)


def _h2(d: float = 0.74) -> Atoms:
    return Atoms("H2", positions=[[0, 0, 0], [0, 0, d]])


# ---------------------------------------------------------------- PySCF oracle
def test_hf_energy_of_h2_is_pyscf_value_in_ev():
    from pyscf import gto, scf

    label = PySCFOracle("hf", basis="sto-3g")(_h2())
    mf = scf.RHF(gto.M(atom="H 0 0 0; H 0 0 0.74", basis="sto-3g", unit="Angstrom", verbose=0))
    mf.conv_tol = 1e-9
    reference = mf.kernel()
    assert label.ok and label.error is None
    assert label.energy == pytest.approx(reference * 27.211386245988, abs=1e-6)
    assert HARTREE_TO_EV == pytest.approx(27.211386, abs=1e-5)
    assert HARTREE_PER_BOHR_TO_EV_PER_ANGSTROM == pytest.approx(51.42208, abs=1e-4)
    assert label.forces.shape == (2, 3)
    assert label.forces[0, 2] == pytest.approx(-label.forces[1, 2])  # equal and opposite
    assert label.method == "hf" and label.basis == "sto-3g"
    assert label.provenance["scf"] == "RHF" and label.wall_time > 0


@pytest.mark.parametrize("method", ["hf", "dft", "mp2", "ccsd(t)"])
def test_forces_are_minus_energy_gradient(method):
    oracle = PySCFOracle(method, basis="sto-3g", conv_tol=1e-11)
    atoms = _water(7)
    label = oracle(atoms)
    assert label.ok, label.error
    h = 1e-3
    components = {"hf": [(0, 0), (0, 2), (1, 1), (2, 2)], "mp2": [(0, 1), (1, 2)]}.get(method, [(2, 0)])
    for i, k in components:
        plus, minus = atoms.copy(), atoms.copy()
        plus.positions[i, k] += h
        minus.positions[i, k] -= h
        fd = -(oracle(plus).energy - oracle(minus).energy) / (2 * h)
        assert label.forces[i, k] == pytest.approx(fd, abs=1e-4), (method, i, k)


def test_open_shell_uses_unrestricted_reference():
    oh = Atoms("OH", positions=[[0, 0, 0], [0, 0, 0.97]])
    label = PySCFOracle("mp2", basis="sto-3g", spin=1)(oh)
    assert label.ok, label.error
    assert label.provenance["scf"] == "UHF"
    with pytest.raises(ValueError, match=r"open-shell \(spin > 0\) CCSD\(T\) forces"):
        PySCFOracle("ccsd(t)", spin=1)
    assert PySCFOracle("ccsd(t)", spin=1, forces=False).method == "ccsd(t)"
    with pytest.raises(ValueError, match="method 'cisd'"):
        PySCFOracle("cisd")


def test_unconverged_scf_is_a_failure_and_never_stored(tmp_path):
    oracle = PySCFOracle("hf", basis="sto-3g", max_cycle=1)
    atoms = _water(0)
    label = oracle(atoms)
    assert not label.ok and label.energy is None and label.forces is None
    assert "not converged" in label.error and "HF/sto-3g" in label.error
    assert geometry_hash(atoms)[:12] in label.error and "H2O" in label.error

    store = LabelStore(tmp_path / "labels.db")
    result = label_structures([atoms], oracle, store, n_workers=0)
    assert result.computed == 1 and result.failed == 1 and result.ok_atoms() == []
    assert store.ok_hashes() == set() and len(store.failed_hashes()) == 1
    assert read_frames(store.path) == []  # no reader sees a failed structure
    assert "not converged" in store.failures()[0]["error"]
    again = label_structures([atoms], oracle, store, n_workers=0)  # recorded: not retried
    assert again.computed == 0 and again.cached == 1 and not again.labels[0].ok
    retried = label_structures([atoms], oracle, store, n_workers=0, retry_failed=True)
    assert retried.computed == 1


# ---------------------------------------------------------------- failure injection in workers
def test_exceptions_dead_workers_and_non_finite_values_are_recorded(tmp_path):
    structures = _waters(4)
    structures[1].info["bad"] = True
    store = LabelStore(tmp_path / "labels.db")
    result = label_structures(structures, CountingOracle(fail_on="raise"), store, n_workers=2)
    assert result.ok == [True, False, True, True]
    assert "ValueError: injected failure" in result.labels[1].error
    assert len(store) == 3 and len(store.failed_hashes()) == 1
    assert len(result.ok_atoms()) == 3

    died = label_structures(structures, CountingOracle(fail_on="exit"), tmp_path / "exit.db", n_workers=2)
    assert died.ok == [True, False, True, True]
    assert "worker process died (exit code 3)" in died.labels[1].error

    nan = label_structures(structures, CountingOracle(fail_on="nan"), tmp_path / "nan.db", n_workers=0)
    assert nan.ok == [True, False, True, True] and "not finite" in nan.labels[1].error

    factory = ASECalculatorOracle(raising_calculator, method="broken")
    label = factory(structures[0])
    assert not label.ok and "calculator factory exploded" in label.error
    emt = ASECalculatorOracle(EMT, method="emt")(structures[0])
    assert emt.ok and emt.forces.shape == (3, 3)


def test_timeout_kills_the_worker_and_is_recorded(tmp_path):
    structures = _waters(3)
    structures[0].info["bad"] = True  # sleeps 60 s
    oracle = CountingOracle(fail_on="sleep")
    start = time.monotonic()
    result = label_structures(structures, oracle, tmp_path / "labels.db", n_workers=1, timeout_s=0.5)
    assert time.monotonic() - start < 30
    assert result.ok == [False, True, True]  # the replacement worker finished the rest
    assert result.labels[0].error.endswith("timeout after 0.5 s (worker killed)")
    store = LabelStore(tmp_path / "labels.db")
    assert len(store) == 2 and len(store.failed_hashes()) == 1

    oracle.timeout_s = 0.5  # oracle(atoms) itself runs in a child process that is killed
    label = oracle(structures[0])
    assert not label.ok and "timeout after 0.5 s" in label.error


# ---------------------------------------------------------------- cache, resume, duplicates
def test_resume_computes_only_new_structures_and_duplicates_once(tmp_path):
    oracle = CountingOracle()
    store = LabelStore(tmp_path / "labels.db")
    first = _waters(5)
    result = label_structures(first + [first[2].copy()], oracle, store, n_workers=0)
    assert oracle.calls == 5 and result.duplicates == 1 and result.computed == 5
    assert result.labels[5].energy == result.labels[2].energy

    superset = _waters(8)  # the same five and three new ones
    result = label_structures(superset, oracle, store, n_workers=0)
    assert oracle.calls == 8 and result.computed == 3 and result.cached == 5 and all(result.ok)
    stored = store.labels(oracle)
    assert set(stored) == {geometry_hash(a) for a in superset} and len(store) == 8

    # positions equal to 1e-8 Å are the same structure; a different oracle is a different label
    nudged = superset[0].copy()
    nudged.positions[0, 0] += 1e-10
    assert label_hash(geometry_hash(nudged), oracle.oracle_id) == result.hashes[0]
    assert PySCFOracle("hf").oracle_id != PySCFOracle("mp2").oracle_id

    frames = read_frames(store.path)
    assert len(frames) == 8 and all(f.energy is not None and f.forces.shape == (3, 3) for f in frames)


def _count_rows(db: Path) -> int:
    try:
        with sqlite3.connect(db, timeout=5) as con:
            return con.execute("SELECT COUNT(*) FROM systems").fetchone()[0]
    except sqlite3.OperationalError:  # not created yet
        return 0


def test_kill_9_during_labelling_then_rerun_labels_each_structure_once(tmp_path):
    db, log = tmp_path / "labels.db", tmp_path / "calls.log"
    # a process of its own (from the workers' fork server: quick to start) labels 12 structures
    proc = _context().Process(target=label_waters, args=(str(db), str(log), 12, 0.05))
    proc.start()
    deadline = time.monotonic() + 60
    while _count_rows(db) < 3 and proc.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()
    assert proc.exitcode == -signal.SIGKILL
    killed_at = _count_rows(db)
    assert 3 <= killed_at < 12, "the labelling was not interrupted"

    oracle = CountingOracle(log=str(log))
    structures = _waters(12)
    result = label_structures(structures, oracle, db, n_workers=0)
    assert result.cached == killed_at and result.computed == 12 - killed_at == oracle.calls
    with sqlite3.connect(db) as con:
        rows = con.execute("SELECT value FROM text_key_values WHERE key='hash'").fetchall()
    hashes = [h for (h,) in rows]
    assert len(hashes) == len(set(hashes)) == 12  # each labelled exactly once
    assert set(hashes) == set(result.hashes)


# ---------------------------------------------------------------- export
def test_export_extxyz_with_named_keys_is_readable(tmp_path):
    low, high = CountingOracle(), PySCFOracle("hf", basis="sto-3g")
    structures = _waters(4)
    store = LabelStore(tmp_path / "labels.db")
    label_structures(structures, low, store, n_workers=0)
    label_structures(structures[:2], high, store, n_workers=0)
    path = tmp_path / "out.xyz"
    info = [{"split": "pool"}, {"split": "test"}, {}, {}]
    n = export_extxyz(
        path,
        store,
        low,
        structures,
        energy_key="low_energy",
        forces_key="low_forces",
        also={"hf": high},
        info=info,
    )
    assert n == 4 and sorted(os.listdir(tmp_path)) == ["labels.db", "out.xyz"]  # no temporary file left
    frames = read_frames(path, energy_key="low_energy", forces_key="low_forces")
    high_frames = read_frames(path, energy_key="hf_energy", forces_key="hf_forces")
    stored = store.labels(high)
    for i, (f, g) in enumerate(zip(frames, high_frames)):
        assert f.energy == pytest.approx(store.labels(low)[geometry_hash(structures[i])][1].energy)
        if i < 2:
            assert g.energy == pytest.approx(stored[geometry_hash(structures[i])][1].energy)
            assert g.forces.shape == (3, 3) and f.info["split"] == info[i]["split"]
        else:
            assert g.energy is None and g.forces is None
