"""Water-dimer geometries labelled at two levels of theory for multi-fidelity (Δ) learning.

* 1000 geometries (seed 0): O–O distance uniform in 2.5–4.5 Å (before the
  rotations, which move it by a few hundredths of an Å), each monomer
  with random O–H bonds (0.90–1.06 Å) and H–O–H angle (95–116°), rotated away
  from the hydrogen-bonded minimum by up to 40° about a random axis (one in
  five geometries: any orientation); geometries with two atoms of different
  monomers closer than 1.3 Å are redrawn.
* low level: HF/6-31G* energies and analytic forces on all of them;
* high level: MP2/6-31G** (all electrons) energies and analytic forces on 500 of
  them (random, seed 1): 300 "pool" (training pool) + 200 "test".

Labels are cached in ``labels.db`` (a :class:`nearsight.qm.LabelStore`), so a
rerun after a kill computes only what is missing.  Output: ``water_dimer.xyz``
with ``info["hf_energy"]``, ``arrays["hf_forces"]`` on every frame and
``info["mp2_energy"]``, ``arrays["mp2_forces"]``, ``info["split"]`` on the
high-level ones.

Run: ``OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python benchmarks/multifidelity/generate.py``
(one worker process with one thread: the machine is shared).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
from ase import Atoms
from scipy.spatial.transform import Rotation

from nearsight.qm import LabelStore, PySCFOracle, export_extxyz, label_structures

HERE = Path(__file__).resolve().parent

# Water dimer near its MP2 minimum (Cs): donor O1 H1 H2 (H2 bridging), acceptor O2 H3 H4; Å
REFERENCE = np.array(
    [
        [-1.551007, -0.114520, 0.000000],
        [-1.934259, 0.762503, 0.000000],
        [-0.599677, 0.040712, 0.000000],
        [1.350625, 0.111469, 0.000000],
        [1.680398, -0.373741, -0.758561],
        [1.680398, -0.373741, 0.758561],
    ]
)
NUMBERS = [8, 1, 1, 8, 1, 1]


def _monomer(reference: np.ndarray, rng: np.random.Generator, max_angle_deg: float | None) -> np.ndarray:
    """A distorted, reoriented copy of one water (rows O, H, H) with its O at the origin."""
    o, h1, h2 = reference
    u1, u2 = (h1 - o) / np.linalg.norm(h1 - o), (h2 - o) / np.linalg.norm(h2 - o)
    bisector = (u1 + u2) / np.linalg.norm(u1 + u2)
    in_plane = (u1 - u2) / np.linalg.norm(u1 - u2)
    r1, r2 = rng.uniform(0.90, 1.06, size=2)
    half = np.radians(rng.uniform(95.0, 116.0)) / 2
    d1 = np.cos(half) * bisector + np.sin(half) * in_plane
    d2 = np.cos(half) * bisector - np.sin(half) * in_plane
    water = np.array([np.zeros(3), r1 * d1, r2 * d2])
    if max_angle_deg is None:
        rotation = Rotation.random(random_state=rng)
    else:
        axis = rng.normal(size=3)
        angle = np.radians(rng.uniform(0.0, max_angle_deg))
        rotation = Rotation.from_rotvec(angle * axis / np.linalg.norm(axis))
    # rotate about the centre of mass (approximately the O) of the monomer
    com = (16.0 * water[0] + water[1] + water[2]) / 18.0
    return rotation.apply(water - com) + com


def make_geometries(n: int, seed: int = 0) -> list[Atoms]:
    rng = np.random.default_rng(seed)
    a, b = REFERENCE[:3], REFERENCE[3:]
    axis = (b[0] - a[0]) / np.linalg.norm(b[0] - a[0])
    out: list[Atoms] = []
    while len(out) < n:
        d_oo = rng.uniform(2.5, 4.5)
        free = rng.random() < 0.2
        max_angle = None if free else 40.0
        m1 = _monomer(a, rng, max_angle)
        m2 = _monomer(b, rng, max_angle)
        positions = np.vstack([m1, m2 + d_oo * axis])
        inter = np.linalg.norm(positions[:3, None, :] - positions[None, 3:, :], axis=-1)
        if inter.min() < 1.3:
            continue
        atoms = Atoms(numbers=NUMBERS, positions=positions)
        atoms.info["d_OO"] = float(np.linalg.norm(positions[3] - positions[0]))
        atoms.info["free_orientation"] = bool(free)
        out.append(atoms)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="number of geometries (HF labels)")
    parser.add_argument("--n-pool", type=int, default=300)
    parser.add_argument("--n-test", type=int, default=200)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--store", default=str(HERE / "labels.db"))
    parser.add_argument("--out", default=str(HERE / "water_dimer.xyz"))
    parser.add_argument("--low", default="hf/6-31g*", help="method/basis of the low level")
    parser.add_argument("--high", default="mp2/6-31g**", help="method/basis of the high level")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    geometries = make_geometries(args.n, seed=0)
    chosen = np.random.default_rng(1).permutation(args.n)[: args.n_pool + args.n_test]
    split = {int(i): ("pool" if k < args.n_pool else "test") for k, i in enumerate(chosen)}
    low = PySCFOracle(*args.low.split("/", 1))
    high = PySCFOracle(*args.high.split("/", 1))
    store = LabelStore(args.store)

    def progress(done: int, total: int, label) -> None:
        if done % 50 == 0 or done == total:
            logging.info("  %d/%d labelled (last %.2f s)", done, total, label.wall_time)

    timings = {}
    for name, oracle, subset in (
        ("low", low, list(range(args.n))),
        ("high", high, sorted(split)),
    ):
        start = time.perf_counter()
        result = label_structures(
            [geometries[i] for i in subset],
            oracle,
            store,
            n_workers=args.workers,
            threads_per_worker=1,
            progress=progress,
        )
        wall = time.perf_counter() - start
        computed = [lab.wall_time for lab in result.labels if lab.ok]
        timings[name] = {
            "oracle": oracle.name,
            "structures": len(subset),
            "computed_now": result.computed,
            "from_cache": result.cached,
            "failed": result.failed,
            "wall_s_this_run": round(wall, 1),
            "mean_label_s": round(float(np.mean(computed)), 3) if computed else None,
            "total_label_s": round(float(np.sum(computed)), 1),
        }
        logging.info("%s: %s", name, timings[name])
        for i, label in zip(subset, result.labels):
            if not label.ok:
                logging.warning("geometry %d: %s", i, label.error)

    high_ok = {h for h in store.labels(high)}
    from nearsight.qm import geometry_hash

    info = []
    for i, atoms in enumerate(geometries):
        entry = {"index": i, "d_OO": atoms.info["d_OO"], "free_orientation": atoms.info["free_orientation"]}
        if i in split and geometry_hash(atoms) in high_ok:
            entry["split"] = split[i]
        info.append(entry)
    n = export_extxyz(
        args.out,
        store,
        low,
        geometries,
        energy_key="hf_energy",
        forces_key="hf_forces",
        also={"mp2": high},
        info=info,
    )
    logging.info("wrote %d frames to %s", n, args.out)
    print(json.dumps(timings, indent=1))


if __name__ == "__main__":
    main()
