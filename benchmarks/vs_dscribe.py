"""nearsight against DScribe: SOAP and ACSF, descriptors alone and energy + forces, one core.

    .venv/bin/python benchmarks/vs_dscribe.py            # everything (~30 min on one core)
    .venv/bin/python benchmarks/vs_dscribe.py --quick    # caffeine + 192-atom water, no scaling (~2 min)
    .venv/bin/python benchmarks/vs_dscribe.py --cases 'water192/*' 'si216/soap/*' --no-scaling

Structures: caffeine (24 atoms, open boundaries; geometry from RDKit ETKDG + MMFF94, hard-coded
below), periodic water boxes of 192 and 1536 atoms (``tests/structures.py::water_box``) and
periodic diamond Si of 216 and 1728 atoms, rattled by 0.02 Å (seed 0).  Descriptors: SOAP
(r_cut 5, n_max 8, l_max 6, σ 1, GTO) and ACSF (r_cut 5, 8 G2 + 16 G4), the same parameters on
both sides.  For every structure x descriptor:

1. ``desc``: ``dscribe...create(atoms)`` against ``nearsight...compute(atoms)`` in float64 (the
   outputs are compared: max |Δ| / max |x|) and float32.  Both include the neighbour search.
2. ``forces``: energy and forces of one Behler-Parrinello network (random weights, 64-64, one per
   element).  nearsight: neighbour list + ``ForceField(model)(graph)`` (autograd).  DScribe:
   ``derivatives(atoms, attach=True)`` (analytical where DScribe allows it: SOAP without
   periodicity; numerical otherwise), the same torch network on DScribe's descriptor for
   dE/dp, and F_j = -Σ_i dE/dp_i · dp_i/dR_j.  A DScribe run whose dense derivative array would
   exceed ``--dscribe-max-gb`` is not run (the bytes are printed); one whose time, extrapolated
   from a run on a few atoms and centres, exceeds ``--dscribe-budget`` seconds is reported as that
   estimate ("~", "est").  Forces of both sides are compared.
3. ``scaling``: nearsight alone, float32, on water boxes of 10 125 and 98 304 atoms: time and
   peak RSS, and their ratios between the two sizes.

Every case runs in its own process (peak RSS, ``ru_maxrss``, is that case's alone; the RSS after
imports and structure building is reported as ``base``), single-threaded (OMP_NUM_THREADS=1,
``torch.set_num_threads(1)``; DScribe computes one structure on one core).  Timings: one
warm-up, then the best of as many repeats as fit in ``--target-s`` seconds (at least one; a
case whose warm-up took over 10 s reports that single run).  A watchdog kills a case above
``--rss-limit-gb`` or ``--case-timeout`` seconds.  Results go to
``benchmarks/results/vs_dscribe.json`` (``vs_dscribe_quick.json`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
LOAD_AT_START = list(os.getloadavg())
HIDDEN = [64, 64]
SOAP_ARGS = {"r_cut": 5.0, "n_max": 8, "l_max": 6, "sigma": 1.0, "rbf": "gto"}
# 8 G2: Gaussians every 0.64 Å from 0.5 Å to r_cut, width = spacing (nearsight's default grid).
_SPACING = (5.0 - 0.5) / 7
G2_PARAMS = [[1.0 / (2.0 * _SPACING**2), 0.5 + k * _SPACING] for k in range(8)]
# 16 G4: η for Gaussian widths r_cut/2 and r_cut/4, ζ ∈ {1, 2, 4, 16}, λ = ±1.
G4_PARAMS = [
    [eta, zeta, lam] for eta in (0.08, 0.32) for zeta in (1.0, 2.0, 4.0, 16.0) for lam in (-1.0, 1.0)
]
ACSF_ARGS = {"r_cut": 5.0, "g2_params": G2_PARAMS, "g4_params": G4_PARAMS}

# Caffeine, C8H10N4O2: RDKit 2026.9 ETKDG embedding (seed 7) of CN1C=NC2=C1C(=O)N(C(=O)N2C)C,
# relaxed with MMFF94.  Coordinates in Å.
CAFFEINE = [
    ("C", 3.3240, 0.0586, -0.2341),
    ("N", 2.0576, -0.6273, -0.1930),
    ("C", 1.8677, -1.9814, -0.2775),
    ("N", 0.5898, -2.2984, -0.2089),
    ("C", -0.0493, -1.1027, -0.0764),
    ("C", 0.8236, -0.0575, -0.0632),
    ("C", 0.4145, 1.2974, 0.0644),
    ("O", 1.2096, 2.2324, 0.0753),
    ("N", -0.9723, 1.4358, 0.1738),
    ("C", -1.9078, 0.3797, 0.1643),
    ("O", -3.1177, 0.6035, 0.2673),
    ("N", -1.4057, -0.9156, 0.0344),
    ("C", -2.3013, -2.0577, 0.0157),
    ("C", -1.5170, 2.7725, 0.3099),
    ("H", 4.1303, -0.6709, -0.3448),
    ("H", 3.3235, 0.7394, -1.0890),
    ("H", 3.4519, 0.6097, 0.7009),
    ("H", 2.6840, -2.6844, -0.3870),
    ("H", -3.3478, -1.7571, 0.1125),
    ("H", -2.0503, -2.7222, 0.8485),
    ("H", -2.1779, -2.5931, -0.9311),
    ("H", -2.2066, 2.9616, -0.5194),
    ("H", -2.0793, 2.8336, 1.2475),
    ("H", -0.7434, 3.5442, 0.3100),
]

STRUCTURES = ["caffeine", "water192", "water1536", "si216", "si1728"]
QUICK_STRUCTURES = ["caffeine", "water192"]
DESCRIPTORS = ["soap", "acsf"]
MODES = ["desc", "forces"]
IMPLS = [("dscribe", "float64"), ("nearsight", "float64"), ("nearsight", "float32")]


# -- structures and descriptors (used in the case processes) --------------------------------------


def water_box(n_side: int):
    """``tests/structures.py::water_box`` (imported by path: tests/ is not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "_nearsight_test_structures", ROOT / "tests" / "structures.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.water_box(n_side)


def build_structure(name: str):
    """One of the named structures; ``waterN`` is any n_side³ x 3 atoms, ``siN`` any 8 k³."""
    from ase import Atoms
    from ase.build import bulk

    if name == "caffeine":
        return Atoms([s for s, *_ in CAFFEINE], positions=[xyz for _, *xyz in CAFFEINE])
    if name.startswith("water"):
        n = int(name[5:])
        side = round((n / 3) ** (1 / 3))
        if 3 * side**3 != n:
            raise ValueError(f"{name}: a water box has 3 n_side³ atoms")
        return water_box(side)
    if name.startswith("si"):
        n = int(name[2:])
        k = round((n / 8) ** (1 / 3))
        if 8 * k**3 != n:
            raise ValueError(f"{name}: a cubic diamond Si supercell has 8 k³ atoms")
        atoms = bulk("Si", "diamond", a=5.43, cubic=True) * (k, k, k)
        atoms.rattle(0.02, seed=0)
        return atoms
    raise ValueError(f"unknown structure {name!r}")


def species_of(atoms) -> list[int]:
    return sorted(set(int(z) for z in atoms.numbers))


def descriptor_config(kind: str, periodic: bool) -> dict:
    args = SOAP_ARGS if kind == "soap" else ACSF_ARGS
    return {"type": kind, **args, "periodic": periodic}


def dscribe_descriptor(kind: str, species: list[int], periodic: bool):
    from dscribe.descriptors import ACSF, SOAP

    if kind == "soap":
        return SOAP(species=species, periodic=periodic, **SOAP_ARGS)
    return ACSF(species=species, periodic=periodic, **ACSF_ARGS)


def make_model(kind: str, species: list[int], periodic: bool, dtype):
    """The Behler-Parrinello network both sides use (seeded, so identical in every process)."""
    import torch

    from nearsight.models.bpnn import BehlerParrinello

    torch.manual_seed(0)
    model = BehlerParrinello(species, descriptor_config(kind, periodic), hidden=HIDDEN).to(dtype).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn, target_s: float) -> tuple[object, dict]:
    """One warm-up, then the best of repeats filling ``target_s`` (the warm-up alone if > 10 s)."""
    t0 = time.perf_counter()
    out = fn()
    warm = time.perf_counter() - t0
    if warm > 10.0:
        return out, {"time_s": warm, "median_s": warm, "repeats": 0, "warmup_s": warm}
    n = max(1, min(50, math.ceil(target_s / max(warm, 1e-6))))
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return out, {"time_s": min(times), "median_s": statistics.median(times), "repeats": n, "warmup_s": warm}


# -- one case, in its own process -------------------------------------------------------------------


def dscribe_forces_setup(spec: dict, atoms, desc):
    import numpy as np
    import torch

    from nearsight import keys

    periodic = bool(atoms.pbc.any())
    model = make_model(spec["descriptor"], species_of(atoms), periodic, torch.float64)
    model.features = lambda graph: graph["features"]  # the same network on DScribe's descriptor
    numbers = torch.as_tensor(atoms.numbers, dtype=torch.int64)
    method = desc.validate_derivatives_method("auto", True)

    def run(centers=None, include=None):
        dp, p = desc.derivatives(
            atoms, centers=centers, include=include, method=method, attach=True, n_jobs=1
        )  # dp: [n_centres, n_included, 3, n_features]
        with torch.enable_grad():
            feats = torch.from_numpy(p).requires_grad_(True)
            energy = model({keys.ATOMIC_NUMBERS: numbers[: p.shape[0]], "features": feats}).sum()
            (de_dp,) = torch.autograd.grad(energy, feats)
        g = de_dp.numpy()
        n_c, n_i = dp.shape[0], dp.shape[1]
        # F_j = -Σ_i Σ_f dE/dp_if dp_if/dR_j: one batched mat-vec, no copy of dp
        forces = -np.matmul(dp.reshape(n_c, n_i * 3, -1), g[:, :, None]).sum(0).reshape(n_i, 3)
        return float(energy), forces

    return run, method


def run_dscribe(spec: dict, atoms, out_dir: Path | None) -> dict:
    import numpy as np

    desc = dscribe_descriptor(spec["descriptor"], species_of(atoms), bool(atoms.pbc.any()))
    n, n_feat = len(atoms), desc.get_number_of_features()
    res: dict = {"n_features": n_feat, "base_rss_mb": max_rss_mb()}
    if spec["mode"] == "desc":
        out, t = timed(lambda: desc.create(atoms, n_jobs=1), spec["target_s"])
        res.update(t)
        if out_dir:
            np.save(out_dir / "dscribe.npy", out)
        return res
    run, method = dscribe_forces_setup(spec, atoms, desc)
    need = n * n * 3 * n_feat * 8
    res.update(method=method, derivative_bytes=need)
    # extrapolate from a run on a few centres and included atoms (cost ∝ centres x included atoms)
    n_c = n if n <= 256 else 64
    m = 1
    while True:
        t0 = time.perf_counter()
        run(centers=list(range(n_c)), include=list(range(m)))
        t_pilot = time.perf_counter() - t0
        if t_pilot > 0.3 or m >= n or need > spec["max_bytes"]:
            break
        m = min(n, 4 * m)
    estimate = t_pilot * (n / n_c) * (n / m)
    res.update(estimate_s=estimate, pilot={"centres": n_c, "included": m, "time_s": t_pilot})
    if need > spec["max_bytes"]:
        res.update(status="infeasible", reason=f"derivative array {need / 1e9:.1f} GB")
        return res
    if estimate > spec["budget_s"]:
        res.update(status="estimated", reason=f"estimated {estimate:.0f} s > budget {spec['budget_s']:.0f} s")
        return res
    out, t = timed(lambda: run(), spec["target_s"])
    res.update(t)
    if out_dir:
        np.save(out_dir / "dscribe.npy", out[1])
        res["energy"] = out[0]
    return res


def run_nearsight(spec: dict, atoms, out_dir: Path | None) -> dict:
    import numpy as np
    import torch

    from nearsight import keys
    from nearsight.data.neighbours import atoms_to_graph
    from nearsight.descriptors import build_descriptor
    from nearsight.models.forcefield import ForceField

    dtype = getattr(torch, spec["dtype"])
    periodic = bool(atoms.pbc.any())
    species = species_of(atoms)
    res: dict = {"base_rss_mb": max_rss_mb()}
    if spec["mode"] == "desc":
        desc = build_descriptor(descriptor_config(spec["descriptor"], periodic), species).eval()
        res["n_features"] = desc.n_features
        out, t = timed(lambda: desc.compute(atoms, dtype), spec["target_s"])
        res.update(t)
        if out_dir:
            np.save(out_dir / f"nearsight_{spec['dtype']}.npy", out)
        return res
    model = make_model(spec["descriptor"], species, periodic, dtype)
    ff = ForceField(model).eval()
    res["n_features"] = model.descriptor.n_features

    def step():
        graph = atoms_to_graph(atoms, ff.cutoff, dtype)
        out = ff(graph, forces=True)
        return float(out[keys.ENERGY].sum()), out[keys.FORCES].detach(), int(graph[keys.EDGE_INDEX].shape[1])

    out, t = timed(step, spec["target_s"])
    res.update(t, n_edges=out[2])
    if out_dir:
        np.save(out_dir / f"nearsight_{spec['dtype']}.npy", out[1].double().numpy())
        res["energy"] = out[0]
    return res


def child(spec: dict) -> None:
    if spec["impl"] == "nearsight" or spec["mode"] == "forces":
        import torch

        torch.set_num_threads(1)
    atoms = build_structure(spec["structure"])
    out_dir = Path(spec["out_dir"]) if spec.get("out_dir") else None
    run = run_dscribe if spec["impl"] == "dscribe" else run_nearsight
    res = run(spec, atoms, out_dir)
    res.update(n_atoms=len(atoms), peak_rss_mb=max_rss_mb(), status=res.get("status", "ok"))
    print(json.dumps(res))


# -- the driver -------------------------------------------------------------------------------------


def run_case(spec: dict, rss_limit_gb: float, timeout_s: float) -> dict:
    """Run one case in a fresh process under a memory and time watchdog."""
    import psutil

    env = os.environ.copy()
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = "1"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), *filter(None, [env.get("PYTHONPATH")])])
    base = {k: spec[k] for k in ("structure", "descriptor", "mode", "impl", "dtype")}
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)],
            stdout=out,
            stderr=err,
            env=env,
            text=True,
        )
        ps = psutil.Process(proc.pid)
        seen, killed = 0.0, None
        while proc.poll() is None:
            try:
                seen = max(seen, ps.memory_info().rss / 2**20)
            except psutil.Error:
                pass
            if seen > rss_limit_gb * 1024:
                killed = f"killed: RSS above {rss_limit_gb:g} GB"
            elif time.perf_counter() - t0 > timeout_s:
                killed = f"killed: over {timeout_s:.0f} s"
            if killed:
                proc.kill()
                proc.wait()
                break
            time.sleep(0.05)
        wall = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if killed or proc.returncode:
        tail = stderr.strip().splitlines()[-3:]
        return {
            **base,
            "status": killed or f"failed (exit {proc.returncode})",
            "error": " | ".join(tail),
            "peak_rss_mb": seen,
            "process_wall_s": wall,
        }
    res = json.loads(stdout.strip().splitlines()[-1])
    return {**base, **res, "process_wall_s": wall}


def compare(a, b, exclude=None) -> float:
    """max |a - b| / max |a|, over the rows not in ``exclude``."""
    import numpy as np

    a, b = np.asarray(a), np.asarray(b)
    scale = float(np.abs(a).max()) or 1.0
    if exclude is not None and len(exclude):
        keep = np.setdiff1d(np.arange(a.shape[0]), exclude)
        a, b = a[keep], b[keep]
    return float(np.abs(a - b).max()) / scale if a.size else 0.0


def atoms_at_soap_cutoff(structure: str, tol: float = 2e-4):
    """Atoms of a pair closer than ``tol`` to SOAP's neighbour cutoff r_cut + σ √(-2 ln 10⁻³).

    The GTO SOAP (DScribe's, and so nearsight's) drops a neighbour's Gaussian there, where it is
    10⁻³ of its peak: the descriptor, and the energy, jump when a pair crosses it.  DScribe's
    numerical derivatives (central differences, step ~10⁻⁴ Å) that straddle the crossing pick up
    jump / 2h; nearsight's autograd forces are the derivative of the branch the structure is on.
    Forces of these atoms are left out of the comparison (and counted).
    """
    import numpy as np
    from ase.neighborlist import neighbor_list

    atoms = build_structure(structure)
    rc = SOAP_ARGS["r_cut"] + SOAP_ARGS["sigma"] * math.sqrt(-2.0 * math.log(1e-3))
    i, j, d = neighbor_list("ijd", atoms, rc + 2 * tol)
    near = np.abs(d - rc) < tol
    return np.unique(np.concatenate([i[near], j[near]]))


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def source_hashes() -> dict:
    """Hashes of the nearsight sources measured, so results can be tied to a version."""
    import hashlib

    files = ["descriptors/soap.py", "descriptors/acsf.py", "descriptors/base.py", "models/bpnn.py"]
    files += ["models/forcefield.py", "data/neighbours.py"]
    out = {}
    for name in files:
        path = ROOT / "src" / "nearsight" / name
        if path.exists():
            out[name] = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return out


def selected(case_id: str, patterns: list[str] | None) -> bool:
    if not patterns:
        return True
    parts = case_id.split("/")
    return any(fnmatch.fnmatch(case_id, p) or p in parts for p in patterns)


def fmt_time(r: dict | None) -> str:
    if r is None:
        return "-"
    if r["status"] == "ok":
        t = r["time_s"]
        return f"{t * 1e3:.1f}ms" if t < 1 else f"{t:.2f}s"
    if r["status"] == "estimated":
        return f"~{r['estimate_s']:.0f}s est"
    if r["status"] == "infeasible":
        return f"({r['derivative_bytes'] / 1e9:.0f} GB)"
    return r["status"].split(":")[0]


def ds_time(r: dict | None) -> float | None:
    """DScribe's measured time, or its estimate where it was not run."""
    if r is None:
        return None
    if r["status"] == "ok":
        return r["time_s"]
    if r["status"] in ("estimated", "infeasible"):
        return r.get("estimate_s")
    return None


def ratio_str(num: float | None, den: dict | None, estimated: bool) -> str:
    if num is None or den is None or den["status"] != "ok":
        return "-"
    x = num / den["time_s"]
    return ("~" if estimated else "") + (f"{x:.0f}x" if x >= 100 else f"{x:.2f}x")


def comparison_table(rows: list[dict], mode: str) -> list[str]:
    title = {
        "desc": "Descriptor only: DScribe create() vs nearsight compute(), neighbour search included",
        "forces": f"Energy + forces, Behler-Parrinello {'-'.join(map(str, HIDDEN))} (DScribe: derivatives() + "
        "the same network + chain rule)",
    }[mode]
    lines = [title]
    head = (
        f"{'structure':<10}{'desc':<5}{'atoms':>6}{'feats':>6}{'DScribe':>13}{'ns f64':>10}{'ns f32':>10}"
        f"{'x f64':>10}{'x f32':>10}{'peak RSS MB DS/f64/f32':>24}{'rel diff':>10}"
    )
    if mode == "forces":
        head += "  DScribe method"
    lines.append(head)
    for r in rows:
        if r["mode"] != mode:
            continue
        ds, n64, n32 = r["dscribe"], r["nearsight_float64"], r["nearsight_float32"]
        est = ds is not None and ds["status"] != "ok"
        t_ds = ds_time(ds)
        rss = "/".join(f"{x['peak_rss_mb']:.0f}" if x else "-" for x in (ds, n64, n32))
        diff = f"{r['rel_diff_f64']:.1e}" if r.get("rel_diff_f64") is not None else "-"
        n_feat = next((x["n_features"] for x in (n64, n32, ds) if x and "n_features" in x), 0)
        n_atoms = next((x["n_atoms"] for x in (n64, n32, ds) if x and "n_atoms" in x), 0)
        line = (
            f"{r['structure']:<10}{r['descriptor']:<5}{n_atoms:>6}{n_feat:>6}{fmt_time(ds):>13}"
            f"{fmt_time(n64):>10}{fmt_time(n32):>10}{ratio_str(t_ds, n64, est):>10}{ratio_str(t_ds, n32, est):>10}"
            f"{rss:>24}{diff:>10}"
        )
        if mode == "forces" and ds:
            line += f"  {ds.get('method', '-')}"
            if ds["status"] == "infeasible":
                line += f", not run: {ds['reason']}"
            elif ds["status"] == "estimated":
                line += ", not run: extrapolated"
        lines.append(line)
    return lines


def scaling_lines(scaling: list[dict]) -> list[str]:
    lines = ["Scaling, nearsight float32 on water boxes (one core)"]
    lines.append(
        f"{'desc':<5}{'mode':<7}{'atoms':>7}{'time s':>9}{'atoms/s':>9}{'peak MB':>9}{'base MB':>9}{'edges':>11}  status"
    )
    for r in scaling:
        ok = r["status"] == "ok"
        t = f"{r['time_s']:.2f}" if ok else "-"
        aps = f"{r['n_atoms'] / r['time_s']:.0f}" if ok else "-"
        edges = f"{r['n_edges']}" if ok and "n_edges" in r else "-"
        base = f"{r['base_rss_mb']:.0f}" if "base_rss_mb" in r else "-"
        lines.append(
            f"{r['descriptor']:<5}{r['mode']:<7}{r.get('n_atoms', 0):>7}{t:>9}{aps:>9}{r['peak_rss_mb']:>9.0f}"
            f"{base:>9}{edges:>11}  {r['status']}"
        )
    return lines


def scaling_ratios(scaling: list[dict]) -> list[dict]:
    """Time and RSS ratios between the smallest and the largest size that ran, per descriptor/mode."""
    out = []
    for kind in DESCRIPTORS:
        for mode in MODES:
            ok = [r for r in scaling if r["descriptor"] == kind and r["mode"] == mode and r["status"] == "ok"]
            if len(ok) < 2:
                continue
            small, large = min(ok, key=lambda r: r["n_atoms"]), max(ok, key=lambda r: r["n_atoms"])
            d_small = small["peak_rss_mb"] - small["base_rss_mb"]
            d_large = large["peak_rss_mb"] - large["base_rss_mb"]
            out.append(
                {
                    "descriptor": kind,
                    "mode": mode,
                    "atoms": [small["n_atoms"], large["n_atoms"]],
                    "atom_ratio": large["n_atoms"] / small["n_atoms"],
                    "time_ratio": large["time_s"] / small["time_s"],
                    "peak_rss_ratio": large["peak_rss_mb"] / small["peak_rss_mb"],
                    "rss_above_base_ratio": d_large / d_small if d_small > 0 else None,
                }
            )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="caffeine and 192-atom water only, no scaling")
    parser.add_argument(
        "--cases",
        nargs="+",
        default=None,
        help="case ids 'structure/descriptor/mode' (e.g. water192/soap/forces, scaling/water98304/acsf/desc); "
        "glob patterns or single parts (soap, si216, forces) select",
    )
    parser.add_argument("--no-scaling", action="store_true")
    parser.add_argument(
        "--scaling-sides", type=int, nargs="+", default=[15, 32], help="water n_side, 3 n³ atoms"
    )
    parser.add_argument(
        "--fallback-sides",
        type=int,
        nargs="*",
        default=[25, 20],
        help="tried in turn when the largest scaling size fails (memory or time)",
    )
    parser.add_argument("--target-s", type=float, default=1.5, help="time of the repeats per case")
    parser.add_argument("--dscribe-budget", type=float, default=None, help="s; default 300 (30 with --quick)")
    parser.add_argument("--dscribe-max-gb", type=float, default=6.0, help="largest dense derivative array")
    parser.add_argument("--rss-limit-gb", type=float, default=19.0)
    parser.add_argument("--case-timeout", type=float, default=900.0, help="s, per process")
    parser.add_argument("--json", default=None)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(json.loads(args.child))
        return
    budget = args.dscribe_budget if args.dscribe_budget is not None else (30.0 if args.quick else 300.0)
    structures = QUICK_STRUCTURES if args.quick else STRUCTURES
    json_path = (
        Path(args.json)
        if args.json
        else RESULTS / ("vs_dscribe_quick.json" if args.quick else "vs_dscribe.json")
    )
    common = {"target_s": args.target_s, "budget_s": budget, "max_bytes": args.dscribe_max_gb * 1e9}

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    import numpy as np

    rows: list[dict] = []
    for structure in structures:
        for kind in DESCRIPTORS:
            for mode in MODES:
                case_id = f"{structure}/{kind}/{mode}"
                if not selected(case_id, args.cases):
                    continue
                row: dict = {"case": case_id, "structure": structure, "descriptor": kind, "mode": mode}
                with tempfile.TemporaryDirectory() as tmp:
                    for impl, dtype in IMPLS:
                        spec = {"structure": structure, "descriptor": kind, "mode": mode, "impl": impl}
                        spec.update(common, dtype=dtype, out_dir=tmp)
                        r = run_case(spec, args.rss_limit_gb, args.case_timeout)
                        row[impl if impl == "dscribe" else f"{impl}_{dtype}"] = r
                        log(f"{case_id:<24} {impl:<9} {dtype:<8} {fmt_time(r):>12}  ({r['status']})")
                    files = {p.stem: np.load(p) for p in Path(tmp).glob("*.npy")}
                ref = files.get("dscribe")
                if ref is not None and "nearsight_float64" in files:
                    row["rel_diff_f64"] = compare(ref, files["nearsight_float64"])
                    if mode == "forces" and kind == "soap":
                        at_cut = atoms_at_soap_cutoff(structure)
                        row["atoms_at_cutoff"] = at_cut.tolist()
                        if at_cut.size:
                            row["rel_diff_f64_all_atoms"] = row["rel_diff_f64"]
                            row["rel_diff_f64"] = compare(ref, files["nearsight_float64"], exclude=at_cut)
                if ref is not None and "nearsight_float32" in files:
                    row["rel_diff_f32"] = compare(ref, files["nearsight_float32"])
                if "nearsight_float64" in files and "nearsight_float32" in files:
                    row["rel_diff_f32_vs_f64"] = compare(
                        files["nearsight_float64"], files["nearsight_float32"]
                    )
                energies = [row[k].get("energy") for k in ("dscribe", "nearsight_float64")]
                if None not in energies:
                    row["energy_rel_diff_f64"] = abs(energies[0] - energies[1]) / max(abs(energies[0]), 1e-30)
                rows.append(row)

    scaling: list[dict] = []
    if not (args.quick or args.no_scaling):
        sides = sorted(args.scaling_sides)
        for kind in DESCRIPTORS:
            for mode in MODES:
                ladder = [[s] for s in sides[:-1]] + [[sides[-1], *sorted(args.fallback_sides, reverse=True)]]
                for tries in ladder:
                    for side in tries:
                        structure = f"water{3 * side**3}"
                        case_id = f"scaling/{structure}/{kind}/{mode}"
                        if not selected(case_id, args.cases):
                            break
                        spec = {"structure": structure, "descriptor": kind, "mode": mode, "impl": "nearsight"}
                        spec.update(common, dtype="float32", out_dir=None)
                        r = run_case(spec, args.rss_limit_gb, args.case_timeout)
                        r.setdefault("n_atoms", 3 * side**3)
                        scaling.append({"case": case_id, **r})
                        log(
                            f"{case_id:<32} {fmt_time(r):>10}  peak {r['peak_rss_mb']:.0f} MB  ({r['status']})"
                        )
                        if r["status"] == "ok":
                            break

    lines: list[str] = []
    for mode in MODES:
        if any(r["mode"] == mode for r in rows):
            lines += comparison_table(rows, mode) + [""]
    # DScribe's largest derivative run, for cases it could not run
    largest: dict = {}
    for r in rows:
        ds = r.get("dscribe")
        if r["mode"] == "forces" and ds and ds["status"] == "ok":
            key = (r["descriptor"], r["structure"].rstrip("0123456789"))
            if key not in largest or ds["n_atoms"] > largest[key]["n_atoms"]:
                largest[key] = {"structure": r["structure"], "n_atoms": ds["n_atoms"], "time_s": ds["time_s"]}
    notes = []
    for r in rows:
        ds, n64 = r.get("dscribe"), r.get("nearsight_float64")
        if r["mode"] != "forces" or not ds or ds["status"] == "ok" or not n64 or n64["status"] != "ok":
            continue
        big = largest.get((r["descriptor"], r["structure"].rstrip("0123456789")))
        note = f"{r['case']}: DScribe not run ({ds.get('reason', ds['status'])}"
        if ds["status"] == "infeasible" and ds.get("estimate_s"):
            note += f"; it would take ~{ds['estimate_s']:.0f} s"
        note += ")"
        if big:
            per_atom = big["time_s"] / big["n_atoms"]
            ns_per_atom = n64["time_s"] / n64["n_atoms"]
            note += (
                f"; its largest run, {big['structure']}, took {big['time_s']:.1f} s "
                f"({per_atom * 1e3:.1f} ms/atom); nearsight f64 here {ns_per_atom * 1e3:.3f} ms/atom, "
                f"{per_atom / ns_per_atom:.0f}x per atom (DScribe's per-atom cost grows with N)"
            )
        r["dscribe_largest_run"] = big
        notes.append(note)
    for r in rows:
        if r.get("rel_diff_f64_all_atoms") is not None:
            notes.append(
                f"{r['case']}: rel diff leaves out {len(r['atoms_at_cutoff'])} atoms of pairs within 2e-4 Å of "
                f"the SOAP cutoff r_cut + 3.72 Å (with them: {r['rel_diff_f64_all_atoms']:.1e}); there the "
                "descriptor jumps and DScribe's finite differences straddle the jump"
            )
        ds = r.get("dscribe")
        if r["mode"] == "forces" and ds and ds["status"] == "ok" and ds.get("estimate_s"):
            notes.append(
                f"{r['case']}: DScribe measured {ds['time_s']:.2f} s, extrapolated from its pilot run "
                f"{ds['estimate_s']:.2f} s (check of the estimates above)"
            )
    lines += notes + ([""] if notes else [])
    ratios = scaling_ratios(scaling)
    if scaling:
        lines += scaling_lines(scaling)
        for s in ratios:
            above = f"{s['rss_above_base_ratio']:.2f}" if s["rss_above_base_ratio"] else "-"
            lines.append(
                f"  {s['descriptor']} {s['mode']}: {s['atoms'][0]} -> {s['atoms'][1]} atoms (x{s['atom_ratio']:.2f}): "
                f"time x{s['time_ratio']:.2f}, peak RSS x{s['peak_rss_ratio']:.2f}, RSS above base x{above}"
            )
        lines.append("")

    # goals of the issue
    def speedups(mode: str, impl: str, measured_only: bool) -> list[float]:
        out = []
        for r in rows:
            ds, ns = r.get("dscribe"), r.get(impl)
            if r["mode"] != mode or not ns or ns["status"] != "ok":
                continue
            if ds and (ds["status"] == "ok" or not measured_only):
                t = ds_time(ds)
                if t:
                    out.append(t / ns["time_s"])
        return out

    goals = {
        "forces_speedup_min_measured_f64": min(speedups("forces", "nearsight_float64", True), default=None),
        "forces_speedup_min_incl_estimates_f64": min(
            speedups("forces", "nearsight_float64", False), default=None
        ),
        "desc_speedup_min_f64": min(speedups("desc", "nearsight_float64", True), default=None),
        "desc_speedup_min_f32": min(speedups("desc", "nearsight_float32", True), default=None),
        "max_rel_diff_f64": max(
            (r["rel_diff_f64"] for r in rows if r.get("rel_diff_f64") is not None), default=None
        ),
    }
    g = goals
    if g["forces_speedup_min_measured_f64"] is not None:
        lines.append(
            f"Goal >= 100x DScribe on the derivative path: min speed-up f64 {g['forces_speedup_min_measured_f64']:.0f}x "
            f"(measured DScribe runs), {g['forces_speedup_min_incl_estimates_f64']:.0f}x including estimates: "
            f"{'met' if g['forces_speedup_min_measured_f64'] >= 100 else 'NOT met'}"
        )
    if g["desc_speedup_min_f64"] is not None:
        lines.append(
            f"Goal no slower than DScribe without derivatives: min speed-up f64 {g['desc_speedup_min_f64']:.2f}x, "
            f"f32 {g['desc_speedup_min_f32']:.2f}x: "
            f"{'met' if g['desc_speedup_min_f64'] >= 1 else 'NOT met in float64'}"
            f"{'' if g['desc_speedup_min_f32'] >= 1 else ', NOT met in float32'}"
        )
    if ratios:
        worst = max((s["rss_above_base_ratio"] or 0) / s["atom_ratio"] for s in ratios)
        lines.append(
            f"Goal memory linear in N: largest (peak RSS - base) ratio / atom ratio {worst:.2f} (<= 1: linear or better)"
        )
    if g["max_rel_diff_f64"] is not None:
        lines.append(
            f"Correctness: largest max|Δ|/max|x| nearsight f64 vs DScribe {g['max_rel_diff_f64']:.1e}"
        )
    print("\n".join(lines))

    from importlib.metadata import version

    import torch

    record = {
        "machine": {
            "cpu": cpu_name(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "dscribe": version("dscribe"),
            "threads": 1,
            "date": time.strftime("%Y-%m-%d %H:%M:%S"),
            # other work on the machine inflates both sides' timings; recorded to judge a run by
            "load_average_at_start": LOAD_AT_START,
            "load_average_at_end": list(os.getloadavg()),
        },
        "source_sha256": source_hashes(),
        "settings": {
            "soap": SOAP_ARGS,
            "acsf": ACSF_ARGS,
            "hidden": HIDDEN,
            "dscribe_budget_s": budget,
            "dscribe_max_gb": args.dscribe_max_gb,
            "target_s": args.target_s,
            "quick": args.quick,
        },
        "cases": rows,
        "scaling": scaling,
        "scaling_ratios": ratios,
        "goals": goals,
        "table": lines,
    }
    json_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = json_path.with_name(json_path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(record, indent=2))
    os.replace(tmp, json_path)
    if args.quick:
        summary = {
            r["case"]: {
                "x_f64": round(ds_time(r["dscribe"]) / r["nearsight_float64"]["time_s"], 2)
                if ds_time(r.get("dscribe")) and r["nearsight_float64"]["status"] == "ok"
                else None,
                "x_f32": round(ds_time(r["dscribe"]) / r["nearsight_float32"]["time_s"], 2)
                if ds_time(r.get("dscribe")) and r["nearsight_float32"]["status"] == "ok"
                else None,
                "dscribe": r["dscribe"]["status"] if r.get("dscribe") else None,
                "rel_diff_f64": r.get("rel_diff_f64"),
            }
            for r in rows
        }
        print(json.dumps({"quick": True, "speedups": summary, "goals": goals, "json": str(json_path)}))


if __name__ == "__main__":
    main()
