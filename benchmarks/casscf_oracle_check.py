"""Validation of :class:`nearsight.qm.casscf.SACASSCFOracle` at SA2-CASSCF(2,2)/6-31G on CH2NH2+.

For a few geometries (near planar, twisted, close to the S1/S0 intersection) and every one of
the 18 Cartesian coordinates x:

* state forces against central differences of the state energies,
  −[E_I(x+δ) − E_I(x−δ)] / 2δ: the largest deviation per state (Eh/bohr; goal < 1e-4);
* couplings against finite differences of the wavefunction overlaps,
  d_01 ≈ [⟨ψ_0(x)|ψ_1(x+δ)⟩ − ⟨ψ_0(x)|ψ_1(x−δ)⟩] / 2δ (phases of ψ(x±δ) aligned with ψ(x);
  :func:`nearsight.qm.casscf.state_overlaps`), compared as vectors with h_01 / (E_1 − E_0):
  ‖d_oracle − d_fd‖ / ‖d_fd‖ (goal < 1 %); the sign is checked too (no flip allowed);
* the wall time of one fully labelled point (energies, 2 gradients, 1 coupling).

The displaced calculations start from the orbitals and CI vectors of the reference point.
Run by hand (one thread):  OMP_NUM_THREADS=1 .venv/bin/python benchmarks/casscf_oracle_check.py
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from ase.units import Bohr
from ch2nh2_data import methaniminium, oracle

from nearsight.keys import STATE_COUPLINGS, STATE_ENERGIES, STATE_FORCES
from nearsight.qm.casscf import state_overlaps
from nearsight.qm.oracles import HARTREE_PER_BOHR_TO_EV_PER_ANGSTROM, HARTREE_TO_EV

GEOMETRIES = {  # name: (r_cn Å, torsion °, pyramidalisation C °, pyramidalisation N °)
    "near planar (20° twist)": (1.30, 20.0, 5.0, -5.0),
    "twisted 60°, pyramidal": (1.40, 60.0, 15.0, 5.0),
    "twisted 90°, stretched": (1.45, 88.0, 10.0, 3.0),
    "near S1/S0 intersection": (1.37, 87.0, 10.0, 0.0),
}


def check(name: str, params: tuple[float, ...], step: float) -> dict[str, float]:
    sa = oracle()
    atoms = methaniminium(*params)
    start = time.perf_counter()
    label = sa(atoms)
    wall = time.perf_counter() - start
    if not label.ok:
        raise RuntimeError(label.error)
    mc0 = sa.casscf(atoms)
    energies = label.extra[STATE_ENERGIES]  # [2] eV
    n = len(atoms)
    fd_forces = np.zeros((n, 2, 3))  # eV/Å
    fd_d01 = np.zeros((n, 3))  # 1/Å
    for a in range(n):
        for x in range(3):
            e, s = {}, {}
            for sign in (1, -1):
                moved = atoms.copy()
                moved.positions[a, x] += sign * step
                mc = sa.casscf(moved, mo_coeff=mc0.mo_coeff, ci0=mc0.ci)
                e[sign] = np.asarray(mc.e_states) * HARTREE_TO_EV
                o = state_overlaps(mc0, mc)
                s[sign] = o * np.sign(np.diag(o))[None, :]
            fd_forces[a, :, x] = -(e[1] - e[-1]) / (2 * step)
            fd_d01[a, x] = (s[1][0, 1] - s[-1][0, 1]) / (2 * step)
    to_au = 1.0 / HARTREE_PER_BOHR_TO_EV_PER_ANGSTROM
    force_err = np.abs(label.extra[STATE_FORCES] - fd_forces).max(axis=(0, 2)) * to_au  # [2] Eh/bohr
    gap = energies[1] - energies[0]
    d01 = label.extra[STATE_COUPLINGS][:, 0] / gap  # 1/Å
    rel = np.linalg.norm(d01 - fd_d01) / np.linalg.norm(fd_d01)
    return {
        "gap_eV": gap,
        "err_S0": force_err[0],
        "err_S1": force_err[1],
        "max_force_S1": np.abs(label.extra[STATE_FORCES][:, 1]).max() * to_au,
        "d_norm_per_bohr": np.linalg.norm(fd_d01) * Bohr,
        "h_norm_eV_per_A": np.linalg.norm(label.extra[STATE_COUPLINGS][:, 0]),
        "rel_d": rel,
        "wall_s": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--step", type=float, default=1e-3, help="finite-difference step, Å")
    args = parser.parse_args()
    print(f"{oracle().name}, central differences with δ = {args.step:g} Å over all 18 coordinates\n")
    header = (
        "| geometry | S1−S0 gap (eV) | max dev. ∇E_0 | max dev. ∇E_1 (Eh/bohr) | max |∇E_1| | "
        "‖d_01‖ (1/bohr) | ‖h_01‖ (eV/Å) | rel. dev. d_01 | s / labelled point |"
    )
    print(header)
    print("|" + "---|" * header.count(" | ") + "---|")
    for name, params in GEOMETRIES.items():
        r = check(name, params, args.step)
        print(
            f"| {name} | {r['gap_eV']:.3f} | {r['err_S0']:.1e} | {r['err_S1']:.1e} | {r['max_force_S1']:.3f} | "
            f"{r['d_norm_per_bohr']:.3f} | {r['h_norm_eV_per_A']:.3f} | {100 * r['rel_d']:.3f} % | "
            f"{r['wall_s']:.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
