"""The free-energy profile of ethanol's H-O-C-C torsion with a trained model: umbrella sampling +
MBAR against the histogram of long unbiased MD with the same model, temperature and thermostat.

    nearsight train examples/ethanol_bpnn.yaml                 # or any ethanol model
    M=runs/ethanol_bpnn/best_model.pt
    python benchmarks/ethanol_torsion.py $M --part umbrella --split 0 2 --window-steps 12000 &
    python benchmarks/ethanol_torsion.py $M --part umbrella --split 1 2 --window-steps 12000; wait
    python benchmarks/ethanol_torsion.py $M --part md --md-ps 100
    python benchmarks/ethanol_torsion.py $M --part analyse

Both at 300 K with Langevin dynamics (0.5 fs, friction 0.01/fs), the dihedral φ of atoms
H8-O2-C0-C1 of the bundled frame 0. Umbrella: 24 windows every 15°, k = 1 eV/rad² (run as N
processes side by side with --split), MBAR over 36 bins (10°). Unbiased: F(φ) = −k_B T ln p(φ) on the same bins, errors from block averages (5 blocks).
Compared: the profile where both are sampled (both zero at their common minimum), the gauche and
trans basin free energies, and the barriers. Writes benchmarks/results/ethanol_torsion.json and a
plot.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from ase import units
from ase.io import read
from ase.md.langevin import Langevin

from nearsight import NearsightCalculator
from nearsight.sampling import Dihedral, load_windows, mbar_profile, run_umbrella

ROOT = Path(__file__).resolve().parents[1]
ATOMS = (8, 2, 0, 1)  # H-O-C-C


def unbiased(model: str, ps: float, seed: int, bins: np.ndarray, temperature_K: float) -> dict:
    atoms = read(ROOT / "examples" / "data" / "ethanol_test200.xyz", 0)
    atoms.calc = NearsightCalculator(model)
    phi = Dihedral(*ATOMS)
    rng = np.random.default_rng(seed)
    # fixcm=False: ASE's fixcm=True Langevin does not sample NVT for small systems (it warns; on a
    # 4-atom torsion it flattened the barrier by 20 %); the umbrella windows use fixcm=False too
    dyn = Langevin(
        atoms, 0.5 * units.fs, temperature_K=temperature_K, friction=0.01 / units.fs, fixcm=False, rng=rng
    )
    samples = []
    dyn.attach(lambda: samples.append(float(phi(atoms))), interval=4)
    dyn.run(int(ps * 2000))
    s = np.array(samples[len(samples) // 20 :])  # 5 % equilibration
    kT = units.kB * temperature_K
    blocks = np.array_split(s, 5)
    hist = np.array([np.histogram(b, bins=bins)[0] for b in blocks], dtype=float)
    p = hist.sum(0) / hist.sum() / np.diff(bins)
    with np.errstate(divide="ignore"):
        f = -kT * np.log(p)
        fb = -kT * np.log(hist / hist.sum(1, keepdims=True) / np.diff(bins))
    err = np.nanstd(np.where(np.isfinite(fb), fb, np.nan), axis=0) / np.sqrt(len(blocks))
    return {"free_energy": f, "uncertainty": err, "samples": len(s)}


def basins(centres: np.ndarray, f: np.ndarray, kT: float) -> dict[str, float]:
    """Free energies (eV) of the trans (|φ| > 120°) and gauche (|φ| < 120°) basins."""

    def region(mask):
        ok = mask & np.isfinite(f)
        x = -f[ok] / kT
        return float(-kT * (x.max() + np.log(np.exp(x - x.max()).sum())))

    return {
        "trans": region(np.abs(centres) > 2 * np.pi / 3),
        "gauche": region(np.abs(centres) <= 2 * np.pi / 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model")
    parser.add_argument("--md-ps", type=float, default=200.0)
    parser.add_argument("--window-steps", type=int, default=4000)
    parser.add_argument("--temperature-K", type=float, default=300.0)
    parser.add_argument("--work", default="runs/ethanol_torsion_benchmark")
    parser.add_argument("--json", default="benchmarks/results/ethanol_torsion.json")
    parser.add_argument("--plot", default="docs/images/ethanol_torsion.png")
    parser.add_argument("--part", choices=["both", "umbrella", "md", "analyse"], default="both")
    parser.add_argument(
        "--split",
        type=int,
        nargs=2,
        default=(0, 1),
        metavar=("K", "N"),
        help="run every N-th window starting at K (N processes side by side; then --part analyse)",
    )
    args = parser.parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    T = args.temperature_K
    kT = units.kB * T
    bins = np.linspace(-np.pi, np.pi, 37)
    centres = 0.5 * (bins[1:] + bins[:-1])

    start = time.perf_counter()
    k, n_split = args.split
    if args.part in ("both", "umbrella"):
        atoms = read(ROOT / "examples" / "data" / "ethanol_test200.xyz", 0)
        out = work / f"umbrella_{k}of{n_split}"
        run_umbrella(
            atoms, NearsightCalculator(args.model), Dihedral(*ATOMS),
            np.linspace(-np.pi, np.pi, 24, endpoint=False)[k::n_split], 1.0, steps=args.window_steps,
            equilibration_steps=400, timestep_fs=0.5, temperature_K=T, friction_per_fs=0.01, seed=17 * k,
            output_dir=out, resume=out.exists(),
        )  # fmt: skip
        print(
            f"umbrella windows {k}::{n_split} x {args.window_steps} steps ({time.perf_counter() - start:.0f} s)"
        )
    if args.part in ("both", "md"):
        md = unbiased(args.model, args.md_ps, 1, bins, T)
        np.savez(work / "md_profile.npz", f=md["free_energy"], err=md["uncertainty"], samples=md["samples"])
        print(f"unbiased MD: {args.md_ps} ps, {md['samples']} samples ({time.perf_counter() - start:.0f} s)")
    if args.part in ("both", "analyse"):
        windows = [w for d in sorted(work.glob("umbrella_*of*")) for w in load_windows(d)]
        profile = mbar_profile(windows, T, bins=bins)
        np.savez(work / "umbrella_profile.npz", f=profile.free_energy, err=profile.uncertainty)
        print(f"MBAR over {len(windows)} windows")
    if args.part in ("umbrella", "md") or not (work / "md_profile.npz").exists():
        return 0
    u = np.load(work / "umbrella_profile.npz")
    m = np.load(work / "md_profile.npz")
    fu, eu, fm, em = u["f"], u["err"], m["f"], m["err"]
    both = np.isfinite(fu) & np.isfinite(fm)
    ref = both & (fm - np.nanmin(fm[both]) < 3 * kT)  # compare where MD samples well (within 3 kT)
    k0 = np.flatnonzero(both)[np.argmin(fm[both])]
    fu, fm = fu - fu[k0], fm - fm[k0]
    diff = (fu - fm)[ref]
    bu, bm = basins(centres, fu, kT), basins(centres, fm, kT)
    result = {
        "model": args.model,
        "temperature_K": T,
        "bin_centres_deg": np.degrees(centres).round(1).tolist(),
        "umbrella_kT": [None if not np.isfinite(v) else round(v / kT, 3) for v in fu],
        "umbrella_err_kT": [None if not np.isfinite(v) else round(v / kT, 3) for v in eu],
        "md_kT": [None if not np.isfinite(v) else round(v / kT, 3) for v in fm],
        "md_err_kT": [None if not np.isfinite(v) else round(v / kT, 3) for v in em],
        "rms_difference_kT": float(np.sqrt(np.mean(diff**2)) / kT),
        "max_difference_kT": float(np.abs(diff).max() / kT),
        "bins_compared": int(ref.sum()),
        "gauche_minus_trans_kT": {"umbrella": (bu["gauche"] - bu["trans"]) / kT, "md": (bm["gauche"] - bm["trans"]) / kT},
        "barrier_kT": {"umbrella": float(np.nanmax(fu) / kT), "md_sampled_max": float(np.nanmax(fm[ref]) / kT)},
        "md_ps": args.md_ps,
        "window_steps": args.window_steps,
    }  # fmt: skip
    print(json.dumps({k: v for k, v in result.items() if not isinstance(v, list)}, indent=1))
    Path(args.json).write_text(json.dumps(result, indent=1))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.5))
    deg = np.degrees(centres)
    ax.errorbar(deg, fu / kT, yerr=eu / kT, fmt="o-", ms=3, label="umbrella + MBAR (24 windows)")
    ax.errorbar(deg, fm / kT, yerr=em / kT, fmt="s--", ms=3, label=f"unbiased MD ({args.md_ps:g} ps)")
    ax.set_xlabel("H-O-C-C dihedral (°)")
    ax.set_ylabel("F / k_BT")
    ax.set_title(f"ethanol, {T:g} K")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.plot, dpi=110)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
