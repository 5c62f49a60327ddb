"""1000-atom silicon NVT with a trained model: stability at 300 K and 1200 K, and g(r) beside the DFT data's.

    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python benchmarks/si_md_rdf.py MODEL.pt \\
        [--temperatures 300 1200] [--ps 10] [--timestep-fs 2] [--cells 5] [--jobs 2] [--out runs/si_md]

The crystal is diamond silicon, ``--cells``³ conventional cells (5: 1000 atoms) at the lattice constant
of the DFT ground-state cell in ``training.json`` (mlearn, PBE).  Each temperature runs Langevin
NVT (friction 0.01/fs, float32 model, Maxwell-Boltzmann start) for ``--ps``; the second half is
sampled every ``--sample-every`` steps for g(r).

*Stable* means: every step ran (no non-finite output, no atoms closer than the calculator's
``min_distance``), the closest Si-Si distance sampled stays above ``--min-bond`` (1.9 Å; the bond is
2.37 Å), the mean temperature of the second half is within 5 % of the target, and no sampled frame
has an atom with fewer than 3 or more than 5 neighbours within 2.75 Å at 300 K (the crystal stays
a crystal; at 1200 K defects are allowed and counted).

g(r) of the model's MD at each temperature is printed and plotted beside g(r) of the training
data's AIMD snapshots (64-atom cells, NVT at 300, 843, 1518, 2530 and 3374 K): at 300 K the two
compare directly; 1200 K lies between the 843 K and 1518 K snapshots, and the height of the first
peak must fall between theirs (it decreases monotonically with temperature in the crystal).
Writes ``OUT/si_md.json`` (numbers) and ``OUT/si_md_rdf.png``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BOND_CUTOFF = 2.75  # Å: between the first (2.37 Å) and second (3.87 Å) neighbour shells
R_MAX, BINS = 6.0, 120


def training_snapshots(path: Path) -> tuple[float, dict[float, list]]:
    """Lattice constant of the DFT ground state, and the AIMD snapshots grouped by temperature (K)."""
    from ase import Atoms

    records = json.loads(path.read_text())
    by_t: dict[float, list] = {}
    a0 = None
    for rec in records:
        s = rec["structure"]
        lattice = np.asarray(s["lattice"]["matrix"], dtype=float)
        atoms = Atoms(
            [site["species"][0]["element"] for site in s["sites"]],
            positions=[site["xyz"] for site in s["sites"]],
            cell=lattice,
            pbc=True,
        )
        desc = rec.get("description", "")
        if desc.startswith("Ground state crystal"):
            a0 = float(np.cbrt(atoms.get_volume() / len(atoms) * 8))  # 8 atoms per conventional cell
        m = re.search(r"AIMD NVT .* at (\d+) K", desc)
        if rec.get("group") == "AIMD-NVT" and m:
            by_t.setdefault(float(m.group(1)), []).append(atoms)
    if a0 is None:
        raise SystemExit(f"{path}: no 'Ground state crystal' record for the lattice constant")
    return a0, by_t


def bonds(atoms) -> tuple[np.ndarray, float]:
    """Neighbours of each atom within ``BOND_CUTOFF``, and the closest distance (inf: none)."""
    from vesin import NeighborList

    i, d = NeighborList(cutoff=BOND_CUTOFF, full_list=True).compute(
        points=atoms.positions, box=atoms.cell.array, periodic=True, quantities="id"
    )
    return np.bincount(i, minlength=len(atoms)), float(d.min()) if d.size else float("inf")


def coordination(atoms) -> np.ndarray:
    return bonds(atoms)[0]


def first_peak(r: np.ndarray, g: np.ndarray) -> tuple[float, float]:
    k = int(np.argmax(np.where(r < BOND_CUTOFF, g, -np.inf)))
    return float(r[k]), float(g[k])


def run_temperature(crystal, calc, temperature: float, args) -> dict:
    """Langevin NVT at one temperature; samples of the second half for g(r) and the checks."""
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary
    from ase.units import fs

    from nearsight.simulate.rdf import radial_distribution

    atoms = crystal.copy()
    atoms.calc = calc
    MaxwellBoltzmannDistribution(atoms, temperature_K=temperature, rng=np.random.default_rng(args.seed))
    Stationary(atoms)
    dyn = Langevin(atoms, args.timestep_fs * fs, temperature_K=temperature, friction=0.01 / fs,
                   rng=np.random.default_rng(args.seed + 1))  # fmt: skip
    steps = int(round(1000 * args.ps / args.timestep_fs))
    half = steps // 2
    temps, samples, energies = [], [], []

    def observe():
        step = dyn.nsteps
        t = atoms.get_temperature()
        energies.append(atoms.get_potential_energy() / len(atoms))
        if not np.isfinite(energies[-1]):
            raise RuntimeError(f"{temperature:g} K: non-finite energy at step {step}")
        if step >= half:
            temps.append(t)
            if (step - half) % args.sample_every == 0:
                samples.append(atoms.copy())
        if step % max(1, steps // 10) == 0:
            print(f"  {temperature:g} K: step {step}/{steps}, T = {t:.0f} K, "
                  f"E_pot = {energies[-1]:.4f} eV/atom", flush=True)  # fmt: skip

    dyn.attach(observe, interval=1)
    t0, c0 = time.perf_counter(), time.process_time()
    dyn.run(steps)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    for s in samples:
        s.calc = None
    r, g = radial_distribution(samples, pair=("Si", "Si"), r_max=R_MAX, bins=BINS)
    counts, closest = zip(*(bonds(s) for s in samples))  # one neighbour list per sample
    coord, min_d = np.stack(counts), min(closest)
    return {
        "temperature_K": temperature, "steps": steps, "timestep_fs": args.timestep_fs, "ps": args.ps,
        "mean_T_second_half_K": float(np.mean(temps)), "std_T_second_half_K": float(np.std(temps)),
        "mean_potential_energy_eV_per_atom_second_half": float(np.mean(energies[half:])),
        "min_distance_A": min_d, "samples": len(samples),
        "fraction_atoms_not_4_coordinated": float(np.mean(coord != 4)),
        "atoms_outside_3_to_5_coordination": int(np.count_nonzero((coord < 3) | (coord > 5))),
        "wall_s": wall, "cpu_s": cpu, "ms_per_step": 1e3 * wall / steps,
        "r_A": r.tolist(), "g": g.tolist(), "first_peak": first_peak(r, g),
    }  # fmt: skip


def _run_one(job) -> dict:
    import torch

    from nearsight import NearsightCalculator

    crystal, temperature, args = job
    torch.set_num_threads(1)
    return run_temperature(crystal, NearsightCalculator(args.model, dtype=args.dtype), temperature, args)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model")
    p.add_argument("--temperatures", type=float, nargs="+", default=[300.0, 1200.0])
    p.add_argument("--ps", type=float, default=10.0)
    p.add_argument("--timestep-fs", type=float, default=2.0)
    p.add_argument("--cells", type=int, default=5, help="conventional cells per side (5: 1000 atoms)")
    p.add_argument("--sample-every", type=int, default=50, help="steps between g(r) samples")
    p.add_argument("--min-bond", type=float, default=1.9, help="Å: closer Si-Si pairs fail the run")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=1, help="temperatures run side by side (processes)")
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "si" / "training.json"))
    p.add_argument("--out", default="runs/si_md")
    args = p.parse_args(argv)

    import torch
    from ase.build import bulk

    from nearsight import NearsightCalculator
    from nearsight.simulate.rdf import radial_distribution
    from nearsight.training.metrics import write_json

    print(f"torch threads: {torch.get_num_threads()}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    a0, aimd = training_snapshots(Path(args.data))
    crystal = bulk("Si", "diamond", a=a0, cubic=True).repeat(args.cells)
    print(f"{len(crystal)} atoms, a = {a0:.4f} Å (DFT ground state of {Path(args.data).name}); "
          f"{args.ps:g} ps at {args.timestep_fs:g} fs per temperature", flush=True)  # fmt: skip
    reference = {}
    for t, frames in sorted(aimd.items()):
        r, g = radial_distribution(frames, pair=("Si", "Si"), r_max=R_MAX, bins=BINS)
        reference[t] = {"frames": len(frames), "g": g.tolist(), "first_peak": first_peak(r, g)}
    if args.jobs > 1:  # one process per temperature, one thread each
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(args.jobs, mp_context=mp.get_context("fork")) as pool:
            runs = list(pool.map(_run_one, [(crystal, t, args) for t in args.temperatures]))
    else:
        calc = NearsightCalculator(args.model, dtype=args.dtype)
        runs = [run_temperature(crystal, calc, t, args) for t in args.temperatures]

    print(
        f"\n{'source':>18} {'T (K)':>7} {'peak r (Å)':>10} {'peak g':>7} {'min d (Å)':>9} {'not 4-coord':>11}"
    )
    for t, ref in reference.items():
        print(f"{'DFT AIMD (64 at.)':>18} {t:7.0f} {ref['first_peak'][0]:10.3f} {ref['first_peak'][1]:7.2f}")
    stable, verdicts = True, []
    for run in runs:
        t = run["temperature_K"]
        print(f"{'model MD':>18} {t:7.0f} {run['first_peak'][0]:10.3f} {run['first_peak'][1]:7.2f} "
              f"{run['min_distance_A']:9.3f} {run['fraction_atoms_not_4_coordinated']:11.4f}   "
              f"<T> = {run['mean_T_second_half_K']:.0f} K, {run['ms_per_step']:.0f} ms/step")  # fmt: skip
        ok = run["min_distance_A"] > args.min_bond and abs(run["mean_T_second_half_K"] / t - 1) < 0.05
        if t <= 300:
            ok &= run["atoms_outside_3_to_5_coordination"] == 0
        temps = sorted(reference)
        below = [x for x in temps if x <= t]
        above = [x for x in temps if x >= t]
        if below and above and below[-1] == above[0]:  # a training temperature: compare directly
            h_ref = reference[t]["first_peak"][1]
            run["peak_ratio_vs_dft"] = run["first_peak"][1] / h_ref
            diff = np.asarray(run["g"]) - np.asarray(reference[t]["g"])
            run["rms_g_difference_vs_nearest"] = {"T_K": t, "rms": float(np.sqrt(np.mean(diff**2)))}
            verdicts.append(f"{t:g} K: first-peak height {run['first_peak'][1]:.2f} against DFT's "
                            f"{h_ref:.2f} at the same temperature (ratio {run['peak_ratio_vs_dft']:.3f}); "
                            f"RMS Δg {run['rms_g_difference_vs_nearest']['rms']:.3f}")  # fmt: skip
        elif below and above:
            lo, hi = reference[above[0]]["first_peak"][1], reference[below[-1]]["first_peak"][1]
            run["peak_between_training_temperatures"] = [below[-1], above[0]]
            run["peak_within_bracket"] = bool(lo <= run["first_peak"][1] <= hi)
            nearest = min(temps, key=lambda x: abs(x - t))
            diff = np.asarray(run["g"]) - np.asarray(reference[nearest]["g"])
            run["rms_g_difference_vs_nearest"] = {"T_K": nearest, "rms": float(np.sqrt(np.mean(diff**2)))}
            verdicts.append(f"{t:g} K: first-peak height {run['first_peak'][1]:.2f} "
                            f"{'within' if run['peak_within_bracket'] else 'OUTSIDE'} DFT's "
                            f"[{lo:.2f} ({above[0]:g} K), {hi:.2f} ({below[-1]:g} K)]; RMS Δg vs "
                            f"{nearest:g} K DFT: {run['rms_g_difference_vs_nearest']['rms']:.3f}")  # fmt: skip
        run["stable"] = bool(ok)
        stable &= ok
    print("\n".join(verdicts))
    print(f"stable at {', '.join(f'{t:g}' for t in args.temperatures)} K: {stable}")
    write_json({"model": args.model, "n_atoms": len(crystal), "lattice_constant_A": a0, "stable": stable,
                "runs": runs, "training_aimd": {str(k): v for k, v in reference.items()},
                "r_A": runs[0]["r_A"] if runs else None}, out / "si_md.json")  # fmt: skip
    plot(runs, reference, out / "si_md_rdf.png")
    return 0 if stable else 1


def plot(runs: list[dict], reference: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    r = np.asarray(runs[0]["r_A"])
    for t, ref in reference.items():
        ax.plot(r, ref["g"], lw=1, ls="--", label=f"DFT AIMD {t:g} K")
    for run in runs:
        ax.plot(r, run["g"], lw=2, label=f"model NVT {run['temperature_K']:g} K (1000 atoms)")
    ax.set(xlabel="r (Å)", ylabel="g(r)", xlim=(1.8, R_MAX), title="Silicon g(r): model MD vs training data")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "src"))
    sys.exit(main())
