"""Nearsightedness in a hydrogen chain: gapped (dimerised) against metallic (equally spaced), and the
recovery of exponential decay with electronic temperature.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/hydrogen_chain_locality.py [--atoms 80]

Two chains of 80 H atoms, LDA (Slater + VWN) in the minimal STO-3G basis (one 1s orbital per atom,
so an atom block of the density matrix is one number): equally spaced at 1.0 Å (half-filled band:
a 1D metal) and dimerised 0.74/1.26 Å (the bonding band is full: a gap of ~7 eV).  For each,
D(r) = max |ρ_μν| of the Löwdin-orthogonalised one-spin density matrix between the atom at the
middle of the chain and every other atom (:mod:`nearsight.locality.density_matrix`), at electronic
temperatures of 0, 3000, 10000 and 30000 K (Fermi-Dirac smearing), with exponential and power-law
fits of its tail envelope between 3 and 25 Å.

Why finite chains and not a periodic cell with k-points (which :func:`density_matrix_decay` also
does): a finite chain measured from its middle needs only molecular DFT (seconds per SCF), has no
vacuum grid, and reaches 40 Å; the periodic cell is exact for the infinite chain but an unsmeared
metal on a k-mesh is a ring of the same length with the same finite-size gap.  That gap,
~πħv_F/L (0.55 eV at 80 atoms), is the one caveat: at zero temperature the "metal" decays as a
power law only out to about ħv_F/gap, which the fits below show.

Writes benchmarks/results/hydrogen_chain_locality.json and docs/images/hydrogen_chain_locality.png.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from ase import Atoms

from nearsight._files import atomic_write
from nearsight.locality import density_matrix_decay, write_json

ROOT = Path(__file__).resolve().parents[1]
TEMPERATURES_K = (0.0, 3000.0, 10000.0, 30000.0)
CHAINS = {"equally spaced 1.00 Å (metal)": (1.0, 1.0), "dimerised 0.74/1.26 Å (gapped)": (0.74, 1.26)}


def chain(n: int, short: float, long: float) -> Atoms:
    """``n`` H atoms on the x axis, bonds alternating ``short``, ``long`` (Å)."""
    x = np.concatenate([[0.0], np.cumsum([short if k % 2 == 0 else long for k in range(n - 1)])])
    return Atoms(f"H{n}", positions=np.c_[x, np.zeros(n), np.zeros(n)])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--atoms", type=int, default=80, help="chain length (even; default 80)")
    p.add_argument("--window", type=float, nargs=2, default=(3.0, 25.0), help="fit window, Å")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "hydrogen_chain_locality.json"))
    p.add_argument("--plot", default=str(ROOT / "docs" / "images" / "hydrogen_chain_locality.png"))
    args = p.parse_args()
    n = args.atoms
    centre = n // 2 - 1  # the right atom of a short bond in the dimerised chain
    results: dict[str, list] = {}
    start = time.perf_counter()
    print(f"{'chain':<32} {'T_e (K)':>8} {'gap eV':>7} {'xi (A)':>7} {'p':>5} {'better':>12} {'D(10 A)':>9}")
    for name, (short, long) in CHAINS.items():
        results[name] = []
        for t in TEMPERATURES_K:
            d = density_matrix_decay(
                chain(n, short, long), method="dft", xc="lda,vwn", basis="sto-3g", electronic_temperature_K=t,
                centres=[centre], fit_window=tuple(args.window), max_cycle=300,
            )  # fmt: skip
            fit = d.fit
            near10 = d.values[(d.distances > 9.0) & (d.distances < 11.5)].max()
            print(f"{name:<32} {t:8.0f} {d.gap_eV:7.2f} {fit.decay_length:7.2f} {fit.exponent:5.2f} "
                  f"{fit.better:>12} {near10:9.2e}", flush=True)  # fmt: skip
            results[name].append(d)
    wall = time.perf_counter() - start
    summary = {
        "system": f"H{n} chains, LDA (Slater+VWN)/STO-3G, centre atom {centre}",
        "definition": "D(r) = max |rho_mn| over the atom-pair block, rho = S^1/2 P S^1/2 / 2 (Lowdin, one spin)",
        "fit_window_A": list(args.window),
        "wall_s": wall,
        "chains": {
            name: [
                {k: v for k, v in d.to_dict().items() if k != "pairs"}
                | {"distances_A": d.distances.tolist(), "values": d.values.tolist()}
                for d in runs
            ]
            for name, runs in results.items()
        },
    }
    write_json(args.out, summary)
    _plot(args.plot, results)
    print(f"{wall:.0f} s")
    print(args.out)


def _plot(path: str, results: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6), sharey=True)
    for ax, (name, runs) in zip(axes, results.items()):
        for k, d in enumerate(runs):
            color = f"C{k}"
            order = np.argsort(d.distances)
            r, v = d.distances[order], d.values[order]
            ax.semilogy(r, np.maximum(v, 1e-12), ".", ms=3, color=color, alpha=0.5)
            fit = d.fit
            x = np.linspace(*fit.window, 50)
            label = f"T_e = {d.electronic_temperature_K:g} K: "
            label += (
                f"ξ = {fit.decay_length:.2f} Å" if fit.better == "exponential" else f"r^-{fit.exponent:.2f}"
            )
            line = fit.exponential(x) if fit.better == "exponential" else fit.power_law(x)
            ax.semilogy(x, line, "-", color=color, lw=1.2, label=label + f" (gap {d.gap_eV:.2f} eV)")
        ax.set_title(name)
        ax.set_xlabel("distance from the middle atom (Å)")
        ax.set_ylim(1e-10, 1)
        ax.legend(fontsize=7, title="better fit, 3-25 Å", title_fontsize=7)
    axes[0].set_ylabel("max |ρ_μν| (Löwdin, one spin)")
    fig.tight_layout()
    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=120), mode="wb")
    plt.close(fig)


if __name__ == "__main__":
    main()
