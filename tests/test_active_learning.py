"""Committee uncertainty, calibration metrics and the active-learning loop (crash safety, failures)."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from ase.build import molecule
from ase.io import write

from nearsight import NearsightCalculator
from nearsight.active_learning import _explore, load_al_config, run_active_learning, select_diverse
from nearsight.qm import Label, LabelStore
from nearsight.training.config import validate_config
from nearsight.training.trainer import build_model
from nearsight.uncertainty import (
    EnsembleCalculator,
    calibration_report,
    fit_sigma_scale,
    miscalibration_area,
    spearman,
)

TESTS = Path(__file__).resolve().parent
SRC = TESTS.parent / "src"
TINY_MODEL = {"cutoff": 3.0, "n_radial": 4, "n_angular_eta": 1, "n_angle_sections": 2, "n_angular_shifts": 2}


def tiny_model(seed: int):
    cfg = validate_config({"data": {"train": "x"}, "model": {**TINY_MODEL, "hidden": [8]}})
    torch.manual_seed(seed)
    return build_model(cfg["model"], [1, 8]).double()


def waters(n: int, start: int = 0):
    out = []
    for s in range(start, start + n):
        a = molecule("H2O")
        a.positions += 0.05 * np.random.default_rng(s).normal(size=a.positions.shape)
        out.append(a)
    return out


def test_ensemble_calculator_mean_std_keys():
    models = [tiny_model(s) for s in (0, 1, 2)]
    atoms = waters(1)[0]
    calc = EnsembleCalculator(models)
    atoms.calc = calc
    forces = atoms.get_forces()
    singles = []
    for m in models:
        probe = atoms.copy()
        probe.calc = NearsightCalculator(m)
        singles.append((probe.get_potential_energy(), probe.get_forces()))
    e = np.array([s[0] for s in singles])
    f = np.stack([s[1] for s in singles])
    r = calc.results
    assert r["energy"] == pytest.approx(e.mean(), abs=1e-10)
    assert r["energy_std"] == pytest.approx(e.std(), abs=1e-10)
    np.testing.assert_allclose(forces, f.mean(0), atol=1e-10)
    np.testing.assert_allclose(r["forces_std"], f.std(0), atol=1e-10)
    per_atom = np.sqrt(f.var(0).sum(1))
    assert r["max_force_std"] == pytest.approx(per_atom.max(), abs=1e-10)
    assert r["forces_members"].shape == (3, 3, 3) and r["energies"].shape == (3,)
    # identical members: zero spread; a sigma scale multiplies every std
    same = EnsembleCalculator([models[0], models[0]], sigma_scale=3.0)
    same.calculate(atoms, ["energy", "forces"])
    assert same.results["max_force_std"] == 0.0 and same.results["sigma_scale"] == 3.0
    with pytest.raises(ValueError, match="at least 2"):
        EnsembleCalculator(models[:1])


def test_ensemble_stress_std_periodic():
    from ase.build import bulk

    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    cfg = validate_config({"data": {"train": "x"}, "model": {**TINY_MODEL, "hidden": [8]}})
    models = []
    for s in (0, 1):
        torch.manual_seed(s)
        models.append(build_model(cfg["model"], [29]).double())
    atoms.calc = EnsembleCalculator(models)
    stress = atoms.get_stress()
    assert stress.shape == (6,) and atoms.calc.results["stress_std"].shape == (6,)


def test_calibration_metrics_recover_scale():
    rng = np.random.default_rng(0)
    sigma = rng.uniform(0.1, 1.0, 20000)
    errors = 2.0 * sigma * rng.normal(size=sigma.size)  # σ underestimates the error by 2x
    assert fit_sigma_scale(errors, sigma) == pytest.approx(2.0, rel=0.02)
    rep = calibration_report(errors, sigma)
    assert rep["miscalibration_area_scaled"] < 0.01 < 0.1 < rep["miscalibration_area_raw"]
    assert rep["nll_scaled"] < rep["nll_raw"]
    assert 0.3 < spearman(errors, sigma) < 0.7
    assert miscalibration_area(sigma * rng.normal(size=sigma.size), sigma) < 0.01
    with pytest.raises(ValueError, match="index 1"):
        fit_sigma_scale([1.0, np.nan], [1.0, 1.0])


def test_select_diverse_prefers_distinct_structures():
    base = waters(1)[0]
    near = [base.copy() for _ in range(3)]
    for k, a in enumerate(near):
        a.positions[1, 0] += 0.001 * k
    far = base.copy()
    far.positions[1, 0] += 0.5
    cands = [*near, far]
    chosen = select_diverse(cands, np.array([0.1, 0.9, 0.2, 0.3]), 2)
    assert chosen == [1, 3]


def test_duplicate_label_refused(tmp_path):
    from qm_helpers import CountingOracle

    store = LabelStore(tmp_path / "l.db")
    atoms = waters(1)[0]
    oracle = CountingOracle()
    store.write(atoms, oracle(atoms), oracle)
    with pytest.raises(ValueError, match="duplicate labelling refused"):
        store.write(atoms, oracle(atoms), oracle)
    assert len(store) == 1
    store.write(atoms, Label.failure("x"), oracle)  # a failure never replaces a label in the ASE rows
    assert len(store) == 1


def test_nan_committee_deviation_is_a_failed_candidate():
    models = [tiny_model(0), tiny_model(1)]
    with torch.no_grad():
        next(models[1].parameters()).fill_(float("nan"))
    calc = EnsembleCalculator(models)
    cfg = load_al_config(
        {"seeds": "x", "explore": {"steps": 5, "n_starts": 1, "temperatures": [300, 500]}},
        base=Path("."),
    )
    out = _explore(cfg, 0, calc, waters(2), log=lambda m: None)
    assert len(out["failed"]) == 2 and out["candidates"] == []
    assert all(np.isnan(a.info["sigma"]) for a in out["failed"])
    assert out["triggered"] == 2  # not a clean run: never counted as converged


def al_config(tmp_path: Path, oracle: dict, n_workers: int = 0, structures=None, **over) -> dict:
    seeds = tmp_path / "seeds.xyz"
    write(seeds, waters(5) if structures is None else structures)
    raw = {
        "output_dir": str(tmp_path / "run"),
        "seeds": str(seeds),
        "max_iterations": 2,
        "oracle": oracle,
        "labelling": {"n_workers": n_workers, "timeout_s": over.pop("timeout_s", None)},
        "committee": {
            "n_members": 2,
            "train": {
                "model": {**TINY_MODEL, "hidden": [8]},
                "training": {"epochs": 6, "batch_size": 4, "lr": 0.01, "log_every": 100},
            },
        },
        "explore": {"temperatures": [300, 600], "steps": 20, "interval": 2, "n_starts": 2},
        "select": {"threshold": 0.05, "batch_size": 4, "min_sigma_fraction": 0.2},
        **over,
    }
    return load_al_config(raw, base=tmp_path)


def store_content_hash(db: Path) -> str:
    """SHA-256 of the sorted (label hash, energy, forces) of the store's rows and failures."""
    store = LabelStore(db)
    rows = sorted(
        (r.get("hash"), round(float(r.energy), 9), np.round(r.forces, 9).tobytes(), r.get("iteration"))
        for r in store.db.select()
    )
    h = hashlib.sha256(repr(rows).encode())
    h.update(repr(sorted(store.failed_hashes())).encode())
    return h.hexdigest()


def test_loop_records_oracle_failures(tmp_path):
    """Exceptions, timeouts and a real unconverged SCF inside the loop: recorded, never training data."""
    pytest.importorskip("pyscf")
    from nearsight.qm import geometry_hash

    modulus = 20  # about 15 % of the committee's picks fail
    by_mode: dict[int, list] = {}
    for a in waters(200):
        by_mode.setdefault(int(geometry_hash(a), 16) % modulus, []).append(a)
    ok = [a for m, group in by_mode.items() if m > 2 for a in group][:5]
    seeds = [by_mode[0][0], by_mode[1][0], by_mode[2][0], *ok]  # one exception, timeout, unconverged SCF
    oracle = {"type": "python", "object": "al_helpers:InjectingOracle", "kwargs": {"modulus": modulus}}
    cfg = al_config(tmp_path, oracle, n_workers=1, structures=seeds, timeout_s=3)
    state = run_active_learning(cfg, log=lambda m: None, allow_python_oracle=True)
    store = LabelStore(Path(cfg["output_dir"]) / "labels.db")
    errors = [f["error"] for f in store.failures()]
    assert any("injected exception" in e for e in errors)
    assert any("timeout" in e for e in errors)
    assert any("converge" in e.lower() for e in errors)
    failed = {f["hash"] for f in store.failures()}
    assert failed.isdisjoint(store.ok_hashes())
    assert state["status"] in ("converged", "max_iterations")
    assert sum(r["labelling"]["failed"] for r in state["history"] if "labelling" in r) + state[
        "seed_labelling"
    ]["failed"] == len(failed)


def _run_child(cfg_path: Path, log: Path, resume: bool):
    code = (
        f"import sys, json; sys.path.insert(0, {str(TESTS)!r});"
        "from nearsight.active_learning import load_al_config, run_active_learning;"
        f"run_active_learning(load_al_config({str(cfg_path)!r}), resume={resume!r}, log=lambda m: None, "
        "allow_python_oracle=True)"
    )
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{TESTS}", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", code], env=env)


SPRINGS = {"type": "python", "object": "al_helpers:InjectingOracle"}


def test_committee_members_train_on_all_labels_by_default(tmp_path):
    from nearsight.active_learning import _train_config

    cfg = al_config(tmp_path, SPRINGS)
    data = tmp_path / "train.xyz"
    tcfg = _train_config(cfg, data, tmp_path / "c", None)
    assert tcfg["data"]["train"] == str(data) and tcfg["data"]["valid"] == str(data)
    cfg["committee"]["valid_fraction"] = 0.2
    tcfg = _train_config(cfg, data, tmp_path / "c", None)
    assert tcfg["data"]["valid"] is None and tcfg["data"]["valid_fraction"] == 0.2
    with pytest.raises(ValueError, match="committee.valid_fraction"):
        al_config(tmp_path, SPRINGS, committee={"n_members": 2, "valid_fraction": 1.0})


def test_loop_without_triggers_converges_in_one_iteration(tmp_path):
    cfg = al_config(tmp_path, SPRINGS, select={"threshold": 1e6, "batch_size": 4, "min_sigma_fraction": 0.5})
    state = run_active_learning(cfg, log=lambda m: None, allow_python_oracle=True)
    assert state["status"] == "converged"
    assert len(state["history"]) == 1 and state["history"][0]["triggered"] == 0
    assert all(t["result"] == "clean" and t["steps"] == 20 for t in state["history"][0]["trajectories"])
    assert len(LabelStore(Path(cfg["output_dir"]) / "labels.db")) == 5  # the seeds, nothing more
    # a finished run stays finished
    again = run_active_learning(cfg, resume=True, log=lambda m: None, allow_python_oracle=True)
    assert again["status"] == "converged" and len(again["history"]) == 1


def test_fine_tuned_members_start_from_their_predecessors(tmp_path):
    from nearsight.models.io import load_model

    cfg = al_config(tmp_path, SPRINGS, max_iterations=2)
    cfg["committee"]["fine_tune"] = True
    cfg["committee"]["train"]["training"].update(lr=1e-9, scheduler="none")  # weights barely move
    state = run_active_learning(cfg, log=lambda m: None, allow_python_oracle=True)
    assert len(state["history"]) == 2 and state["history"][1]["n_labels"] > 5
    root = Path(cfg["output_dir"])

    def weights(it: int, k: int) -> torch.Tensor:
        m = load_model(root / f"iter_{it:03d}" / "committee" / f"member_{k}" / "best_model.pt")
        return torch.cat([p.detach().flatten() for p in m.nets.parameters()])

    for k in (0, 1):  # member k of iteration 1 continues member k of iteration 0, not member 1 - k
        assert torch.allclose(weights(1, k), weights(0, k), atol=1e-6)
        assert not torch.allclose(weights(1, k), weights(0, 1 - k), atol=1e-3)


def test_resume_with_a_larger_max_iterations(tmp_path):
    log = tmp_path / "calls.log"
    oracle = {**SPRINGS, "kwargs": {"log": str(log)}}
    cfg = al_config(tmp_path, oracle, max_iterations=1)
    state = run_active_learning(cfg, log=lambda m: None, allow_python_oracle=True)
    assert state["status"] == "max_iterations" and len(state["history"]) == 1
    assert state["history"][0]["triggered"] > 0
    n_first = len(LabelStore(Path(cfg["output_dir"]) / "labels.db"))
    cfg["max_iterations"] = 3
    state = run_active_learning(cfg, resume=True, log=lambda m: None, allow_python_oracle=True)
    assert state["status"] in ("max_iterations", "converged")
    assert [r["iteration"] for r in state["history"]] == list(range(len(state["history"])))
    assert len(state["history"]) >= 2 and state["history"][1]["n_labels"] == n_first
    calls = log.read_text().split()
    assert len(calls) == len(set(calls)) == len(LabelStore(Path(cfg["output_dir"]) / "labels.db"))


def test_kill9_and_resume_gives_the_same_labels(tmp_path):
    import yaml

    oracle = {"type": "python", "object": "al_helpers:InjectingOracle", "kwargs": {"sleep_s": 0.1}}
    results = {}
    for name, kill_after in (("ref", None), ("killed", 7)):
        d = tmp_path / name
        d.mkdir()
        cfg = al_config(d, {**oracle, "kwargs": {**oracle["kwargs"], "log": str(d / "calls.log")}})
        cfg["oracle"]["kwargs"]["log"] = "calls.log"  # same oracle id in both runs; relative to cwd
        cfg_path = d / "al.yaml"
        cfg_path.write_text(yaml.safe_dump(cfg))
        log = d / "calls.log"
        cwd = os.getcwd()
        os.chdir(d)
        try:
            proc = _run_child(cfg_path, log, resume=False)
            if kill_after is not None:
                # kill -9 while labelling the first committee batch, then twice more a little
                # after each restart (training, exploration or labelling, wherever it is)
                deadline = time.time() + 60
                while time.time() < deadline and proc.poll() is None:
                    if log.is_file() and len(log.read_text().split()) >= kill_after:
                        break
                    time.sleep(0.02)
                for delay in (1.5, 2.5, None):
                    proc.send_signal(signal.SIGKILL)
                    proc.wait()
                    proc = _run_child(cfg_path, log, resume=True)
                    if delay is None:
                        break
                    time.sleep(delay)
            assert proc.wait(timeout=120) == 0
        finally:
            os.chdir(cwd)
        calls = log.read_text().split()
        # only a calculation in flight at a kill (never committed) may be asked again
        assert len(calls) - len(set(calls)) <= (0 if kill_after is None else 3), name
        store = LabelStore(d / "run" / "labels.db")
        hashes = [r.get("hash") for r in store.db.select()]
        assert len(hashes) == len(set(hashes)), f"{name}: a label stored twice"
        results[name] = (store_content_hash(d / "run" / "labels.db"), len(set(calls)), len(hashes))
    assert results["killed"] == results["ref"]
    assert results["ref"][2] > 5  # the committee's picks were labelled, beyond the 5 seeds


def test_a_member_killed_mid_training_is_trained_again(tmp_path):
    """A kill after a best model was written, before the end, leaves no final model: retrain."""
    from ase.calculators.singlepoint import SinglePointCalculator

    from nearsight.models.io import load_model, save_model
    from nearsight.uncertainty import member_finished, train_committee
    from qm_helpers import springs

    frames = waters(8)
    for a in frames:
        e, f = springs(a.positions)
        a.calc = SinglePointCalculator(a, energy=e, forces=f)
    write(tmp_path / "data.xyz", frames)
    cfg = validate_config(
        {
            "seed": 3,
            "output_dir": str(tmp_path / "c"),
            "data": {
                "train": str(tmp_path / "data.xyz"),
                "valid": str(tmp_path / "data.xyz"),  # validation = training data, on purpose
                "remove_duplicates": False,
            },
            "model": {**TINY_MODEL, "hidden": [8]},
            "training": {"epochs": 4, "batch_size": 4, "lr": 0.01, "log_every": 100},
        }
    )

    def weights(path: Path) -> torch.Tensor:
        return torch.cat([p.detach().flatten() for p in load_model(path).parameters()])

    paths = train_committee(cfg, 2)
    assert all(member_finished(p.parent) for p in paths)
    done = [weights(p) for p in paths]
    # what a kill -9 at epoch 2 leaves: the best model so far, no final model
    early = load_model(paths[0])
    with torch.no_grad():
        for p in early.parameters():
            p.add_(0.1)
    save_model(early, paths[0])
    (paths[0].parent / "final_model.pt").unlink()
    stamp = paths[1].stat().st_mtime_ns
    assert not member_finished(paths[0].parent)
    assert train_committee(cfg, 2) == paths
    assert torch.equal(weights(paths[0]), done[0])  # retrained from scratch: the same model
    assert paths[1].stat().st_mtime_ns == stamp  # the finished member is kept


def test_aleatoric_head_recovers_injected_noise(tmp_path):
    """Labels = a model's prediction + Gaussian noise whose σ depends on the region (H-O-H angle)."""
    from nearsight.models.io import load_model, save_model
    from nearsight.uncertainty import fit_aleatoric_head

    mean = tiny_model(0)
    calc = NearsightCalculator(mean)
    rng = np.random.default_rng(1)
    frames, wide = [], []
    for a in waters(300):
        if 102.0 < a.get_angle(1, 0, 2) < 106.0:  # a gap between the two regions
            continue
        a.calc = calc
        e, f = a.get_potential_energy(), a.get_forces()
        a.calc = None
        is_wide = a.get_angle(1, 0, 2) > 104.0
        s_f = 0.3 if is_wide else 0.03
        a.info["energy"] = e + rng.normal() * (0.1 if is_wide else 0.01)
        a.arrays["forces"] = f + rng.normal(size=f.shape) * s_f
        frames.append(a)
        wide.append(is_wide)
    head = fit_aleatoric_head(mean, frames, hidden=(32,), epochs=400)
    save_model(head, tmp_path / "head.pt", head.metadata)
    ens = EnsembleCalculator([mean, mean], aleatoric=tmp_path / "head.pt")
    sig_f, sig_e = [], []
    for a in frames:
        ens.calculate(a.copy(), ["energy", "forces"])
        sig_f.append(ens.results["forces_aleatoric_std"].mean())
        sig_e.append(ens.results["energy_aleatoric_std"])
        assert ens.results["max_force_std"] == 0.0  # identical members: no epistemic spread
    wide = np.array(wide)
    sig_f, sig_e = np.array(sig_f), np.array(sig_e)
    # recovered within ~30 % where the noise is large; the small noise is over-estimated (≤ 2.7x)
    assert 0.22 < np.median(sig_f[wide]) < 0.4 and 0.015 < np.median(sig_f[~wide]) < 0.08
    assert np.median(sig_e[wide]) > 3 * np.median(sig_e[~wide])
    assert load_model(tmp_path / "head.pt").metadata["aleatoric"] is True
    with pytest.raises(ValueError, match="fit_aleatoric_head"):
        EnsembleCalculator([mean, mean], aleatoric=mean)
