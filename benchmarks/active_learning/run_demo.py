"""Active learning on water with a real QM oracle (PySCF HF/6-31G*), against random selection.

    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python benchmarks/active_learning/run_demo.py [--resume]

1. Reference data by MD with the oracle itself (Langevin, 0.5 fs, every step an HF/6-31G*
   calculation, labels cached in ``work/reference.db``): an independent **test** set (its own
   seeds) and a **pool** of MD frames at the exploration temperatures, for random selection and
   as validation data for the σ calibration.
2. The active-learning loop (``examples/active_learning.yaml`` settings, output in
   ``work/al``) from 10 seed structures until an exploration runs without triggering.
3. Random selection: the same committee trained on the seeds plus random pool frames, at the
   label counts of the loop's iterations.
4. Table (``RESULTS.md``), ``results.json`` and ``learning_curve.png`` in this folder.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from ase import Atoms, units
from ase.build import molecule
from ase.calculators.calculator import Calculator, all_changes
from ase.io import read, write

from nearsight.active_learning import evaluate_committee, load_al_config, run_active_learning, training_frames
from nearsight.qm import LabelStore, PySCFOracle, label_structures
from nearsight.uncertainty import EnsembleCalculator, atomic_write, calibration_report, fit_sigma_scale

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
WORK = HERE / "work"


class OracleCalculator(Calculator):
    """ASE calculator that labels through the oracle and the cache (for the reference MD)."""

    implemented_properties = ["energy", "forces"]

    def __init__(self, oracle, store):
        super().__init__()
        self.oracle, self.store = oracle, store

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        clean = Atoms(numbers=self.atoms.numbers, positions=self.atoms.positions)
        res = label_structures([clean], self.oracle, self.store, n_workers=0)
        label = res.labels[0]
        if not label.ok:
            raise RuntimeError(label.error)
        self.results = {"energy": label.energy, "forces": label.forces}


def oracle_md(oracle, store, temperature, steps, every, seed) -> list[Atoms]:
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import Stationary, ZeroRotation

    from nearsight.simulate.md import thermalize_momenta

    atoms = molecule("H2O")
    atoms.calc = OracleCalculator(oracle, store)
    rng = np.random.default_rng(seed)
    thermalize_momenta(atoms, temperature, rng=rng)
    Stationary(atoms)
    ZeroRotation(atoms)
    dyn = Langevin(
        atoms, 0.5 * units.fs, temperature_K=temperature, friction=0.02 / units.fs, fixcm=False, rng=rng
    )
    frames = []
    for step in range(1, steps + 1):
        dyn.run(1)
        if step % every == 0:
            f = Atoms(numbers=atoms.numbers, positions=atoms.positions)
            f.info["energy"] = float(atoms.get_potential_energy())
            f.arrays["forces"] = atoms.get_forces().copy()
            f.info["temperature"] = temperature
            frames.append(f)
    return frames


def committee_on(frames: list[Atoms], cfg: dict, out: Path, log) -> EnsembleCalculator:
    """Train the loop's committee on ``frames`` (same settings, seeds) in ``out``."""
    from nearsight.active_learning import _train_config, _train_member

    data = out / "train.xyz"
    if not data.is_file():
        atomic_write(data, lambda fh: write(fh, frames, format="extxyz"))
    tcfg = _train_config(cfg, data, out / "committee", None)
    paths = []
    for k in range(int(cfg["committee"]["n_members"])):
        tcfg["seed"] = int(cfg["seed"]) + k
        paths += _train_member(tcfg, out / "committee", k, bool(cfg["committee"]["bootstrap"]), log)
    return EnsembleCalculator(paths)


def read_labelled(path: Path) -> list[Atoms]:
    """extxyz frames with energy in info and forces in arrays (ASE puts them in a calculator)."""
    out = []
    for a in read(path, ":"):
        b = Atoms(numbers=a.numbers, positions=a.positions)
        b.info["energy"] = float(a.get_potential_energy())
        b.arrays["forces"] = a.get_forces().copy()
        out.append(b)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--config", default=str(ROOT / "examples" / "active_learning.yaml"))
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    t_start = time.perf_counter()
    WORK.mkdir(parents=True, exist_ok=True)
    cfg = load_al_config(args.config)
    cfg["output_dir"] = str(WORK / "al")
    oracle = PySCFOracle(**{k: v for k, v in cfg["oracle"].items() if k != "type"})
    ref = LabelStore(WORK / "reference.db")

    # 1. reference MD with the oracle: test set and random-selection pool
    t0 = time.perf_counter()
    temps = [float(t) for t in cfg["explore"]["temperatures"]]
    if (WORK / "test.xyz").is_file() and (WORK / "pool.xyz").is_file():  # made by an earlier run
        test, pool = read_labelled(WORK / "test.xyz"), read_labelled(WORK / "pool.xyz")
    else:
        test = [f for i, t in enumerate(temps) for f in oracle_md(oracle, ref, t, 300, 10, seed=100 + i)]
        pool = [f for i, t in enumerate(temps) for f in oracle_md(oracle, ref, t, 500, 5, seed=200 + i)]
        write(WORK / "test.xyz", test)
        write(WORK / "pool.xyz", pool)
    reference_time = time.perf_counter() - t0
    print(f"reference MD: {len(test)} test, {len(pool)} pool frames, {reference_time:.0f} s", flush=True)
    cfg["test"] = str(WORK / "test.xyz")

    # 2. the loop
    t0 = time.perf_counter()
    state = run_active_learning(cfg, resume=args.resume or (WORK / "al" / "state.json").is_file())
    loop_time = time.perf_counter() - t0
    hist = state["history"]
    store = LabelStore(WORK / "al" / "labels.db")
    n_seeds = sum(1 for a in training_frames(store, oracle) if a.info["iteration"] == 0)

    # calibration: σ scale fitted on the pool (validation), applied to the test set
    last = WORK / "al" / f"iter_{len(hist) - 1:03d}" / "committee"
    final = EnsembleCalculator(sorted(last.glob("member_*/best_model.pt")))
    valid = evaluate_committee(final, pool)
    scale = valid["calib_sigma_scale"]
    errs, sigs = [], []
    for a in test:
        final.calculate(Atoms(numbers=a.numbers, positions=a.positions), ["energy", "forces"])
        errs.append((final.results["forces"] - a.arrays["forces"]).ravel())
        sigs.append(np.maximum(final.results["forces_std"].ravel(), 1e-12))
    calib = calibration_report(np.concatenate(errs), np.concatenate(sigs), scale=scale)
    assert abs(fit_sigma_scale(np.concatenate(errs), np.concatenate(sigs))) > 0

    # 3. random selection at the same label counts (seeds + random pool frames)
    seeds = [a for a in training_frames(store, oracle) if a.info["iteration"] == 0]
    rng = np.random.default_rng(0)
    order = rng.permutation(len(pool))
    random_rows = []
    al_counts = [r["n_labels"] for r in hist]
    picks = {al_counts[int(round(q * (len(al_counts) - 1)))] for q in (0, 0.25, 0.5, 0.75, 1)}
    counts = sorted(picks | {2 * al_counts[-1], 3 * al_counts[-1]})
    for n in counts:
        extra = [pool[i] for i in order[: max(0, n - len(seeds))]]
        calc = committee_on(seeds + extra, cfg, WORK / "random" / f"n{n:04d}", log=None)
        m = evaluate_committee(calc, test)
        random_rows.append({"n_labels": len(seeds) + len(extra), **m})
        print(f"random {n}: force MAE {m['forces_mae']:.4f}", flush=True)

    al_rows = [
        {
            "iteration": r["iteration"],
            "n_labels": r["n_labels"],
            "oracle_calls": r["oracle_calls"],
            "triggered": r["triggered"],
            **r["test"],
        }
        for r in hist
    ]
    target = al_rows[-1]["forces_mae"]
    rn = np.array([r["n_labels"] for r in random_rows])
    re = np.array([r["forces_mae"] for r in random_rows])
    reached = [n for n, e in zip(rn, re) if e <= target]
    random_needed = int(min(reached)) if reached else None
    results = {
        "oracle": oracle.name,
        "molecule": "H2O",
        "n_seeds": n_seeds,
        "status": state["status"],
        "iterations": len(hist),
        "active_learning": al_rows,
        "random": random_rows,
        "al_final_forces_mae": target,
        "al_oracle_calls": al_rows[-1]["oracle_calls"],
        "random_labels_for_same_error": random_needed,
        "random_max_labels_tried": int(rn.max()),
        "calibration_test_with_valid_scale": calib,
        "reference_md_s": reference_time,
        "loop_s": loop_time,
        "total_s": time.perf_counter() - t_start,
        "n_test": len(test),
        "n_pool": len(pool),
    }
    atomic_write(HERE / "results.json", lambda fh: json.dump(results, fh, indent=1))
    _table(results)
    _plot(results)
    print(json.dumps({k: v for k, v in results.items() if k not in ("active_learning", "random")}, indent=1))


def _table(r: dict) -> None:
    lines = [
        f"# Active learning on water, {r['oracle']} oracle (generated by run_demo.py)",
        "",
        f"{r['n_seeds']} seed structures; status **{r['status']}** after {r['iterations']} iterations; "
        f"test set: {r['n_test']} frames of oracle MD; random pool: {r['n_pool']} frames of oracle MD.",
        "",
        "| iteration | labels | oracle calls | triggered trajectories | test E MAE (meV/atom) | test F MAE (eV/Å) "
        "| Spearman(|err|, σ) | σ scale | miscal. area |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for a in r["active_learning"]:
        lines.append(
            f"| {a['iteration']} | {a['n_labels']} | {a['oracle_calls']} | {a['triggered']} | "
            f"{1000 * a['energy_mae_per_atom']:.2f} | {a['forces_mae']:.4f} | {a['calib_spearman']:.2f} | "
            f"{a['calib_sigma_scale']:.2f} | {a['calib_miscalibration_area_raw']:.3f} |"
        )
    lines += [
        "",
        "Random selection (seeds + random oracle-MD frames, same committee):",
        "",
        "| labels | test E MAE (meV/atom) | test F MAE (eV/Å) |",
        "|---|---|---|",
    ]
    for a in r["random"]:
        lines.append(f"| {a['n_labels']} | {1000 * a['energy_mae_per_atom']:.2f} | {a['forces_mae']:.4f} |")
    c = r["calibration_test_with_valid_scale"]
    lines += [
        "",
        f"Active learning reaches a test force MAE of {r['al_final_forces_mae']:.4f} eV/Å with "
        f"{r['al_oracle_calls']} oracle calls; random selection needs "
        + (
            f"{r['random_labels_for_same_error']} labels"
            if r["random_labels_for_same_error"]
            else f"more than {r['random_max_labels_tried']} labels (the most tried)"
        )
        + " for the same error.",
        "",
        f"Calibration of the final committee's force σ on the test set, with the σ scale fitted on the "
        f"pool (validation): scale {c['sigma_scale']:.2f}; NLL {c['nll_raw']:.3f} → {c['nll_scaled']:.3f}; "
        f"miscalibration area {c['miscalibration_area_raw']:.3f} → {c['miscalibration_area_scaled']:.3f}; "
        f"Spearman {c['spearman']:.2f}.",
        "",
        f"Wall time (one core): reference MD {r['reference_md_s']:.0f} s, loop {r['loop_s']:.0f} s, "
        f"total {r['total_s']:.0f} s.",
    ]
    atomic_write(HERE / "RESULTS.md", lambda fh: fh.write("\n".join(lines) + "\n"))


def _plot(r: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.6))
    ax.plot(
        [a["n_labels"] for a in r["active_learning"]],
        [a["forces_mae"] for a in r["active_learning"]],
        "o-",
        label="active learning",
    )
    ax.plot(
        [a["n_labels"] for a in r["random"]],
        [a["forces_mae"] for a in r["random"]],
        "s--",
        label="random selection",
    )
    ax.set_xlabel("labels (oracle calls)")
    ax.set_ylabel("test force MAE (eV/Å)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_title(f"water, {r['oracle']}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(HERE / "learning_curve.png", dpi=120)


if __name__ == "__main__":
    main()
