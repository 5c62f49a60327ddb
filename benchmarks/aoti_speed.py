"""Compiled package (torch.export + AOTInductor) against the eager model, in one process.

The same model evaluates energy, forces and virial of the same water box (the bundled data's first
192-atom frame of ``../shared/data/water/data_0`` replicated 2×2×2 = 1536 atoms, or 4×4×4 = 12 288),
from the same neighbour list: eagerly through ``ForceField`` (the padded-neighbour CPU path of the
equivariant model, the chunked descriptors of Behler-Parrinello) and through the compiled package
(the shape-static traced path).  One thread each (``OMP_NUM_THREADS=1``), medians of the repeats,
the ratio printed.  Packages are compiled optimised once and kept in ``--work``.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/aoti_speed.py [--atoms 1536] [--dtype float32]
        [--system water|silicon]   # silicon: the diamond cell of benchmarks/lammps_speed.py, 8×6×4
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def build_model(kind: str, species: list[int] | None = None):
    """The benchmark models (random weights; the cost does not depend on them): Behler-Parrinello
    with ACSF (r_c 5 Å, 16 radial functions, angular within 3.5 Å, 128x128 networks) or the
    equivariant model's small preset (MACE small at matched size), r_c 5 Å; ``equivariant1`` is the
    small preset with one layer (the architecture of ``examples/si_equivariant.yaml``)."""
    import torch

    from nearsight.descriptors.acsf import default_acsf_params
    from nearsight.models.bpnn import BehlerParrinello
    from nearsight.models.equivariant import EquivariantPotential

    species = species or [1, 8]
    torch.manual_seed(0)
    if kind == "bpnn":
        params = default_acsf_params(5.0, 16, 3.5)
        return BehlerParrinello(species, dict(r_cut=5.0, r_cut_angular=3.5, **params), hidden=[128, 128])
    if kind not in ("equivariant", "equivariant1"):
        raise ValueError(f"unknown benchmark model {kind!r}: bpnn, equivariant or equivariant1")
    layers = {"num_layers": 1} if kind == "equivariant1" else {}
    model = EquivariantPotential.from_preset("small", species, cutoff=5.0, **layers)
    model.set_statistics({z: -5.0 for z in species}, 0.5, avg_num_neighbours=30.0)
    return model


def timed(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--atoms", type=int, default=1536, choices=[1536, 12288])
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--system", default="water", choices=["water", "silicon"])
    parser.add_argument(
        "--models",
        nargs="+",
        default=["bpnn", "equivariant"],
        choices=["bpnn", "equivariant", "equivariant1"],
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--work", default=str(ROOT / "runs" / "lammps_speed"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "aoti_speed.json"))
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch
    from lammps_speed import SPECIES, structure
    from water_throughput import water_box

    from nearsight import keys
    from nearsight.data.neighbours import atoms_to_graph
    from nearsight.models.aoti import export_package, graph_inputs, load_package, read_metadata
    from nearsight.models.forcefield import ForceField

    torch.set_num_threads(1)
    dtype = getattr(torch, args.dtype)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    atoms = water_box(args.atoms) if args.system == "water" else structure("silicon", args.atoms)
    results = []
    for kind in args.models:
        model = build_model(kind, SPECIES[args.system]).to(dtype).eval()
        package = work / f"{kind}_{args.system}_{args.dtype}.pt2"  # (shared with lammps_speed.py)
        compile_s = None
        try:
            read_metadata(package)  # a package of an older format is compiled again
        except (FileNotFoundError, ValueError):
            t = time.perf_counter()
            export_package(model, package, dtype=dtype)
            compile_s = time.perf_counter() - t
        potential = load_package(package)
        graph = atoms_to_graph(atoms, float(model.cutoff), dtype)
        inputs = graph_inputs(graph, dtype)
        ff = ForceField(model)
        for p in ff.parameters():
            p.requires_grad_(False)
        eager = ff(graph, forces=True, stress=True)
        compiled = potential(*inputs)
        de = float((compiled[0].double() - eager[keys.ATOMIC_ENERGIES].detach().double()).abs().max())
        df = float((compiled[1] - eager[keys.FORCES]).abs().max())
        t_eager = timed(lambda ff=ff, graph=graph: ff(graph, forces=True, stress=True), args.repeats)
        t_aoti = timed(lambda potential=potential, inputs=inputs: potential(*inputs), args.repeats)
        row = {
            "model": kind,
            "system": args.system,
            "atoms": len(atoms),
            "edges": int(graph[keys.EDGE_INDEX].shape[1]),
            "dtype": args.dtype,
            "eager_s": round(t_eager, 4),
            "aoti_s": round(t_aoti, 4),
            "speedup": round(t_eager / t_aoti, 2),
            "max_atomic_energy_diff_eV": de,
            "max_force_diff_eV_per_A": df,
            "compile_s": None if compile_s is None else round(compile_s, 1),
        }
        results.append(row)
        print(
            f"{kind:12s} {args.system} {len(atoms)} atoms {args.dtype}: eager {t_eager * 1e3:8.1f} ms, compiled "
            f"{t_aoti * 1e3:8.1f} ms, compiled/eager speed {t_eager / t_aoti:5.2f}x "
            f"(max |Δε_i| {de:.1e} eV, max |ΔF| {df:.1e} eV/Å)",
            flush=True,
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(out.read_text()) if out.exists() else []
    keep = [
        r
        for r in previous
        if (r["model"], r.get("system", "water"), r["atoms"], r["dtype"])
        not in {(x["model"], x["system"], x["atoms"], x["dtype"]) for x in results}
    ]
    out.write_text(json.dumps(keep + results, indent=1) + "\n")


if __name__ == "__main__":
    main()
