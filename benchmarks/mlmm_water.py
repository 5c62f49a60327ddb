"""ML/MM cost in OpenMM: ethanol described by nearsight in a box of TIP3P water, against the same box all-MM.

    .venv/bin/python benchmarks/mlmm_water.py [--model MODEL.pt] [--steps 500] [--padding-nm 1.0]
                                              [--threads 1] [--rounds 5] [--json OUT.json]

Ethanol (a held-out DFT geometry from examples/data/ethanol_test200.xyz) is matched to CHARMM36's ETOH
residue and solvated with Modeller.addSolvent in CHARMM's TIP3P water (PME, 0.9 nm cutoff, the
waters rigid, X–H bonds constrained in the MM run; the ML region's constraints are removed).  The ML/MM
system (nearsight.mlmm.ml_mm_system: mechanical embedding through openmmml's MLPotential("ase"), an
openmm.PythonForce) and the MM-only system run the same Langevin dynamics (300 K, 1 fs, 1/ps) on the
CPU platform from one start (minimised with the MM force field), in the same process.  The script
prints ms per step of each (median over --rounds blocks that alternate MM, ML/MM and the nearsight
calculator alone on ethanol, so that all three see the same load on a shared machine), the median of
the per-round ratios, CPU time per step, and what is left: the overhead of the Python callback.

Without --model it trains a small model first (the settings of examples/ethanol_bpnn.yaml, time-limited
by --train-minutes, into runs/mlmm_water/) or reuses the one a previous run trained there.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CHARMM = ("charmm36.xml", "charmm36/water.xml")


def train_small_model(out_dir: Path, minutes: float) -> Path:
    """examples/ethanol_bpnn.yaml on the bundled 300 ethanol frames, stopped after ``minutes``."""
    from nearsight.training.config import load_config
    from nearsight.training.trainer import Trainer

    config = load_config(ROOT / "examples" / "ethanol_bpnn.yaml")
    config["output_dir"] = str(out_dir)
    config["training"]["max_time_minutes"] = minutes
    return Trainer(config).train()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="a nearsight model file (default: train a small one)")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5, help="alternating timing blocks per system")
    parser.add_argument("--padding-nm", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=1, help="OpenMM CPU threads and torch threads")
    parser.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    parser.add_argument("--train-minutes", type=float, default=3.0)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    import openmm
    import torch
    from ase.io import read
    from openmm import app, unit

    from nearsight import NearsightCalculator
    from nearsight.mlmm import ml_mm_system, topology_from_atoms

    torch.set_num_threads(args.threads)
    model = args.model
    if model is None:
        out_dir = ROOT / "runs" / "mlmm_water" / "ethanol_bpnn"
        model = out_dir / "best_model.pt"
        if not model.is_file():
            print(f"training a small ethanol model ({args.train_minutes} min) into {out_dir}", flush=True)
            model = train_small_model(out_dir, args.train_minutes)
    ethanol = read(ROOT / "examples" / "data" / "ethanol_test200.xyz", index=0)
    ethanol.calc = None
    topology, positions = topology_from_atoms(ethanol, "ETOH")
    forcefield = app.ForceField(*CHARMM)
    modeller = app.Modeller(topology, positions)
    modeller.addSolvent(forcefield, model="tip3p", padding=args.padding_nm * unit.nanometer)
    n_atoms = modeller.topology.getNumAtoms()
    mlmm = ml_mm_system(
        modeller.topology, modeller.positions, range(len(ethanol)), str(model),
        forcefield=forcefield, cutoff_nm=0.9, dtype=args.dtype,
    )  # fmt: skip

    # one start for both runs, minimised with the MM force field (an L-BFGS line search on the ML/MM
    # energy can throw a briefly trained model's ethanol into its unphysical short-range region)
    mlmm.minimize_with_mm(max_iterations=200, threads=args.threads)

    simulations = {
        name: mlmm.simulation(threads=args.threads, seed=2, mm_only=(name == "mm")) for name in ("mm", "mlmm")
    }
    for simulation in simulations.values():
        simulation.step(20)  # warm-up: kernels, neighbour lists, first calls
    calc = NearsightCalculator(str(model), dtype=args.dtype)
    probe = ethanol.copy()  # in the periodic box, as the callback evaluates it (stress included)
    probe.cell = 10.0 * np.asarray(mlmm.topology.getPeriodicBoxVectors().value_in_unit(unit.nanometer))
    probe.pbc = True
    probe.calc = calc

    def ml_alone() -> None:  # what the callback computes, at a new geometry each call (nothing cached)
        probe.positions = probe.positions + 1e-6
        probe.get_forces()

    # alternate blocks so that both see the same machine load; per-step wall and CPU time of each block
    block = max(1, args.steps // args.rounds)
    runs = {
        "mm": simulations["mm"].step,
        "mlmm": simulations["mlmm"].step,
        "ml_alone": lambda n: [ml_alone() for _ in range(n)],
    }
    wall: dict[str, list[float]] = {name: [] for name in runs}
    cpu: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, run in runs.items():
            w0, c0 = time.perf_counter(), time.process_time()
            run(block)
            wall[name].append((time.perf_counter() - w0) / block)
            cpu[name].append((time.process_time() - c0) / block)
    ms = {name: 1e3 * float(np.median(v)) for name, v in wall.items()}
    ms_cpu = {name: 1e3 * float(np.median(v)) for name, v in cpu.items()}
    ratios = [m / r for m, r in zip(wall["mlmm"], wall["mm"])]

    finals: dict[str, dict] = {}
    for name, simulation in simulations.items():
        state = simulation.context.getState(getEnergy=True, getPositions=True)
        xyz = state.getPositions(asNumpy=True).value_in_unit(unit.angstrom)[: len(ethanol)]
        bonds = [np.linalg.norm(xyz[b.atom1.index] - xyz[b.atom2.index]) for b in topology.bonds()]
        dof = 3 * n_atoms - simulation.system.getNumConstraints() - 3
        kinetic = state.getKineticEnergy().value_in_unit(unit.kilojoule_per_mole)
        r_gas = unit.MOLAR_GAS_CONSTANT_R.value_in_unit(unit.kilojoule_per_mole / unit.kelvin)
        finals[name] = {
            "steps_run": 20 + args.rounds * block,
            "temperature_K": 2 * kinetic / (dof * r_gas),
            "ethanol_bond_range_A": [float(min(bonds)), float(max(bonds))],
        }

    summary = {
        "atoms": n_atoms,
        "waters": (n_atoms - len(ethanol)) // 3,
        "box_nm": np.diag(mlmm.topology.getPeriodicBoxVectors().value_in_unit(unit.nanometer)).tolist(),
        "steps": args.rounds * block,
        "rounds": args.rounds,
        "threads": args.threads,
        "dtype": args.dtype,
        "model": str(model),
        "mm_ms_per_step": ms["mm"],
        "mlmm_ms_per_step": ms["mlmm"],
        "ratio_mlmm_over_mm": float(np.median(ratios)),
        "ratio_per_round": ratios,
        "nearsight_alone_ms_per_call": ms["ml_alone"],
        "callback_overhead_ms_per_step": ms["mlmm"] - ms["mm"] - ms["ml_alone"],
        "cpu_ms_per_step": ms_cpu,
        "final": finals,
        "openmm": openmm.__version__,
    }  # fmt: skip
    print(json.dumps(summary, indent=2))
    print(
        f"{summary['waters']} TIP3P waters + nearsight ethanol, {args.threads} thread(s): "
        f"MM {summary['mm_ms_per_step']:.2f} ms/step, ML/MM {summary['mlmm_ms_per_step']:.2f} ms/step "
        f"(x{summary['ratio_mlmm_over_mm']:.2f}); "
        f"nearsight alone {summary['nearsight_alone_ms_per_call']:.2f} ms/call, "
        f"callback overhead {summary['callback_overhead_ms_per_step']:.2f} ms/step"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
