"""The loop: label, train the committee, evaluate, explore, select, until an exploration runs clean."""

from __future__ import annotations

import copy
import csv
import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms, units

from ..progress import Bar, NoBar, progress_bar
from ..qm import LabelStore, Oracle, label_structures
from ..qm.oracles import geometry_hash
from ..uncertainty import EnsembleCalculator, atomic_write, calibration_report
from .config import make_oracle
from .selection import select_diverse


# ------------------------------------------------------------------------------------------- the loop
class _State:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = (
            json.loads(path.read_text())
            if path.is_file()
            else {"done": [], "history": [], "status": "running"}
        )

    def done(self, stage: str) -> bool:
        return stage in self.data["done"]

    def mark(self, stage: str, **info: Any) -> None:
        self.data["done"].append(stage)
        self.data.update(info)
        atomic_write(self.path, lambda fh: json.dump(self.data, fh, indent=1, default=_plain))


def _plain(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    raise TypeError(f"not JSON-serialisable: {type(v).__name__}")


def _write_xyz(path: Path, frames: list[Atoms]) -> None:
    import ase.io

    atomic_write(path, lambda fh: ase.io.write(fh, frames, format="extxyz"))


def _read_xyz(path: Path) -> list[Atoms]:
    import ase.io

    return list(ase.io.read(path, index=":")) if path.stat().st_size else []


def training_frames(store: LabelStore, oracle: Oracle) -> list[Atoms]:
    """Every successful label of ``oracle``, ordered by (iteration, geometry hash), energy/forces in info/arrays."""
    rows = []
    for row in store.db.select(oracle_id=oracle.oracle_id):
        atoms = Atoms(numbers=row.numbers, positions=row.positions, cell=row.cell, pbc=row.pbc)
        atoms.info["energy"] = float(row.energy)
        forces = row.get("forces")
        if forces is not None:
            atoms.arrays["forces"] = np.asarray(forces, dtype=np.float64)
        atoms.info["iteration"] = int(row.get("iteration", -1))
        rows.append((int(row.get("iteration", -1)), row.get("geometry_hash"), atoms))
    rows.sort(key=lambda r: (r[0], r[1]))
    return [a for _, _, a in rows]


def _train_config(cfg: dict, data_file: Path, out_dir: Path, init_from: Path | None) -> dict:
    from ..training.config import validate_config

    raw = copy.deepcopy(cfg["committee"]["train"])
    raw["seed"] = int(cfg["seed"])
    raw["output_dir"] = str(out_dir)
    data = raw.setdefault("data", {})
    data["train"] = str(data_file)
    held_out = float(cfg["committee"]["valid_fraction"])
    if held_out > 0:
        data["valid_fraction"] = held_out
    elif not data.get("valid"):  # every label trains every member; model selection on the training loss
        data["valid"] = str(data_file)
        data.setdefault("remove_duplicates", False)  # validation = training data, on purpose
    if init_from is not None:
        raw.setdefault("model", {})["init_from"] = str(init_from)
    return validate_config(raw, source="active-learning committee.train")


def _train(cfg: dict, it: int, root: Path, store: LabelStore, oracle: Oracle, log) -> list[Path]:
    it_dir = root / f"iter_{it:03d}"
    frames = training_frames(store, oracle)
    data_file = it_dir / "train.xyz"
    _write_xyz(data_file, frames)
    com = cfg["committee"]
    paths = []
    for k in range(int(com["n_members"])):
        init = None
        if com["fine_tune"] and it > 0:
            init = root / f"iter_{it - 1:03d}" / "committee" / f"member_{k}" / "best_model.pt"
        tcfg = _train_config(cfg, data_file, it_dir / "committee", init)
        tcfg["seed"] = int(cfg["seed"]) + k
        # one member at a time (train_committee handles seeds + bootstrap; fine-tune needs per-member init)
        paths += _train_member(tcfg, it_dir / "committee", k, bool(com["bootstrap"]), log)
    log(f"iteration {it}: committee of {len(paths)} trained on {len(frames)} labels")
    return paths


def _train_member(tcfg: dict, committee_dir: Path, k: int, bootstrap: bool, log) -> list[Path]:
    from ..training.trainer import Trainer
    from ..uncertainty.members import _bootstrap_file, restart_member

    member_dir = committee_dir / f"member_{k}"
    best = member_dir / "best_model.pt"
    if not restart_member(member_dir):
        return [best]
    tcfg = copy.deepcopy(tcfg)
    tcfg["output_dir"] = str(member_dir)
    if bootstrap:
        tcfg["data"]["valid"] = tcfg["data"]["train"]
        tcfg["data"]["train"] = str(_bootstrap_file(tcfg, member_dir, seed=1000 + k))
    Trainer(tcfg, log=lambda m: None).train()
    return [best]


def evaluate_committee(calc: EnsembleCalculator, frames: list[Atoms]) -> dict[str, float]:
    """Errors of the committee mean (energy per atom, force components) and force-σ calibration."""
    de, df, sf = [], [], []
    for atoms in frames:
        ref_e = atoms.info.get("energy")
        ref_f = atoms.arrays.get("forces")
        if ref_e is None and atoms.calc is not None:
            ref_e, ref_f = atoms.get_potential_energy(), atoms.get_forces()
        probe = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
        calc.calculate(probe, ["energy", "forces"])
        r = calc.results
        de.append((r["energy"] - ref_e) / len(atoms))
        df.append((r["forces"] - ref_f).ravel())
        sf.append(np.maximum(r["forces_std"].ravel(), 1e-12))
    de, df, sf = np.asarray(de), np.concatenate(df), np.concatenate(sf)
    out = {
        "energy_mae_per_atom": float(np.mean(np.abs(de))),
        "forces_mae": float(np.mean(np.abs(df))),
        "forces_rmse": float(np.sqrt(np.mean(df**2))),
    }
    out.update({f"calib_{k}": v for k, v in calibration_report(df, sf).items()})
    return out


def _explore(cfg: dict, it: int, calc: EnsembleCalculator, starts: list[Atoms], log) -> dict:
    """Committee MD; returns {triggered, candidates: [Atoms with info sigma/parent/md_step/temperature], failed}."""
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary, ZeroRotation

    from ..simulate.md import thermalize_momenta

    exp, thr = cfg["explore"], float(cfg["select"]["threshold"])
    floor = float(cfg["select"]["min_sigma_fraction"]) * thr
    candidates, failed, triggered, trajectories = [], [], 0, []
    n_starts = min(int(exp["n_starts"]), len(starts))
    for ti, temperature in enumerate(exp["temperatures"]):
        for si in range(n_starts):
            start = starts[(si + it * n_starts) % len(starts)]
            name = f"iter{it}_T{float(temperature):g}_start{si}"
            atoms = Atoms(numbers=start.numbers, positions=start.positions, cell=start.cell, pbc=start.pbc)
            atoms.calc = calc
            rng = np.random.default_rng([int(cfg["seed"]), it, ti, si])
            if thermalize_momenta is not None:
                thermalize_momenta(atoms, float(temperature), rng=rng)
            else:  # ASE < 3.29
                MaxwellBoltzmannDistribution(atoms, temperature_K=float(temperature), rng=rng)
            Stationary(atoms)
            if not atoms.pbc.any() and len(atoms) > 2:
                ZeroRotation(atoms)
            dyn = Langevin(
                atoms,
                timestep=float(exp["timestep_fs"]) * units.fs,
                temperature_K=float(temperature),
                friction=float(exp["friction_per_fs"]) / units.fs,
                fixcm=False,
                rng=rng,
            )
            outcome = {"name": name, "temperature": float(temperature), "steps": 0, "result": "clean"}
            for step in range(1, int(exp["steps"]) + 1):
                try:
                    dyn.run(1)
                    sigma = float(calc.results["max_force_std"])
                    finite = math.isfinite(sigma) and bool(np.all(np.isfinite(atoms.positions)))
                except (ValueError, RuntimeError, FloatingPointError) as exc:  # e.g. atoms blown apart
                    sigma, finite = math.nan, False
                    outcome["error"] = f"{type(exc).__name__}: {exc}"
                outcome["steps"] = step
                frame = None
                if not finite or sigma > thr or (step % int(exp["interval"]) == 0 and sigma > floor):
                    frame = Atoms(
                        numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc
                    )
                    frame.info.update(sigma=sigma, parent=name, md_step=step, temperature=float(temperature))
                if not finite:
                    failed.append(frame)
                    outcome["result"] = "failed (non-finite σ)"
                    log(f"  {name}: non-finite committee σ at step {step}: failed candidate, not labelled")
                    break
                if frame is not None:
                    candidates.append(frame)
                if sigma > thr:
                    triggered += 1
                    outcome["result"] = f"triggered (σ = {sigma:.3f} eV/Å)"
                    break
            if outcome["result"].startswith("failed"):
                triggered += 1  # not a clean run: the loop has not converged
            trajectories.append(outcome)
            log(f"  {name}: {outcome['result']} after {outcome['steps']} steps")
    return {"triggered": triggered, "candidates": candidates, "failed": failed, "trajectories": trajectories}


def run_active_learning(
    cfg: dict,
    resume: bool = False,
    log: Callable[[str], None] | None = None,
    stop_after: str | None = None,
    allow_python_oracle: bool = False,
) -> dict:
    """Run (or with ``resume`` continue) the loop described by ``cfg`` (:func:`load_al_config`).

    Returns the state: ``status`` (``converged`` or ``max_iterations``), ``history`` (one dict
    per iteration: labels, oracle calls, failures, test errors, calibration, timings).
    ``stop_after`` (tests): return after the named stage (e.g. ``"1:explore"``).
    ``allow_python_oracle``: allow an oracle of ``type: python`` (imports and runs user code).
    On a terminal a bar shows the iteration and its stage (:mod:`nearsight.progress`).
    """
    log = log or (lambda m: print(m, flush=True))
    with progress_bar(total=int(cfg["max_iterations"]), desc="active learning", unit="iteration") as bar:
        return _run(cfg, resume, bar.wrap(log), stop_after, allow_python_oracle, bar)


def _run(
    cfg: dict,
    resume: bool,
    log: Callable[[str], None],
    stop_after: str | None,
    allow_python: bool,
    bar: Bar | NoBar,
) -> dict:
    """:func:`run_active_learning` with its log and bar."""
    import ase.io
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    root = Path(cfg["output_dir"])
    state_path = root / "state.json"
    if state_path.is_file() and not resume:
        raise FileExistsError(
            f"{state_path} exists: pass --resume to continue that run, or use another output_dir"
        )
    oracle = make_oracle(cfg["oracle"], allow_python=allow_python)  # before anything is written
    root.mkdir(parents=True, exist_ok=True)
    if not state_path.is_file():
        atomic_write(root / "config.json", lambda fh: json.dump(cfg, fh, indent=1))
    state = _State(state_path)
    if state.data["status"] == "max_iterations" and len(state.data["history"]) < int(cfg["max_iterations"]):
        state.data["status"] = "running"  # resumed with a larger max_iterations
        state.data["done"] = [d for d in state.data["done"] if d != "stop"]
    store = LabelStore(root / "labels.db")
    lab = cfg["labelling"]
    seeds = list(ase.io.read(cfg["seeds"], index=":"))
    test = list(ase.io.read(cfg["test"], index=":")) if cfg["test"] else []

    def label(frames: list[Atoms], it: int, selection: str) -> dict:
        todo, skipped = [], 0
        known = store.ok_hashes() | store.failed_hashes()
        from ..qm.labelling import label_hash

        for a in frames:  # never ask the oracle twice for a stored geometry
            if label_hash(geometry_hash(a), oracle.oracle_id) in known:
                skipped += 1
            else:
                todo.append(a)

        def extra(i: int, a: Atoms) -> dict:
            kv = {"iteration": it, "selection": selection}
            for key in ("sigma", "parent", "md_step", "temperature"):
                if key in a.info:
                    kv[key] = a.info[key]
            return kv

        t0 = time.perf_counter()
        res = label_structures(
            todo, oracle, store, n_workers=int(lab["n_workers"]), timeout_s=lab["timeout_s"], extra=extra
        )
        return {
            "requested": len(frames),
            "already_stored": skipped,
            "computed": res.computed,
            "failed": sum(not lbl.ok for lbl in res.labels),
            "label_time_s": time.perf_counter() - t0,
        }

    if not state.done("seed"):
        bar.set_description("active learning: seed labels")
        info = label(seeds, 0, "seed")
        log(f"seeds: {info}")
        state.mark("seed", seed_labelling=info)
    it = len(state.data["history"])
    bar.update(it)
    while state.data["status"] == "running":
        it_dir = root / f"iter_{it:03d}"
        tag = f"{it}:"
        stage = lambda name, it=it: bar.set_description(f"active learning {it}: {name}")  # noqa: E731
        record = state.data.get("current", {"iteration": it})
        if not state.done(tag + "train"):
            stage("retrain" if it else "train")
            t0 = time.perf_counter()
            paths = _train(cfg, it, root, store, oracle, log)
            record.update(
                n_labels=len(training_frames(store, oracle)),
                train_time_s=time.perf_counter() - t0,
                oracle_calls=len(store) + len(store.failed_hashes()),
            )
            state.mark(tag + "train", current=record)
        if stop_after == tag + "train":
            return state.data
        paths = [
            it_dir / "committee" / f"member_{k}" / "best_model.pt"
            for k in range(cfg["committee"]["n_members"])
        ]
        calc = EnsembleCalculator(paths, on_extrapolation="ignore")  # exploring leaves the data: σ triggers
        if test and not state.done(tag + "evaluate"):
            stage("evaluate")
            record.update(test=evaluate_committee(calc, test))
            log(f"iteration {it}: test force MAE {record['test']['forces_mae']:.4f} eV/Å")
            state.mark(tag + "evaluate", current=record)
        if not state.done(tag + "explore"):
            stage("explore")
            t0 = time.perf_counter()
            starts = training_frames(store, oracle)
            seed_starts = [a for a in starts if a.info.get("iteration") == 0] or starts
            result = _explore(cfg, it, calc, seed_starts, log)
            stage("select")
            sig = np.array([a.info["sigma"] for a in result["candidates"]])
            chosen = select_diverse(result["candidates"], sig, int(cfg["select"]["batch_size"]))
            _write_xyz(it_dir / "candidates.xyz", result["candidates"])
            _write_xyz(it_dir / "selected.xyz", [result["candidates"][i] for i in chosen])
            _write_xyz(it_dir / "failed_candidates.xyz", result["failed"])
            record.update(
                triggered=result["triggered"],
                n_candidates=len(result["candidates"]),
                failed_candidates=len(result["failed"]),
                selected=len(chosen),
                trajectories=result["trajectories"],
                explore_time_s=time.perf_counter() - t0,
            )
            state.mark(tag + "explore", current=record)
        if stop_after == tag + "explore":
            return state.data
        if record["triggered"] == 0:
            state.data["history"].append(record)
            state.mark(tag + "converged", status="converged", current={})
            log(f"iteration {it}: no trajectory triggered in {cfg['explore']['steps']} steps: converged")
            break
        if not state.done(tag + "label"):
            stage("label")
            selected = _read_xyz(it_dir / "selected.xyz")
            record.update(labelling=label(selected, it + 1, "committee"))
            log(f"iteration {it}: labelled {record['labelling']}")
            state.data["history"].append(record)
            state.mark(tag + "label", current={"iteration": it + 1})
        if stop_after == tag + "label":
            return state.data
        it += 1
        bar.update()
        if it >= int(cfg["max_iterations"]):
            state.mark("stop", status="max_iterations")
    _history_csv(root / "history.csv", state.data["history"])
    return state.data


def _history_csv(path: Path, history: list[dict]) -> None:
    fields = [
        "iteration",
        "n_labels",
        "oracle_calls",
        "triggered",
        "n_candidates",
        "failed_candidates",
        "selected",
        "test_energy_mae_per_atom",
        "test_forces_mae",
        "test_forces_rmse",
        "calib_spearman",
        "calib_sigma_scale",
        "calib_miscalibration_area_raw",
        "calib_nll_raw",
        "train_time_s",
        "explore_time_s",
    ]

    def row(r: dict) -> list:
        t = r.get("test", {})
        return [
            r.get("iteration"),
            r.get("n_labels"),
            r.get("oracle_calls"),
            r.get("triggered"),
            r.get("n_candidates"),
            r.get("failed_candidates"),
            r.get("selected"),
            t.get("energy_mae_per_atom"),
            t.get("forces_mae"),
            t.get("forces_rmse"),
            t.get("calib_spearman"),
            t.get("calib_sigma_scale"),
            t.get("calib_miscalibration_area_raw"),
            t.get("calib_nll_raw"),
            r.get("train_time_s"),
            r.get("explore_time_s"),
        ]

    def write(fh) -> None:
        w = csv.writer(fh)
        w.writerow(fields)
        for r in history:
            w.writerow(row(r))

    atomic_write(path, write)
