"""The cusp of a conical intersection: a learned diabatic matrix against a plain adiabatic network.

    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python benchmarks/ferretti_cusp.py [--points 500] \\
        [--steps 4000] [--json benchmarks/results/ferretti_cusp.json]

Data: ``--points`` random (X, Y) in [2, 4.5] × [−1, 1] bohr on Ferretti's model
(:func:`nearsight.nonadiabatic.analytic.ferretti`, intersection exactly at (3, 0)), labelled with
both adiabatic energies and their gradients (Eh, Eh/bohr), nothing else: no diabatic labels, no
couplings.  Two networks of the same size (2 → 64 → 64 → outputs, tanh) are trained the same way
(:func:`nearsight.nonadiabatic.coordinate_model.fit_adiabatic`): a
:class:`~nearsight.nonadiabatic.coordinate_model.DiabaticNetwork` (V_11, V_12, V_22, diagonalised)
and an :class:`~nearsight.nonadiabatic.coordinate_model.AdiabaticNetwork` (E_1, E_2 directly).

Reported for each: test RMSE of energies and gradients on 2000 fresh points; the model's own
intersection, found by minimising the gap from (3, 0) (Nelder-Mead on the gap), its location and
the gap there; and scans through that point along X and along Y: the minimum gap and the slopes of
the gap (its change over ±0.05 bohr divided by 0.1), against the exact 0.020 Eh/bohr along X and
2γ = 0.020 Eh/bohr along Y.  Goals (issue 18): minimum gap < 1e-4 Eh, slope along X 0.020 ± 0.002,
along Y 2γ ± 10 %, and the adiabatic network failing the minimum-gap check.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from scipy.optimize import minimize

from nearsight._files import atomic_write
from nearsight.nonadiabatic.analytic import FERRETTI, ferretti
from nearsight.nonadiabatic.coordinate_model import (
    AdiabaticNetwork,
    DiabaticNetwork,
    energies_and_gradients,
    fit_adiabatic,
)
from nearsight.nonadiabatic.eigen import adiabatic_energies


class Exact(torch.nn.Module):
    def energies(self, q: torch.Tensor) -> torch.Tensor:
        return adiabatic_energies(ferretti(q[:, 0], q[:, 1]), epsilon=0.0)


def sample(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.stack(
        [2 + 2.5 * torch.rand(n, generator=g), -1 + 2 * torch.rand(n, generator=g)], 1
    ).double()


def gap(model, points: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        E = model.energies(torch.as_tensor(np.atleast_2d(points), dtype=torch.float64))
    return (E[:, 1] - E[:, 0]).numpy()


def intersection(model) -> dict:
    best = minimize(lambda p: float(gap(model, p)[0]), x0=np.array([3.0, 0.0]), method="Nelder-Mead",
                    options={"xatol": 1e-9, "fatol": 1e-12, "maxiter": 4000})  # fmt: skip
    centre = best.x
    out = {"location": centre.tolist(), "gap_at_minimum": float(best.fun)}
    for axis, name in ((0, "x"), (1, "y")):
        offsets = np.linspace(-0.3, 0.3, 601)
        line = np.repeat(centre[None], offsets.size, 0)
        line[:, axis] += offsets
        g = gap(model, line)
        out[f"scan_{name}_min_gap"] = float(g.min())
        step = np.zeros(2)
        step[axis] = 0.05
        out[f"slope_{name}"] = float((gap(model, centre + step)[0] + gap(model, centre - step)[0]) / 0.1)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--points", type=int, default=500)
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    q = sample(args.points, args.seed)
    E, G = energies_and_gradients(Exact(), q)
    E, G = E.detach(), G.detach()
    q_test = sample(2000, args.seed + 1)
    E_test, G_test = (x.detach() for x in energies_and_gradients(Exact(), q_test))
    result = {"args": vars(args), "exact": intersection(Exact()), "two_gamma": 2 * FERRETTI["gamma"]}
    for name, model in (("diabatic", DiabaticNetwork(2, 2)), ("adiabatic", AdiabaticNetwork(2, 2))):
        t0 = time.perf_counter()
        history = fit_adiabatic(model, q, E, G, steps=args.steps, seed=args.seed)
        E_p, G_p = energies_and_gradients(model, q_test)
        row = {
            "final_loss": history[-1],
            "seconds": round(time.perf_counter() - t0, 1),
            "test_energy_rmse_eh": float((E_p.detach() - E_test).pow(2).mean().sqrt()),
            "test_gradient_rmse_eh_per_bohr": float((G_p.detach() - G_test).pow(2).mean().sqrt()),
            **intersection(model),
        }
        result[name] = row
        print(f"{name:<10} " + json.dumps(row), flush=True)
    d = result["diabatic"]
    print(
        f"\ndiabatic: intersection at ({d['location'][0]:.4f}, {d['location'][1]:.4f}) (exact (3, 0)); "
        f"min gap {d['scan_x_min_gap']:.2e} / {d['scan_y_min_gap']:.2e} Eh along X / Y (goal < 1e-4); "
        f"slopes {d['slope_x']:.4f} (goal 0.020 ± 0.002), {d['slope_y']:.4f} (goal {2 * FERRETTI['gamma']:.3f} ± 10 %)"
    )
    a = result["adiabatic"]
    print(
        f"adiabatic: min gap {a['scan_x_min_gap']:.2e} / {a['scan_y_min_gap']:.2e} Eh, smallest {a['gap_at_minimum']:.2e}"
    )
    if args.json:
        atomic_write(args.json, lambda fh: json.dump(result, fh, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
