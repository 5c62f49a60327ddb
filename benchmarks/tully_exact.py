"""Exact quantum scattering on Tully's models: a split-operator wavepacket, the reference for surface hopping.

    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python benchmarks/tully_exact.py \\
        [--model 1] [--k 10 20 30] [--points 8192] [--half-length 200] [--json benchmarks/results/tully_exact.json]

A Gaussian wavepacket ψ(x, 0) = (2πσ²)^(-1/4) exp(−(x − x_0)²/4σ² + ikx) (σ = ``--sigma`` = 5 bohr, so
|ψ|² has standard deviation σ; x_0 = −15 bohr by default) starts on the lower adiabatic state of
Tully's model (:func:`nearsight.nonadiabatic.analytic.tully`; mass 2000 a.u., atomic units
throughout) and is propagated with the Strang splitting

    ψ(t + Δt) = e^(−iVΔt/2) F⁻¹ e^(−ik²Δt/2m) F e^(−iVΔt/2) ψ(t)

(the 2×2 potential exponentiated exactly at every grid point through its eigen-decomposition, F the
FFT on a periodic grid of ``--points`` points over [−L, L]) until the transmitted and reflected
parts have left the coupling region.  The grid and time step are checked: every number is also
computed with twice the points and half the step, and the largest change is reported
(``convergence``).  Reported per k: the probabilities of transmission (x > 0) and reflection
(x < 0) on the lower and upper adiabatic states, measured in the asymptotic regions, where the
adiabatic states are those of V_d at ±∞.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from nearsight._files import atomic_write
from nearsight.nonadiabatic.analytic import tully

MASS = 2000.0


def _potential(x: np.ndarray, model: int) -> np.ndarray:
    return tully(torch.as_tensor(x, dtype=torch.float64), model).numpy()  # [n, 2, 2]


def _adiabatic(V: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues [n, 2] and eigenvectors [n, 2, 2] (columns) with a sign fixed per point."""
    E, U = np.linalg.eigh(V)
    U = U * np.where(U[:, :1, :] < 0, -1.0, 1.0)  # first component of each column ≥ 0 (smooth here)
    return E, U


def scatter(
    model: int, k: float, points: int, half_length: float, dt: float, sigma: float, x0: float
) -> dict:
    """Branching probabilities of one wavepacket run (see the module)."""
    x = np.linspace(-half_length, half_length, points, endpoint=False)
    dx = x[1] - x[0]
    p = 2 * np.pi * np.fft.fftfreq(points, d=dx)
    V = _potential(x, model)
    E, U = _adiabatic(V)
    # e^(−iVΔt/2) = U e^(−iEΔt/2) Uᵀ at every point
    half_step = np.einsum("nab,nb,ncb->nac", U, np.exp(-0.5j * E * dt), U)
    kinetic = np.exp(-0.5j * p**2 / MASS * dt)
    packet = (2 * np.pi * sigma**2) ** -0.25 * np.exp(-((x - x0) ** 2) / (4 * sigma**2) + 1j * k * x)
    psi = U[:, :, 0] * packet[:, None]  # on the lower adiabatic state
    velocity = k / MASS
    # until a packet at the initial speed would be at L/4: the slow parts (upper-state reflection
    # and transmission with little energy to spare) are then out of the coupling region, while parts
    # sped up by the potential drop (up to 3× the speed on model 3) have not yet wrapped around the
    # periodic box
    steps = int(np.ceil((0.25 * half_length - x0) / velocity / dt))
    for _ in range(steps):
        psi = np.einsum("nab,nb->na", half_step, psi)
        psi = np.fft.ifft(kinetic[:, None] * np.fft.fft(psi, axis=0), axis=0)
        psi = np.einsum("nab,nb->na", half_step, psi)
    adiabatic = np.einsum("nba,nb->na", U, psi)  # components on the local adiabatic states
    density = np.abs(adiabatic) ** 2 * dx
    right, left = x > 0, x < 0
    return {
        "transmission_lower": float(density[right, 0].sum()),
        "transmission_upper": float(density[right, 1].sum()),
        "reflection_lower": float(density[left, 0].sum()),
        "reflection_upper": float(density[left, 1].sum()),
        "norm": float(density.sum()),
        "steps": steps,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=int, default=1, choices=[1, 2, 3])
    parser.add_argument("--k", type=float, nargs="+", default=[10.0, 20.0, 30.0])
    parser.add_argument("--points", type=int, default=8192)
    parser.add_argument("--half-length", type=float, default=200.0, help="bohr")
    parser.add_argument("--dt", type=float, default=1.0, help="a.u. of time")
    parser.add_argument("--sigma", type=float, default=5.0, help="bohr")
    parser.add_argument("--x0", type=float, default=-15.0, help="bohr")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    rows = []
    for k in args.k:
        t0 = time.perf_counter()
        common = {
            "model": args.model,
            "k": k,
            "half_length": args.half_length,
            "sigma": args.sigma,
            "x0": args.x0,
        }
        coarse = scatter(points=args.points, dt=args.dt, **common)
        fine = scatter(points=2 * args.points, dt=0.5 * args.dt, **common)
        keys = [name for name in coarse if name.startswith(("transmission", "reflection"))]
        change = max(abs(coarse[name] - fine[name]) for name in keys)
        row = {"model": args.model, "k": k, **{name: fine[name] for name in keys}, "norm": fine["norm"]}
        row["convergence"] = change
        row["seconds"] = round(time.perf_counter() - t0, 1)
        rows.append(row)
        print(
            f"model {args.model} k {k:5.1f}: T_lower {row['transmission_lower']:.4f} T_upper "
            f"{row['transmission_upper']:.4f} R_lower {row['reflection_lower']:.4f} R_upper "
            f"{row['reflection_upper']:.4f} norm {row['norm']:.6f} (grid/step change {change:.1e}, {row['seconds']} s)",
            flush=True,
        )
    if args.json:
        atomic_write(args.json, lambda fh: json.dump({"args": vars(args), "results": rows}, fh, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
