"""Energy + forces throughput and peak memory of a Behler-Parrinello model on liquid water.

A 1536-atom box is built by replicating the first 192-atom frame of
``../shared/data/water/data_0`` 2×2×2.  Each case runs in its own process so that
the peak resident memory (ru_maxrss) belongs to that case alone.

    .venv/bin/python benchmarks/water_throughput.py [--repeats 5] [--sizes 192 1536]

Reported per case: neighbour-list time, model energy+forces time, atoms/s for the
whole step (neighbour list + model) and peak RSS.  Weights are random; the cost
does not depend on them.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WATER = ROOT.parent / "shared" / "data" / "water" / "data_0"


def water_box(n_atoms: int):
    from nearsight.data.readers import read_frames

    frame = read_frames(WATER, index=0)[0]
    atoms = frame.to_atoms()
    reps = {192: (1, 1, 1), 1536: (2, 2, 2), 12288: (4, 4, 4)}[n_atoms]
    atoms.calc = None
    return atoms * reps


def run_case(n_atoms: int, dtype: str, repeats: int, model_kind: str) -> dict:
    import torch

    from nearsight import keys
    from nearsight.data.neighbours import atoms_to_graph
    from nearsight.descriptors.acsf import default_acsf_params
    from nearsight.models.bpnn import BehlerParrinello
    from nearsight.models.forcefield import ForceField

    torch.manual_seed(0)
    tdtype = getattr(torch, dtype)
    angular = "ani" if model_kind == "ani" else "g4"
    params = default_acsf_params(5.0, 16, 3.5, angular=angular)
    model = BehlerParrinello([1, 8], dict(r_cut=5.0, r_cut_angular=3.5, **params), hidden=[128, 128])
    ff = ForceField(model.to(tdtype)).eval()
    for p in ff.parameters():
        p.requires_grad_(False)
    atoms = water_box(n_atoms)
    graph = atoms_to_graph(atoms, ff.cutoff, tdtype)
    out = ff(graph)  # warm-up
    t_nl, t_model = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        graph = atoms_to_graph(atoms, ff.cutoff, tdtype)
        t1 = time.perf_counter()
        out = ff(graph)
        out[keys.FORCES].sum().item()
        t2 = time.perf_counter()
        t_nl.append(t1 - t0)
        t_model.append(t2 - t1)
    nl, mdl = min(t_nl), min(t_model)
    return {
        "n_atoms": len(atoms),
        "dtype": dtype,
        "model": f"bpnn-{model_kind}",
        "n_features": model.descriptor.n_features,
        "n_edges": int(graph[keys.EDGE_INDEX].shape[1]),
        "threads": torch.get_num_threads(),
        "neighbour_list_s": nl,
        "model_s": mdl,
        "atoms_per_s": len(atoms) / (nl + mdl),
        "model_atoms_per_s": len(atoms) / mdl,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[192, 1536])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "float64"])
    parser.add_argument("--models", nargs="+", default=["ani", "g4"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", default=None)
    parser.add_argument("--case", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        n, dtype, kind = args.case.split(":")
        print(json.dumps(run_case(int(n), dtype, args.repeats, kind)))
        return
    rows = []
    for kind in args.models:
        for n in args.sizes:
            for dtype in args.dtypes:
                cmd = [
                    sys.executable,
                    __file__,
                    "--case",
                    f"{n}:{dtype}:{kind}",
                    "--repeats",
                    str(args.repeats),
                ]
                res = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy(), check=True)
                rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
    head = f"{'model':<10}{'atoms':>7}{'dtype':>9}{'edges':>9}{'NL ms':>9}{'model ms':>10}{'atoms/s':>10}{'peak MB':>9}"
    print(head)
    for r in rows:
        print(
            f"{r['model']:<10}{r['n_atoms']:>7}{r['dtype']:>9}{r['n_edges']:>9}{1e3 * r['neighbour_list_s']:>9.1f}"
            f"{1e3 * r['model_s']:>10.1f}{r['atoms_per_s']:>10.0f}{r['peak_rss_mb']:>9.0f}"
        )
    by = {(r["model"], r["n_atoms"], r["dtype"]): r for r in rows}
    for kind in args.models:
        for n in args.sizes:
            a, b = by.get((f"bpnn-{kind}", n, "float32")), by.get((f"bpnn-{kind}", n, "float64"))
            if a and b:
                print(
                    f"bpnn-{kind} {n} atoms: float32/float64 throughput ratio {a['atoms_per_s'] / b['atoms_per_s']:.2f}"
                )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
