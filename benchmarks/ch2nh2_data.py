"""CH2NH2+ (methaniminium) labelled with SA2-CASSCF(2,2)/6-31G: two singlet states, their
forces and the coupling h_01, for diabatic multi-state models (issue 18).

Geometries (all with the nominal sampling coordinates in ``atoms.info``): C–N bond along x,
``torsion_deg`` rotates the NH2 group about it (0 and 180: planar), ``pyramidalization_c_deg``
/ ``pyramidalization_n_deg`` tilt the CH2 / NH2 group out of its plane (a wag of the
H–X–H bisector, 0: planar), ``r_cn`` is the C–N distance (1.25-1.55 Å), and Gaussian noise of
``perturbation_A`` (Å) moves every Cartesian coordinate.  ``region`` is one of

* ``torsion_scan``: torsion 0-180° on a grid with random stretch, little pyramidalisation,
* ``broad``: every coordinate uniform (torsion 0-180°, pyramidalisation ±40°, C–N 1.25-1.55 Å),
* ``intersection``: dense around the minimum-gap point of a quick scan at 90° twist
  (S1/S0 conical intersection region).

Labels (``nearsight.keys``): ``energy``/``forces`` (S0), ``state_energies`` [2] (eV),
``state_forces`` (per atom, stored [n_atoms, 2·3], eV/Å), ``state_couplings`` (per atom,
stored [n_atoms, 1·3]: h_01 = ⟨ψ_0|∇H|ψ_1⟩, eV/Å, sign arbitrary), ``state_spin_square``.

Reproduce (one worker, one thread; resumable: a rerun continues from the store):
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ch2nh2_data.py --n 300
which scans, labels into benchmarks/data/ch2nh2_sa2casscf.db and writes
benchmarks/data/ch2nh2_sa2casscf.extxyz (atomically).  ``--time 3`` only times 3 points.  A second,
independent set of 300 (other random geometries from the same distribution, 0 failures, 36 min):
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ch2nh2_data.py --n 300 --seed 1 \
        --out benchmarks/data/ch2nh2_sa2casscf_seed1.extxyz
Two more (seeds 2 and 3, 0 failures, 814 s each with the (HOMO, LUMO)-first oracle, run side by
side on one core each):
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ch2nh2_data.py --n 300 --seed 2 \
        --store runs/ch2nh2_seed2.db --out benchmarks/data/ch2nh2_sa2casscf_seed2.extxyz
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np
from ase import Atoms

from nearsight.keys import STATE_ENERGIES
from nearsight.qm import LabelStore, export_extxyz, label_structures
from nearsight.qm.casscf import SACASSCFOracle

HERE = Path(__file__).resolve().parent
STORE = HERE / "data" / "ch2nh2_sa2casscf.db"
OUT = HERE / "data" / "ch2nh2_sa2casscf.extxyz"
R_CN = (1.25, 1.55)  # Å


def oracle() -> SACASSCFOracle:
    """SA2-CASSCF(2,2)/6-31G, singlets, CH2NH2+ (charge +1), from the RHF (HOMO, LUMO) start,
    falling back to (HOMO−1, LUMO) (orbitals 6, 8) where that one does not converge.

    The (HOMO, LUMO) start keeps the (π, π*) active space, whose two states are the ones that meet
    at the twisted S1/S0 intersection.  Near planar with C–N below ~1.335 Å the solution from
    (HOMO−1, LUMO), with (σ, π*) active orbitals and S1 of σπ* character, has the lower E_SA;
    keeping the lowest E_SA (the data set's first version) made S1 and h_01 switch character
    there, with h_01 out of the molecular plane on one side and in it on the other.
    """
    return SACASSCFOracle(
        basis="6-31g",
        n_active_orbitals=2,
        n_active_electrons=2,
        n_states=2,
        charge=1,
        starts=(None, (6, 8)),
        select="first",
    )


def methaniminium(
    r_cn: float = 1.28,
    torsion_deg: float = 0.0,
    pyramidalization_c_deg: float = 0.0,
    pyramidalization_n_deg: float = 0.0,
    r_ch: float = 1.08,
    r_nh: float = 1.01,
    angle_hch_deg: float = 118.0,
    angle_hnh_deg: float = 118.0,
) -> Atoms:
    """CH2NH2+ (atoms C, N, H, H on C, H, H on N), C at the origin, N on +x; Å and degrees."""
    c, n = np.zeros(3), np.array([r_cn, 0.0, 0.0])

    def pair(centre, outward, pyramid_deg, angle_deg, r, torsion):
        p, half, t = np.radians(pyramid_deg), np.radians(angle_deg) / 2, np.radians(torsion)
        bisector = np.array([outward * np.cos(p), 0.0, np.sin(p)])
        rot = np.array([[1, 0, 0], [0, np.cos(t), -np.sin(t)], [0, np.sin(t), np.cos(t)]])
        return [
            centre + rot @ (r * (np.cos(half) * bisector + s * np.sin(half) * np.array([0, 1, 0])))
            for s in (1, -1)
        ]

    h_c = pair(c, -1, pyramidalization_c_deg, angle_hch_deg, r_ch, 0.0)
    h_n = pair(n, 1, pyramidalization_n_deg, angle_hnh_deg, r_nh, torsion_deg)
    atoms = Atoms("CNH4", positions=[c, n, *h_c, *h_n])
    atoms.info.update(
        r_cn=float(r_cn),
        torsion_deg=float(torsion_deg),
        pyramidalization_c_deg=float(pyramidalization_c_deg),
        pyramidalization_n_deg=float(pyramidalization_n_deg),
    )
    return atoms


def minimum_gap_scan(sa: SACASSCFOracle) -> tuple[float, float, float]:
    """(gap eV, r_cn, pyramidalization_c_deg) of the smallest S1-S0 gap at 90° twist (energies only)."""
    best = (np.inf, 0.0, 0.0)
    for pyr in (0.0, 10.0, 20.0, 30.0):
        for r in np.arange(1.30, 1.551, 0.05):
            mc = sa.casscf(methaniminium(r, 90.0, pyr))
            gap = float(np.ptp(mc.e_states)) * 27.211386
            print(f"  scan 90°, pyr_C {pyr:4.0f}°, C–N {r:.2f} Å: gap {gap:.3f} eV", flush=True)
            best = min(best, (gap, float(r), pyr))
    return best


def _perturbed(atoms: Atoms, sigma: float, region: str, rng: np.random.Generator) -> Atoms:
    atoms.positions += rng.normal(0.0, sigma, atoms.positions.shape)
    atoms.info.update(region=region, perturbation_A=float(sigma))
    atoms.info["r_cn_measured"] = float(atoms.get_distance(0, 1))
    return atoms


def sample(n: int, r_star: float, pyr_star: float, rng: np.random.Generator) -> list[Atoms]:
    """``n`` geometries: 15 % torsion scan, 45 % broad, 40 % around (90°, ``pyr_star``, ``r_star``)."""
    n_scan, n_broad = round(0.15 * n), round(0.45 * n)
    n_cross = n - n_scan - n_broad
    out = []
    for t in np.linspace(0.0, 180.0, n_scan):
        g = methaniminium(rng.uniform(*R_CN), t, rng.normal(0, 5), rng.normal(0, 5))
        out.append(_perturbed(g, 0.01, "torsion_scan", rng))
    for _ in range(n_broad):
        g = methaniminium(rng.uniform(*R_CN), rng.uniform(0, 180), rng.uniform(-40, 40), rng.uniform(-40, 40))
        out.append(_perturbed(g, 0.03, "broad", rng))
    for _ in range(n_cross):
        g = methaniminium(
            float(np.clip(rng.normal(r_star, 0.05), *R_CN)),
            rng.normal(90.0, 8.0),
            rng.normal(pyr_star, 10.0),
            rng.normal(0.0, 8.0),
        )
        out.append(_perturbed(g, 0.01, "intersection", rng))
    for i, g in enumerate(out):
        g.info["name"] = f"ch2nh2_{i:04d}"
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=300, help="number of geometries")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--store", type=Path, default=STORE)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--time", type=int, default=0, help="only label this many points and time them")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stdout)
    sa = oracle()
    print(f"{sa.name}; minimum-gap scan at 90° twist:", flush=True)
    gap, r_star, pyr_star = minimum_gap_scan(sa)
    print(f"smallest gap {gap:.3f} eV at C–N {r_star:.2f} Å, pyr_C {pyr_star:.0f}°", flush=True)
    structures = sample(args.n, r_star, pyr_star, np.random.default_rng(args.seed))
    if args.time:
        for atoms in structures[:: max(1, len(structures) // args.time)][: args.time]:
            start = time.perf_counter()
            label = sa(atoms)
            print(
                f"{atoms.info['name']} ({atoms.info['region']}): ok={label.ok} {time.perf_counter() - start:.1f} s"
            )
        return 0
    start = time.perf_counter()

    def progress(done: int, total: int, label) -> None:
        rate = (time.perf_counter() - start) / done
        gap_ev = np.ptp(label.extra[STATE_ENERGIES]) if label.ok else float("nan")
        state = "ok" if label.ok else f"FAILED: {label.error}"
        print(f"{done}/{total} {rate:.1f} s/point, gap {gap_ev:.3f} eV, {state}", flush=True)

    store = LabelStore(args.store)
    result = label_structures(structures, sa, store, n_workers=1, timeout_s=300, progress=progress)
    infos = [dict(a.info) for a in structures]
    n_frames = export_extxyz(args.out, store, sa, structures, info=infos)
    gaps = [np.ptp(lab.extra[STATE_ENERGIES]) for lab in result.labels if lab.ok]
    print(
        f"{n_frames} frames -> {args.out}; {result.computed} computed, {result.cached} cached, "
        f"{result.failed} failed; S1-S0 gap {min(gaps):.4f}-{max(gaps):.3f} eV; {result.wall_time:.0f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
