"""Fewest-switches surface hopping on Tully's models against the exact wavepacket reference.

    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python benchmarks/tully_fssh.py --model 1 --k 10 20 30 \\
        [--trajectories 2000] [--decoherence 0.1] [--exact benchmarks/results/tully_exact_model1.json] \\
        [--learned 200 [--coupling-labels]] [--json benchmarks/results/tully_fssh_model1.json]

Initial conditions sample the Wigner distribution of the wavepacket of ``benchmarks/tully_exact.py``
(x ~ N(x_0, σ²), p ~ N(k, 1/(4σ²)), σ = 5 bohr, x_0 = −15 bohr), all on the lower adiabatic state;
:class:`nearsight.simulate.surface_hopping.SurfaceHopping` propagates the swarm (mass 2000 a.u.,
Δt = 2 a.u.) until every trajectory has left the coupling region (x > 15 or x < −25 bohr).
Reported per k: the fraction transmitted and reflected on each adiabatic state, with the binomial
standard error, next to the exact value where ``--exact`` gives it.  With ``--learned N`` the swarm
hops on a :class:`~nearsight.nonadiabatic.coordinate_model.DiabaticNetwork` trained on N random
points of the model (adiabatic energies and gradients only) instead of the analytic V_d.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from nearsight._files import atomic_write
from nearsight.nonadiabatic.analytic import tully
from nearsight.nonadiabatic.coordinate_model import DiabaticNetwork, fit_adiabatic
from nearsight.nonadiabatic.couplings import derivative_couplings
from nearsight.nonadiabatic.eigen import adiabatic_energies
from nearsight.simulate.surface_hopping import SurfaceHopping

OUTCOMES = ("transmission_lower", "transmission_upper", "reflection_lower", "reflection_upper")


def learned_model(model: int, points: int, seed: int, with_couplings: bool = False, steps: int = 4000):
    """A :class:`DiabaticNetwork` trained on ``points`` random x in [−10, 10] bohr of Tully's model:
    both adiabatic energies and gradients, with ``with_couplings`` also h_12 (sign-free loss);
    never diabatic labels."""
    g = torch.Generator().manual_seed(seed)
    x = (-10 + 20 * torch.rand(points, 1, generator=g)).double().requires_grad_(True)
    E = adiabatic_energies(tully(x[:, 0], model), epsilon=0.0)
    G = torch.stack([torch.autograd.grad(E[:, i].sum(), x, retain_graph=True)[0] for i in range(2)], 1)
    labels = None
    if with_couplings:
        labels, _ = derivative_couplings(tully(x[:, 0], model), x, torch.arange(points))
        flip = torch.where(torch.rand(points, generator=g) < 0.5, -1.0, 1.0).double()  # arbitrary signs
        labels = (labels * flip[:, None, None, None]).detach()
    network = DiabaticNetwork(1, 2)
    history = fit_adiabatic(
        network, x.detach(), E.detach(), G.detach(), steps=steps, seed=seed, coupling_labels=labels
    )
    grid = torch.linspace(-10, 10, 2001, dtype=torch.float64)[:, None]
    with torch.no_grad():
        error = (
            (network.energies(grid) - adiabatic_energies(tully(grid[:, 0], model), epsilon=0.0)).abs().max()
        )
    print(
        f"learned diabatic model of Tully {model}: {points} points, final loss {history[-1]:.2e}, "
        f"max |ΔE| on [−10, 10] {float(error):.2e} Eh",
        flush=True,
    )
    return network, float(error)


def run(
    model: int,
    k: float,
    n: int,
    decoherence: float | None,
    seed: int,
    sigma: float,
    x0: float,
    potential=None,
) -> dict:
    generator = torch.Generator().manual_seed(seed)
    q = x0 + sigma * torch.randn(n, 1, generator=generator, dtype=torch.float64)
    p = k + torch.randn(n, 1, generator=generator, dtype=torch.float64) / (2 * sigma)
    potential = potential or (lambda x: tully(x[:, 0], model))
    fssh = SurfaceHopping(potential, torch.tensor([2000.0]), timestep=2.0, decoherence=decoherence, seed=seed)
    swarm = fssh.start(q, p)
    while True:
        fssh.step(swarm)
        x = swarm.q[:, 0]
        if bool(((x > 15) | (x < -25)).all()) or swarm.time > 1e6:
            break
    x = swarm.q[:, 0]
    masks = {"transmission": x > 0, "reflection": x < 0}
    out = {
        f"{side}_{name}": float(((swarm.active == state) & mask).double().mean())
        for side, mask in masks.items()
        for state, name in ((0, "lower"), (1, "upper"))
    }
    out.update(hops=swarm.hops, frustrated=swarm.frustrated, time_au=swarm.time)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=int, default=1, choices=[1, 2, 3])
    parser.add_argument("--k", type=float, nargs="+", default=[10.0, 20.0, 30.0])
    parser.add_argument("--trajectories", type=int, default=2000)
    parser.add_argument("--decoherence", type=float, default=None, help="Granucci-Persico C (Eh), e.g. 0.1")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sigma", type=float, default=5.0)
    parser.add_argument("--x0", type=float, default=-15.0)
    parser.add_argument("--exact", default=None, help="JSON of benchmarks/tully_exact.py for the same model")
    parser.add_argument(
        "--learned", type=int, default=None, help="hop on a DiabaticNetwork learned from this many points"
    )
    parser.add_argument(
        "--coupling-labels", action="store_true", help="with --learned: also h_12 labels (random signs)"
    )
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    potential, learned_error = None, None
    if args.learned:
        network, learned_error = learned_model(args.model, args.learned, args.seed, args.coupling_labels)
        potential = network
    exact = {}
    if args.exact:
        exact = {row["k"]: row for row in json.loads(Path(args.exact).read_text())["results"]}
    rows = []
    for k in args.k:
        t0 = time.perf_counter()
        row = {
            "model": args.model,
            "k": k,
            "decoherence": args.decoherence,
            "learned_points": args.learned,
            "coupling_labels": args.coupling_labels,
        }
        if learned_error is not None:
            row["learned_max_energy_error_eh"] = learned_error
        row.update(
            run(args.model, k, args.trajectories, args.decoherence, args.seed, args.sigma, args.x0, potential)
        )
        row["seconds"] = round(time.perf_counter() - t0, 1)
        print(f"model {args.model} k {k:5.1f} ({args.trajectories} trajectories, {row['seconds']} s, {row['hops']} hops, {row['frustrated']} frustrated)")  # fmt: skip
        for name in OUTCOMES:
            value = row[name]
            error = math.sqrt(max(value * (1 - value), 1e-12) / args.trajectories)
            ref = exact.get(k, {}).get(name)
            line = f"  {name:<20} {value:.3f} ± {error:.3f}"
            if ref is not None:
                line += f"   exact {ref:.3f}   difference {value - ref:+.3f}"
                row[f"{name}_exact"] = ref
            print(line, flush=True)
        rows.append(row)
    if args.json:
        atomic_write(args.json, lambda fh: json.dump({"args": vars(args), "results": rows}, fh, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
