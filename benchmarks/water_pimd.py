"""Liquid water at 300 K with a nearsight model: classical MD against path-integral MD (issue 21).

    OMP_NUM_THREADS=1 nearsight train benchmarks/configs/water_bpnn.yaml
    OMP_NUM_THREADS=1 python benchmarks/water_pimd.py --model runs/water_bpnn/best_model.pt \\
        --beads 1 8 16 32 --steps 1:4000 8:2000 16:2000 32:3000 --out runs/water_pimd [--jobs 2]

The structure is the last frame of ``../shared/data/water/data_3`` (64 H2O in a 12.445 Å box, a
liquid configuration of the model's validation data).  Every bead count P runs with i-PI in
process (:func:`nearsight.simulate.pimd.run_pimd`): PILE-L thermostat (centroid τ = 100 fs, the
internal modes critically damped), 0.5 fs steps, the model in float32.  P = 1 is classical MD with
the same integrator and thermostat.  Runs resume where they stopped (``RESTART``); a finished
bead count is only analysed.

Reported per P, after discarding the first 20 % of each run:
- the centroid-virial kinetic energy per H and per O atom (meV, block-average error), beside the
  classical 3/2 k_B T = 38.78 meV at 300 K;
- the O–H, H–H and O–O radial distribution functions averaged over beads (the quantum g(r)), their
  intramolecular O–H peak (position, height, width) and first intermolecular peaks;
- the share of H and O atoms (of 64 frames over the run, all beads) with a descriptor component
  outside the model's training range: the model was trained on classical configurations, and the
  beads of a quantum H reach further;
- the cost per step (CPU seconds, one thread).
Bead convergence: K_H(P) against P, and K_∞ from K(P) = K_∞ − a/P² through the two largest P.
Published PIMD of water models gives K_H ≈ 140–145 meV at 300 K (e.g. q-TIP4P/F: Ramírez & Herrero,
arXiv:1108.2145; deep inelastic neutron scattering gives values in the same range); the model here is trained on the data set's DFT, so its K_H is its own.

Writes ``OUT/water_pimd.json`` and ``OUT/water_pimd.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
WATER = ROOT.parent / "shared" / "data" / "water" / "data_3"
KB_EV = 8.617333262e-5
PAIRS = (("O", "H"), ("H", "H"), ("O", "O"))


def initial_structure():
    from nearsight.data.readers import read_frames

    atoms = read_frames(WATER)[-1].to_atoms()
    atoms.calc = None
    return atoms


def run_one(model: str, beads: int, steps: int, out: Path, temperature: float, timestep: float) -> dict:
    """One bead count: run (or resume) i-PI, then the estimators; returns the summary row."""
    import torch

    from nearsight.simulate.pimd import read_pimd, run_pimd

    torch.set_num_threads(1)
    directory = out / f"beads_{beads}"
    resume = (directory / "RESTART").is_file()
    start = time.process_time()
    result = run_pimd(
        initial_structure(), model, n_beads=beads, temperature_K=temperature, steps=steps,
        timestep_fs=timestep, output_dir=directory, thermostat="pile_l", tau_fs=100.0,
        trajectory="beads", trajectory_stride=20, checkpoint_stride=200, resume=resume,
        overwrite=not resume, dtype="float32", seed=beads,
    )  # fmt: skip
    cpu_per_step = (time.process_time() - start) / result.steps_run if result.steps_run else None
    return analyse(read_pimd(directory), beads, temperature, cpu_per_step, model)


def extrapolating(frames, model: str, n_sample: int = 64) -> dict:
    """Share of the atoms (of ``n_sample`` frames spread over the run) with a descriptor component
    outside the model's training range (± 5 %), per element: where the beads leave the classical
    training data."""
    from nearsight import NearsightCalculator

    calc = NearsightCalculator(model, dtype="float32", on_extrapolation="ignore")
    picked = frames[:: max(1, len(frames) // n_sample)]
    counts: dict[str, list[float]] = {}
    for atoms in picked:
        atoms = atoms.copy()
        atoms.calc = calc
        atoms.get_potential_energy()
        outside = np.asarray(calc.results["extrapolation"]) > 0
        for symbol in ("H", "O"):
            mask = np.asarray(atoms.get_chemical_symbols()) == symbol
            counts.setdefault(symbol, []).append(float(outside[mask].mean()))
    return {symbol: float(np.mean(v)) for symbol, v in counts.items()}


def analyse(result, beads: int, temperature: float, cpu_per_step: float | None, model: str) -> dict:
    from nearsight.simulate.rdf import radial_distribution

    kinetic = result.kinetic_energy_per_atom(discard=0.2)
    frames = result.trajectory(discard=0.2)
    rdf = {}
    for a, b in PAIRS:
        r, g = radial_distribution(frames, (a, b), r_max=6.0, bins=600)
        rdf[f"{a}-{b}"] = g.tolist()
    row = {
        "beads": beads,
        "steps": int(result.step.max()) if len(result.step) else 0,
        "K_H_meV": 1e3 * kinetic["H"][0],
        "K_H_err_meV": 1e3 * kinetic["H"][1],
        "K_O_meV": 1e3 * kinetic["O"][0],
        "K_O_err_meV": 1e3 * kinetic["O"][1],
        "T_K": result.estimate("temperature", 0.2)[0],
        "cpu_s_per_step": cpu_per_step,  # this call's steps (a resumed run: the last part)
        "frames_per_bead": len(frames) // beads,
        "extrapolating_atoms": extrapolating(frames, model),
        "r_A": r.tolist(),
        "rdf": rdf,
    }
    row.update(peaks(np.asarray(r), {k: np.asarray(v) for k, v in rdf.items()}))
    return row


def peaks(r: np.ndarray, rdf: dict[str, np.ndarray]) -> dict:
    """Intramolecular O–H peak (position, height, full width at half maximum) and the first
    intermolecular peaks of O–H (hydrogen bond), H–H and O–O."""
    oh = rdf["O-H"]
    intra = r < 1.3
    k = int(np.argmax(np.where(intra, oh, -1)))
    half = oh[k] / 2
    above = np.nonzero(intra & (oh >= half))[0]
    width = float(r[above[-1]] - r[above[0]]) if len(above) else float("nan")

    def first(name: str, lo: float, hi: float) -> tuple[float, float]:
        window = (r > lo) & (r < hi)
        j = int(np.argmax(np.where(window, rdf[name], -1)))
        return float(r[j]), float(rdf[name][j])

    return {
        "OH_intra_peak_A": float(r[k]), "OH_intra_height": float(oh[k]), "OH_intra_fwhm_A": width,
        "OH_hbond_peak": first("O-H", 1.4, 2.4), "HH_intra_peak": first("H-H", 1.3, 1.9),
        "OO_first_peak": first("O-O", 2.4, 3.3),
    }  # fmt: skip


def extrapolate(rows: list[dict]) -> dict | None:
    """K_∞ and a from K(P) = K_∞ − a/P² through the two largest bead counts (above 1)."""
    quantum = sorted((r for r in rows if r["beads"] > 1), key=lambda r: r["beads"])
    if len(quantum) < 2:
        return None
    (p1, k1), (p2, k2) = [(r["beads"], r["K_H_meV"]) for r in quantum[-2:]]
    a = (k2 - k1) / (1 / p1**2 - 1 / p2**2)
    return {"K_H_inf_meV": k2 + a / p2**2, "a_meV": a, "from_beads": [p1, p2]}


def plot(rows: list[dict], path: Path, temperature: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for row in rows:
        r = np.asarray(row["r_A"])
        label = "classical" if row["beads"] == 1 else f"PIMD P={row['beads']}"
        axes[0].plot(r, row["rdf"]["O-H"], label=label)
        axes[1].plot(r, row["rdf"]["H-H"], label=label)
    axes[0].set(xlabel="r (Å)", ylabel="g_OH(r)", ylim=(0, None))
    axes[1].set(xlabel="r (Å)", ylabel="g_HH(r)", ylim=(0, None))
    axes[0].legend(fontsize=8)
    p = np.array([row["beads"] for row in rows])
    k = np.array([row["K_H_meV"] for row in rows])
    e = np.array([row["K_H_err_meV"] for row in rows])
    axes[2].errorbar(p, k, yerr=e, marker="o")
    axes[2].axhline(1.5 * KB_EV * temperature * 1e3, color="grey", ls=":", label="classical 3/2 kT")
    axes[2].axhspan(140, 145, color="C2", alpha=0.2, label="PIMD of water models")
    axes[2].set(xscale="log", xlabel="beads P", ylabel="K_H (meV)")
    axes[2].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--beads", type=int, nargs="+", default=[1, 8, 16, 32])
    p.add_argument("--steps", nargs="+", default=["4000"], help="N (all) or P:N per bead count")
    p.add_argument("--temperature", type=float, default=300.0)
    p.add_argument("--timestep", type=float, default=0.5, help="fs")
    p.add_argument("--out", default="runs/water_pimd")
    p.add_argument("--jobs", type=int, default=1, help="bead counts run side by side (one thread each)")
    p.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    steps = {}
    for item in args.steps:
        if ":" in item:
            beads, n = item.split(":")
            steps[int(beads)] = int(n)
        else:
            steps.update({b: int(item) for b in args.beads})
    missing = [b for b in args.beads if b not in steps]
    if missing:
        p.error(f"--steps gives no step count for bead count(s) {missing}")
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if args.worker is not None:
        row = run_one(args.model, args.worker, steps[args.worker], out, args.temperature, args.timestep)
        path = out / f"beads_{args.worker}.json"
        if row["cpu_s_per_step"] is None and path.is_file():  # re-analysed only: keep the measured cost
            row["cpu_s_per_step"] = json.loads(path.read_text()).get("cpu_s_per_step")
        path.write_text(json.dumps(row))
        return 0
    # largest bead counts first, so that side-by-side jobs end at about the same time
    order = sorted(args.beads, key=lambda b: -b * steps[b])
    pending, running = list(order), []
    env = dict(os.environ, OMP_NUM_THREADS="1")
    while pending or running:
        while pending and len(running) < args.jobs:
            beads = pending.pop(0)
            cmd = [sys.executable, __file__, "--model", args.model, "--out", str(out), "--worker", str(beads),
                   "--temperature", str(args.temperature), "--timestep", str(args.timestep),
                   "--beads", *map(str, args.beads), "--steps", *args.steps]  # fmt: skip
            log = open(out / f"beads_{beads}.log", "a")
            running.append((beads, subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)))
            print(f"P={beads}: {steps[beads]} steps started (log {out / f'beads_{beads}.log'})", flush=True)
        time.sleep(2)
        for item in list(running):
            if item[1].poll() is not None:
                running.remove(item)
                if item[1].returncode:
                    raise SystemExit(f"P={item[0]} failed: see {out / f'beads_{item[0]}.log'}")
    rows = [json.loads((out / f"beads_{b}.json").read_text()) for b in sorted(args.beads)]
    kt = 1.5 * KB_EV * args.temperature * 1e3
    print(f"\nliquid water, 64 H2O, {args.temperature:g} K; classical 3/2 kT = {kt:.2f} meV")
    print("| P | steps | K_H (meV) | K_O (meV) | ⟨T⟩ (K) | O–H intra peak (Å) | height | FWHM (Å) | "
          "O···H peak (Å) | H–H intra (Å) | O–O peak (Å) | H, O extrapolating | CPU s/step |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        cost = row["cpu_s_per_step"]
        print(
            f"| {row['beads']} | {row['steps']} | {row['K_H_meV']:.1f} ± {row['K_H_err_meV']:.1f} | "
            f"{row['K_O_meV']:.1f} ± {row['K_O_err_meV']:.1f} | {row['T_K']:.1f} | {row['OH_intra_peak_A']:.3f} | "
            f"{row['OH_intra_height']:.1f} | {row['OH_intra_fwhm_A']:.3f} | {row['OH_hbond_peak'][0]:.2f} | "
            f"{row['HH_intra_peak'][0]:.2f} | {row['OO_first_peak'][0]:.2f} | "
            f"{row['extrapolating_atoms']['H']:.1%}, {row['extrapolating_atoms']['O']:.1%} | "
            + (f"{cost:.2f} |" if cost else "- |")
        )
    fit = extrapolate(rows)
    if fit:
        print(f"K_H(P) = K_∞ − a/P² through P = {fit['from_beads']}: K_∞ = {fit['K_H_inf_meV']:.1f} meV "
              f"(a = {fit['a_meV']:.0f} meV)")  # fmt: skip
    summary = {"temperature_K": args.temperature, "timestep_fs": args.timestep, "model": args.model,
               "classical_K_meV": kt, "rows": rows, "extrapolation": fit}  # fmt: skip
    (out / "water_pimd.json").write_text(json.dumps(summary, indent=1))
    plot(rows, out / "water_pimd.png", args.temperature)
    print(f"wrote {out / 'water_pimd.json'} and {out / 'water_pimd.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
