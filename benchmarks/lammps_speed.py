"""LAMMPS with ``pair_style nearsight`` against the ASE calculator: MD throughput and peak memory.

Water (the first 192-atom frame of ``../shared/data/water/data_0`` replicated: 1536, 12 288 and
98 304 atoms) and diamond silicon (1536, 12 288, 101 376 atoms), float32, NVE velocity Verlet at
0.5 fs.  LAMMPS runs on 1 and 2 MPI ranks (one OpenMP thread each; strong scaling on this 2-core
machine); ASE runs ``VelocityVerlet`` with ``NearsightCalculator`` on one thread.  Each case is its
own process, so its peak resident memory (the largest rank's, ru_maxrss of the children) is its
own.  Packages are compiled optimised once into ``--work`` (``nearsight export``).

    .venv/bin/python benchmarks/lammps_speed.py [--systems water] [--models bpnn equivariant]
        [--sizes 1536 12288] [--steps 10] [--chunk N] [--no-ase]

``equivariant`` is the small preset (two layers), ``equivariant1`` the same with one layer; ``--chunk N``
evaluates N owned atoms at a time (``pair_style nearsight chunk N``), which bounds the memory of
the ~100 000-atom equivariant runs.

Prints atom-steps per second per case and the ratio LAMMPS/ASE; writes
``benchmarks/results/lammps_speed.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))

from aoti_speed import build_model  # noqa: E402 - the same models as the compiled-vs-eager benchmark

SPECIES = {"water": [1, 8], "silicon": [14]}
ELEMENTS = {"water": "O H", "silicon": "Si"}
MASSES = {"water": "mass 1 15.999\nmass 2 1.008", "silicon": "mass 1 28.085"}


def structure(system: str, n_atoms: int):
    from ase.build import bulk

    if system == "water":
        from water_throughput import WATER

        from nearsight.data.readers import read_frames

        atoms = read_frames(WATER, index=0)[0].to_atoms()
        atoms.calc = None
        reps = {1536: 2, 12288: 4, 98304: 8}[n_atoms]
        return atoms * (reps, reps, reps)
    reps = {1536: (8, 6, 4), 12288: (16, 12, 8), 101376: (24, 24, 22)}[n_atoms]
    atoms = bulk("Si", "diamond", a=5.43, cubic=True) * reps
    atoms.rattle(0.03, seed=0)
    return atoms


def package_for(kind: str, system: str, work: Path) -> tuple[Path, Path]:
    from nearsight.models.aoti import export_package, read_metadata
    from nearsight.models.io import save_model

    model_path, package = work / f"{kind}_{system}.pt", work / f"{kind}_{system}_float32.pt2"
    model = build_model(kind, SPECIES[system]).float().eval()
    if not model_path.exists():
        save_model(model, model_path)
    try:
        read_metadata(package)  # a package of an older format is compiled again
    except (FileNotFoundError, ValueError):
        export_package(model, package, dtype="float32")
    return model_path, package


def lammps_case(system, n_atoms, package, ranks, steps, work: Path, chunk: int = 0) -> dict:
    from ase.io import write

    import lammps_helpers as lh

    case = work / (f"lmp_{package.stem}_{n_atoms}_{ranks}" + (f"_chunk{chunk}" if chunk else ""))
    case.mkdir(parents=True, exist_ok=True)
    atoms = structure(system, n_atoms)
    specorder = ["O", "H"] if system == "water" else ["Si"]
    write(case / "system.data", atoms, format="lammps-data", specorder=specorder)
    script = f"""
units metal
atom_style atomic
boundary p p p
read_data system.data
{MASSES[system]}
plugin load {lh.PLUGIN}
pair_style nearsight {f"chunk {chunk}" if chunk else ""}
pair_coeff * * {package} {ELEMENTS[system]}
neighbor 1.0 bin
velocity all create 300 12345 loop geom
timestep 0.0005
fix nve all nve
thermo {steps}
run {steps}
"""
    (case / "in.lammps").write_text(script)
    cmd = [str(lh.lmp_binary()), "-in", "in.lammps", "-log", "log.lammps", "-nocite"]
    if ranks > 1:
        cmd = [str(lh.mpirun_binary()), "-np", str(ranks), *cmd]
    # a fresh Python parent per run, so that ru_maxrss of its children is this run's largest rank
    wrapper = (
        "import resource, subprocess, sys; p = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
        "sys.stdout.write(p.stdout); sys.stderr.write(p.stderr); "
        "print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(p.returncode)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", wrapper, *cmd], cwd=case, env=lh.lammps_env(), capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise RuntimeError(f"LAMMPS failed in {case}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    line = next(x for x in proc.stdout.splitlines() if x.startswith("Loop time of"))
    seconds = float(line.split()[3])
    peak_kb = int(next(x for x in proc.stdout.splitlines() if x.startswith("PEAK_RSS_KB")).split()[1])
    return {"seconds": seconds, "atom_steps_per_s": steps * n_atoms / seconds, "peak_rss_MB": peak_kb / 1024}


def ase_case(system: str, n_atoms: int, model_path: Path, steps: int) -> dict:
    """In a child process: NVE with the ASE calculator; prints a JSON line."""
    code = f"""
import json, resource, sys, time
sys.path.insert(0, {str(ROOT / "benchmarks")!r}); sys.path.insert(0, {str(ROOT / "tests")!r})
import torch
torch.set_num_threads(1)
from ase import units
from ase.md.verlet import VelocityVerlet
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
from lammps_speed import structure
from nearsight.calculator import NearsightCalculator
atoms = structure({system!r}, {n_atoms})
atoms.calc = NearsightCalculator({str(model_path)!r}, dtype="float32", on_extrapolation="ignore")
MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=__import__("numpy").random.default_rng(0))
md = VelocityVerlet(atoms, 0.5 * units.fs)
md.run(1)
t = time.perf_counter(); md.run({steps}); seconds = time.perf_counter() - t
print(json.dumps({{"seconds": seconds, "peak_rss_MB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    row = json.loads(out.stdout.strip().splitlines()[-1])
    row["atom_steps_per_s"] = steps * n_atoms / row["seconds"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--systems", nargs="+", default=["water", "silicon"])
    parser.add_argument(
        "--models",
        nargs="+",
        default=["bpnn", "equivariant"],
        choices=["bpnn", "equivariant", "equivariant1"],
    )
    parser.add_argument("--sizes", nargs="+", type=int, default=[1536, 12288])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--ranks", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--no-ase", action="store_true", help="LAMMPS only (the largest systems)")
    parser.add_argument(
        "--chunk",
        type=int,
        default=0,
        help="pair_style nearsight chunk N: owned atoms per evaluation (0: all)",
    )
    parser.add_argument("--work", default=str(ROOT / "runs" / "lammps_speed"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "lammps_speed.json"))
    args = parser.parse_args()
    import lammps_helpers as lh

    subprocess.run(["bash", str(lh.BUILD_SCRIPT)], check=True, capture_output=True)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    out = Path(args.out)
    rows = json.loads(out.read_text()) if out.exists() else []
    for system in args.systems:
        for kind in args.models:
            model_path, package = package_for(kind, system, work)
            for n_atoms in args.sizes:
                if system == "water" and n_atoms == 101376:
                    n_atoms = 98304
                if system == "silicon" and n_atoms == 98304:
                    n_atoms = 101376
                steps = max(1, args.steps if n_atoms < 50000 else args.steps // 5)
                ase = None if args.no_ase else ase_case(system, n_atoms, model_path, steps)
                for ranks in args.ranks:
                    lmp = lammps_case(system, n_atoms, package, ranks, steps, work, args.chunk)
                    row = {
                        "system": system,
                        "model": kind,
                        "atoms": n_atoms,
                        "ranks": ranks,
                        "chunk": args.chunk or None,
                        "steps": steps,
                        "lammps_atom_steps_per_s": round(lmp["atom_steps_per_s"]),
                        "lammps_peak_rss_MB": round(lmp["peak_rss_MB"]),
                        "ase_atom_steps_per_s": None if ase is None else round(ase["atom_steps_per_s"]),
                        "ase_peak_rss_MB": None if ase is None else round(ase["peak_rss_MB"]),
                        "lammps_over_ase": None
                        if ase is None
                        else round(lmp["atom_steps_per_s"] / ase["atom_steps_per_s"], 2),
                        "when": time.strftime("%Y-%m-%d"),
                    }
                    print(json.dumps(row), flush=True)
                    rows = [
                        r
                        for r in rows
                        if (r["system"], r["model"], r["atoms"], r["ranks"], r.get("chunk"))
                        != (system, kind, n_atoms, ranks, row["chunk"])
                    ]
                    rows.append(row)
                    out.parent.mkdir(parents=True, exist_ok=True)
                    out.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
