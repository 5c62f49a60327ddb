"""Cost of the long-range terms against the short-range models: water boxes of 192 to 12 288 atoms.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/longrange_cost.py \
        [--sizes 192 768 3072 12288] [--dtypes float64] [--max-memory-gb 6] [--max-seconds 240] \
        [--json benchmarks/results/longrange_cost.json]

Boxes: the first 192-atom frame of ``../shared/data/water/data_0`` (12.445 Å cubic cell)
replicated 1×1×1, 2×2×1, 4×2×2 and 4×4×4.  Each case (term, size, dtype) runs in its own
process with one thread and reports the best of ``--repeats`` timings of energy + forces:

* short range (``bpnn-q``: the config-default Behler-Parrinello model with a charge head, ACSF
  r_c = 5 Å, hidden [64, 64]; ``equivariant``: the ``small`` preset, r_c = 5 Å): the neighbour
  list (``atoms_to_graph``) plus ``ForceField`` energy and forces, timed separately;
* long range, with fixed charges q_O = −0.8, q_H = +0.4 e (what a charge head would hand over),
  energy summed and differentiated by autograd with respect to the positions (its own neighbour
  lists included): ``coulomb-direct`` (the same box with ``pbc`` off: all N(N−1)/2 pairs),
  ``ewald`` and ``pme`` (``Coulomb(method=..., accuracy=1e-6 eV/Å, real_space_cutoff=8 Å)``),
  ``d3`` (``Dispersion("pbe")``, default cutoffs 31.75 / 21.17 Å, 2 Å taper) and ``d3-12A``
  (the same with cutoff 12 Å, cn_cutoff 10 Å, as in ``longrange_nve.py``).

Peak memory is ``ru_maxrss`` of the case's process (the largest resident set it ever had:
the Python interpreter, torch and the case's tensors; ``base_rss_mb`` is the same after imports
and set-up, before the first evaluation).  Before each case the time and memory of every term are
extrapolated from its two largest measured sizes (log-log); a case whose estimate exceeds
``--max-seconds`` (for one evaluation) or ``--max-memory-gb`` is skipped, and the reason and
the estimate printed and stored.  The table gives the time of each long-range term over that
of each short-range model (neighbour list + model) and, per term, the log-log slope of time
against N over the measured sizes (the scaling exponent).  Weights are random: the cost does
not depend on them.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
WATER = ROOT.parent / "shared" / "data" / "water" / "data_0"
REPLICAS = {192: (1, 1, 1), 768: (2, 2, 1), 3072: (4, 2, 2), 12288: (4, 4, 4)}
SHORT = ("bpnn-q", "equivariant")
LONG = ("coulomb-direct", "ewald", "pme", "d3", "d3-12A")


def water_box(n_atoms: int):
    from nearsight.data.readers import read_frames

    atoms = read_frames(WATER, index=0)[0].to_atoms()
    atoms.calc = None
    return atoms * REPLICAS[n_atoms]


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _short_model(kind: str):
    from nearsight.training.config import validate_config
    from nearsight.training.model_setup import build_model

    model = {"type": "bpnn", "longrange": {"coulomb": {}}} if kind == "bpnn-q" else {"type": "equivariant"}
    cfg = validate_config({"data": {"train": "unused.xyz"}, "model": model}, source=kind)
    built = build_model(cfg["model"], [1, 8])
    return built.short if kind == "bpnn-q" else built  # bpnn-q: the short model with its charge head


def run_case(kind: str, n_atoms: int, dtype: str, repeats: int) -> dict:
    import torch

    from nearsight import keys
    from nearsight.data.neighbours import atoms_to_graph
    from nearsight.longrange import Coulomb, Dispersion
    from nearsight.models.forcefield import ForceField

    torch.set_num_threads(1)
    torch.manual_seed(0)
    tdtype = getattr(torch, dtype)
    atoms = water_box(n_atoms)
    row = {"term": kind, "n_atoms": n_atoms, "dtype": dtype, "threads": torch.get_num_threads()}
    times, nl_times = [], []
    if kind in SHORT:
        ff = ForceField(_short_model(kind).to(tdtype)).eval()
        for p in ff.parameters():
            p.requires_grad_(False)
        row["base_rss_mb"] = _rss_mb()
        for k in range(repeats + 1):  # the first call warms up
            t0 = time.perf_counter()
            graph = atoms_to_graph(atoms, ff.cutoff, tdtype)
            t1 = time.perf_counter()
            out = ff(graph)
            out[keys.FORCES].sum().item()
            t2 = time.perf_counter()
            if k:
                nl_times.append(t1 - t0)
                times.append(t2 - t1)
        row["n_edges"] = int(graph[keys.EDGE_INDEX].shape[1])
        row["neighbour_list_s"] = min(nl_times)
        row["model_s"] = min(times)
        row["total_s"] = row["neighbour_list_s"] + row["model_s"]
    else:
        if kind == "coulomb-direct":
            atoms.pbc = False
            atoms.cell = None
        graph = atoms_to_graph(atoms, 1.0, tdtype)  # only positions, cell, pbc, numbers are used
        q = torch.tensor(np.where(atoms.numbers == 8, -0.8, 0.4), dtype=tdtype)
        method = {"coulomb-direct": "ewald", "ewald": "ewald", "pme": "pme"}.get(kind)
        if kind == "d3":
            term = Dispersion("pbe")
        elif kind == "d3-12A":
            term = Dispersion("pbe", cutoff=12.0, cn_cutoff=10.0)
        else:
            term = Coulomb(method=method, accuracy=1e-6)
        if kind in ("ewald", "pme"):
            p = term.ewald_parameters(q, graph[keys.CELL][0])
            row["parameters"] = {k: v for k, v in vars(p).items() if v is not None}
        row["base_rss_mb"] = _rss_mb()
        for k in range(repeats + 1):
            positions = graph[keys.POSITIONS].detach().requires_grad_(True)
            g = {**graph, keys.POSITIONS: positions}
            t0 = time.perf_counter()
            energy = (term(g) if kind.startswith("d3") else term(g, q)).sum()
            (forces,) = torch.autograd.grad(-energy, positions)
            float(forces.sum())
            if k or repeats == 0:
                times.append(time.perf_counter() - t0)
        row["energy_ev"] = float(energy.detach())
        row["total_s"] = min(times)
    row["peak_rss_mb"] = _rss_mb()
    return row


ASSUMED_EXPONENT = {
    "bpnn-q": 1,
    "equivariant": 1,
    "coulomb-direct": 2,
    "ewald": 2,
    "pme": 1,
    "d3": 1,
    "d3-12A": 1,
}
"""Growth of time and memory with N assumed while only one size of a term is measured (d3: its pair
list, ~13 000 neighbours per atom within 31.75 Å, dominates its dense [N, N, 7, 7] C6 table
below a few thousand atoms)."""


def _estimate(rows: list[dict], kind: str, dtype: str, n: int) -> tuple[float, float] | None:
    """(seconds, peak MB) of ``kind`` at ``n`` atoms from a log-log line through its two largest
    measured sizes (one size: the :data:`ASSUMED_EXPONENT`); None before any."""
    done = [r for r in rows if r["term"] == kind and r["dtype"] == dtype and "total_s" in r]
    done.sort(key=lambda r: r["n_atoms"])
    if not done:
        return None
    b = done[-1]
    grown = lambda r: max(r["peak_rss_mb"] - r["base_rss_mb"], 1.0)  # noqa: E731
    if len(done) == 1:
        factor = (n / b["n_atoms"]) ** ASSUMED_EXPONENT.get(kind, 2)
        return b["total_s"] * factor, b["base_rss_mb"] + grown(b) * factor
    a = done[-2]
    ratio = math.log(n / b["n_atoms"]) / math.log(b["n_atoms"] / a["n_atoms"])
    seconds = b["total_s"] * (b["total_s"] / a["total_s"]) ** ratio
    memory = b["base_rss_mb"] + grown(b) * max(grown(b) / grown(a), 1.0) ** ratio
    return seconds, memory


def slope(rows: list[dict], kind: str, dtype: str) -> float | None:
    """Log-log slope of time against N over the measured sizes of ``kind``."""
    done = [r for r in rows if r["term"] == kind and r["dtype"] == dtype and "total_s" in r]
    if len(done) < 2:
        return None
    x = np.log([r["n_atoms"] for r in done])
    y = np.log([r["total_s"] for r in done])
    return float(np.polyfit(x, y, 1)[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=sorted(REPLICAS))
    parser.add_argument("--dtypes", nargs="+", default=["float64"])
    parser.add_argument("--terms", nargs="+", default=[*SHORT, *LONG])
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed repeats after one warm-up (≤ 1 above 3000 atoms)"
    )
    parser.add_argument(
        "--max-seconds", type=float, default=240.0, help="skip a case estimated slower (one call)"
    )
    parser.add_argument("--max-memory-gb", type=float, default=6.0, help="skip a case estimated larger")
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "longrange_cost.json"))
    parser.add_argument(
        "--merge",
        action="store_true",
        help="keep the measured rows of --json, run only missing or failed cases",
    )
    parser.add_argument("--case", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        limit = int(float(os.environ.get("LONGRANGE_COST_MAX_GB", "8")) * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))  # a case beyond it fails, not the machine
        kind, n, dtype, repeats = args.case.split(":")
        print(json.dumps(run_case(kind, int(n), dtype, int(repeats))))
        return
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env["LONGRANGE_COST_MAX_GB"] = str(args.max_memory_gb + 2.0)  # address space: a margin over the RSS limit
    rows: list[dict] = []
    if args.merge and Path(args.json).is_file():
        rows = [r for r in json.loads(Path(args.json).read_text())["rows"] if "total_s" in r]
    measured = {(r["term"], r["n_atoms"], r["dtype"]) for r in rows}
    for dtype in args.dtypes:
        for kind in args.terms:
            for n in sorted(args.sizes):
                if (kind, n, dtype) in measured:
                    continue
                est = _estimate(rows, kind, dtype, n)
                # the two repeats (warm-up + timed) of a large case cost twice one evaluation
                if est and (est[0] * 2 > args.max_seconds or est[1] > 1024 * args.max_memory_gb):
                    reason = (
                        f"skipped: estimated {est[0]:.0f} s per evaluation and {est[1] / 1024:.1f} GB peak "
                        f"(limits {args.max_seconds:.0f} s for warm-up + one timing, {args.max_memory_gb:g} GB)"
                    )
                    rows.append({"term": kind, "n_atoms": n, "dtype": dtype, "skipped": reason,
                                 "estimated_s": est[0], "estimated_peak_mb": est[1]})  # fmt: skip
                    print(f"{kind:<15}{n:>7} {dtype}: {reason}", flush=True)
                    continue
                repeats = args.repeats if n < 3000 else 1
                cmd = [sys.executable, __file__, "--case", f"{kind}:{n}:{dtype}:{repeats}"]
                res = subprocess.run(cmd, capture_output=True, text=True, env=env)
                if res.returncode != 0:
                    reason = f"failed (exit {res.returncode}): {res.stderr.strip().splitlines()[-1:]}"
                    rows.append({"term": kind, "n_atoms": n, "dtype": dtype, "skipped": reason})
                    print(f"{kind:<15}{n:>7} {dtype}: {reason}", flush=True)
                    continue
                row = json.loads(res.stdout.strip().splitlines()[-1])
                rows.append(row)
                if args.json:  # progress survives an interrupted run (--merge continues it)
                    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
                    Path(args.json).write_text(json.dumps({"rows": rows, "partial": True}, indent=2))
                print(
                    f"{kind:<15}{n:>7} {dtype}: {1e3 * row['total_s']:10.1f} ms, peak {row['peak_rss_mb']:7.0f} MB",
                    flush=True,
                )
    print()
    print(f"{'term':<15}{'atoms':>7}{'dtype':>9}{'time ms':>11}{'peak MB':>9}{'/bpnn-q':>9}{'/equiv':>9}")
    order = {k: i for i, k in enumerate([*SHORT, *LONG])}
    rows.sort(key=lambda r: (r["dtype"], order.get(r["term"], 99), r["n_atoms"]))
    by = {(r["term"], r["n_atoms"], r["dtype"]): r for r in rows}
    for r in rows:
        if "skipped" in r:
            continue
        ratios = []
        for ref in SHORT:
            s = by.get((ref, r["n_atoms"], r["dtype"]))
            ratios.append(r["total_s"] / s["total_s"] if s and "total_s" in s else float("nan"))
            r[f"ratio_to_{ref}"] = ratios[-1]
        print(
            f"{r['term']:<15}{r['n_atoms']:>7}{r['dtype']:>9}{1e3 * r['total_s']:>11.1f}{r['peak_rss_mb']:>9.0f}"
            f"{ratios[0]:>9.2f}{ratios[1]:>9.2f}"
        )
    exponents = {}
    for dtype in args.dtypes:
        for kind in [k for k in order if any(r["term"] == k for r in rows)]:
            s = slope(rows, kind, dtype)
            if s is not None:
                exponents[f"{kind}:{dtype}"] = s
                sizes = [
                    r["n_atoms"] for r in rows if r["term"] == kind and r["dtype"] == dtype and "total_s" in r
                ]
                print(f"scaling exponent {kind:<15} {dtype}: time ∝ N^{s:.2f} (sizes {sizes})")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"rows": rows, "exponents": exponents}, indent=2))


if __name__ == "__main__":
    main()
