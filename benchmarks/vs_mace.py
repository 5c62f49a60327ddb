"""nearsight's equivariant potential vs MACE (mace-torch) at matched sizes, energy + forces on CPU.

    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python benchmarks/vs_mace.py [--quick] [--mace-python PY]

Sizes (both codes, random weights): *medium* = 128x0e + 128x1o hidden, max_ell 3, correlation 3,
2 layers, r_max 5 Å, 8 Bessel functions, radial MLP [64, 64, 64]; *small* = the same with 32
channels.  Systems: 192- and 1536-atom water boxes, 216- and 1728-atom diamond Si; float32 and
float64.  Each measurement runs in a fresh subprocess with one thread (``torch.set_num_threads(1)``,
``OMP_NUM_THREADS=1``); neighbour lists are built before timing (both codes), the timed call is
energy + forces (one backward), parameters do not require gradients.  Peak memory is the growth of
the process's peak RSS (``ru_maxrss``) over the evaluations.

mace-torch pins e3nn 0.4.4, nearsight uses e3nn 0.6.0, so MACE runs in its own virtual
environment: ``python -m venv /tmp/macevenv && /tmp/macevenv/bin/pip install torch==2.13.0
mace-torch==0.3.16`` (``--mace-python`` or ``$NEARSIGHT_MACE_PYTHON``; default /tmp/macevenv).

Allocators (``--allocators``; both codes run under the same one in each comparison):
``glibc`` -- glibc malloc with the mmap/trim thresholds that ``import nearsight`` sets
(:mod:`nearsight._malloc`), given to MACE's process through ``GLIBC_TUNABLES``;
``glibc-default`` -- glibc's own thresholds for both (nearsight with ``NEARSIGHT_MALLOC_TUNING=0``);
``tcmalloc`` -- ``LD_PRELOAD`` of libtcmalloc_minimal (Debian: ``apt-get install
libtcmalloc-minimal4``; ``--tcmalloc PATH``).

Accuracy-matched (``--sizes rmd17``, with ``--systems ethanol water192``, say): each code runs the
model that reaches MACE's published 50-frame rMD17 ethanol force error, 32.6 meV/Å.  MACE: the
paper's model, 256x0e + 256x1o + 256x2e; nearsight: a committee of four models of
``examples/ethanol_equivariant.yaml`` (32 channels, l_max 2, element_mix), evaluated one after the
other and averaged, as ``EnsembleCalculator`` does (31.4 meV/Å over four 50-frame draws).
System ``ethanol`` is the isolated 9-atom molecule.

``--quick`` runs only 192-atom water, float32, medium, under glibc and (when found) tcmalloc,
and ends with one JSON line holding ``ratio_vs_mace`` (nearsight atoms/s ÷ MACE atoms/s, glibc)
and ``ratio_vs_mace_tcmalloc``.
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

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SIZES = {"small": 32, "medium": 128}
# accuracy-matched sizes: what each code runs to reach MACE's published 50-frame rMD17 ethanol
# accuracy (F MAE 32.6 meV/Å).  MACE: the paper's rMD17 model, 256x0e + 256x1o + 256x2e.
# nearsight: a committee of four models of examples/ethanol_equivariant.yaml (32 channels, l_max 2,
# element_mix; 31.4 meV/Å over four draws, benchmarks/RESULTS_equivariant.md), evaluated one
# member after the other as EnsembleCalculator does.
MATCHED = {
    "rmd17": {
        "mace": {"channels": 256, "max_L": 2},
        "nearsight": {"members": 4, "channels": 32, "l_max": 2, "element_mix": True},
    }
}
SYSTEMS = ("water192", "water1536", "si216", "si1728")  # the default sweep; also: ethanol (9 atoms)
ALLOCATORS = ("glibc", "glibc-default", "tcmalloc")
TCMALLOC_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4",
    "/usr/lib/aarch64-linux-gnu/libtcmalloc_minimal.so.4",
    "/usr/lib64/libtcmalloc_minimal.so.4",
)


# ------------------------------------------------------------------ structures (ase only: both venvs)
def water_box(n_side: int, density: float = 1.0, seed: int = 0):
    """``n_side³`` randomly oriented H2O on a cubic lattice at ``density`` g/cm³, periodic."""
    from ase import Atoms
    from ase.build import molecule

    rng = np.random.default_rng(seed)
    n = n_side**3
    length = (n * 18.015 / 0.602214 / density) ** (1.0 / 3.0)
    spacing = length / n_side
    h2o = molecule("H2O")
    h2o.positions -= h2o.positions[0]
    atoms = Atoms(cell=[length] * 3, pbc=True)
    for idx in np.ndindex(n_side, n_side, n_side):
        q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        centre = (np.array(idx) + 0.5) * spacing + rng.uniform(-0.2, 0.2, 3)
        atoms += Atoms(h2o.numbers, positions=h2o.positions @ q.T + centre)
    return atoms


def structure(name: str):
    from ase.build import bulk, molecule

    if name == "ethanol":  # the rMD17 molecule, not periodic
        return molecule("CH3CH2OH")
    if name.startswith("water"):
        return water_box({"water192": 4, "water1536": 8}[name])
    atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat({"si216": 3, "si1728": 6}[name])
    atoms.rattle(0.05, seed=0)
    return atoms


def mean_neighbours(atoms, r_max: float) -> float:
    from ase.neighborlist import neighbor_list

    i = neighbor_list("i", atoms, r_max)
    return len(i) / len(atoms)


# ------------------------------------------------------------------ timing
def _time(fn, min_repeats: int, min_seconds: float) -> float:
    fn()  # warm-up (allocations, first-call costs)
    times = []
    start = time.perf_counter()
    while len(times) < min_repeats or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def worker(code: str, system: str, dtype_name: str, size: str, repeats: int, seconds: float) -> dict:
    import torch

    torch.set_num_threads(1)
    dtype = getattr(torch, dtype_name)
    torch.set_default_dtype(dtype)
    torch.manual_seed(0)
    atoms = structure(system)
    species = sorted(set(int(z) for z in atoms.numbers))
    r_max = 5.0
    avg = mean_neighbours(atoms, r_max)
    if size in MATCHED:
        spec = dict(MATCHED[size][code])
    else:
        spec = {"channels": SIZES[size]} if code == "nearsight" else {"channels": SIZES[size], "max_L": 1}
    if code == "nearsight":
        sys.path.insert(0, str(ROOT / "src"))
        from nearsight.data.neighbours import atoms_to_graph
        from nearsight.models.equivariant import EquivariantPotential
        from nearsight.models.forcefield import ForceField

        members = []
        for _ in range(spec.pop("members", 1)):
            model = EquivariantPotential.from_preset("medium", species, cutoff=r_max, **spec).to(dtype)
            model.set_statistics({}, 1.0, avg)
            for p in model.parameters():
                p.requires_grad_(False)
            members.append(ForceField(model).eval())
        graph = atoms_to_graph(atoms, r_max, dtype)

        def run():
            outs = [ff(graph, forces=True) for ff in members]
            energy = sum(float(out["energy"].detach().sum()) for out in outs) / len(outs)
            return energy, torch.stack([out["forces"] for out in outs]).mean(0)
    else:
        from e3nn import o3
        from mace import data as mace_data
        from mace import modules
        from mace.tools import torch_geometric, utils

        channels = spec["channels"]
        hidden = " + ".join(f"{channels}x{l}{'e' if l % 2 == 0 else 'o'}" for l in range(spec["max_L"] + 1))
        model = modules.MACE(
            r_max=r_max,
            num_bessel=8,
            num_polynomial_cutoff=5,
            max_ell=3,
            interaction_cls=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
            interaction_cls_first=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
            num_interactions=2,
            num_elements=len(species),
            hidden_irreps=o3.Irreps(hidden),
            MLP_irreps=o3.Irreps("16x0e"),
            atomic_energies=np.zeros(len(species)),
            avg_num_neighbors=avg,
            atomic_numbers=species,
            correlation=3,
            gate=torch.nn.functional.silu,
            radial_MLP=[64, 64, 64],
        ).to(dtype)
        for p in model.parameters():
            p.requires_grad_(False)
        model.eval()
        z_table = utils.AtomicNumberTable(species)
        config = mace_data.config_from_atoms(atoms)
        ad = mace_data.AtomicData.from_config(config, z_table=z_table, cutoff=r_max)
        batch = next(iter(torch_geometric.dataloader.DataLoader([ad], batch_size=1))).to_dict()

        def run():
            out = model(dict(batch), compute_force=True, training=False)
            return float(out["energy"].sum()), out["forces"]

    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = _time(run, repeats, seconds)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    energy, forces = run()
    return {
        "code": code,
        "system": system,
        "n_atoms": len(atoms),
        "dtype": dtype_name,
        "size": size,
        "seconds": t,
        "atoms_per_s": len(atoms) / t,
        "peak_mb": (peak - base) / 1024.0,
        "finite": bool(np.isfinite(energy) and torch.isfinite(forces).all()),
        "avg_neighbours": avg,
    }


def allocator_env(code: str, allocator: str, tcmalloc: str | None) -> dict:
    """Environment variables that put ``code``'s process under ``allocator``."""
    if allocator == "tcmalloc":
        if not tcmalloc:
            raise RuntimeError("tcmalloc requested but no libtcmalloc_minimal found: pass --tcmalloc PATH")
        return {"LD_PRELOAD": tcmalloc}
    if allocator == "glibc-default":
        return {"NEARSIGHT_MALLOC_TUNING": "0"}
    if code == "mace":  # the thresholds nearsight sets at import, through glibc's own tunables
        sys.path.insert(0, str(ROOT / "src"))
        from nearsight._malloc import MMAP_THRESHOLD, TRIM_THRESHOLD

        return {
            "GLIBC_TUNABLES": f"glibc.malloc.mmap_threshold={MMAP_THRESHOLD}:glibc.malloc.trim_threshold={TRIM_THRESHOLD}"
        }
    return {}


def find_tcmalloc() -> str | None:
    return next((path for path in TCMALLOC_CANDIDATES if Path(path).exists()), None)


def measure(
    code: str,
    python: str,
    system: str,
    dtype: str,
    size: str,
    repeats: int,
    seconds: float,
    allocator: str = "glibc",
    tcmalloc: str | None = None,
) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    for key in ("LD_PRELOAD", "GLIBC_TUNABLES", "NEARSIGHT_MALLOC_TUNING"):
        env.pop(key, None)
    env.update(allocator_env(code, allocator, tcmalloc))
    if code == "mace":  # e3nn 0.4.4 torch.load()s its own bundled constants.pt, written before weights_only
        env["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"
    cmd = [python, __file__, "--worker", code, system, dtype, size, str(repeats), str(seconds)]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
    if res.returncode != 0 or not lines:
        raise RuntimeError(f"{code} {system} {dtype} {size} ({allocator}) failed:\n{res.stderr[-3000:]}")
    return {**json.loads(lines[-1]), "allocator": allocator}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="192-atom water, float32, medium only")
    p.add_argument(
        "--mace-python", default=os.environ.get("NEARSIGHT_MACE_PYTHON", "/tmp/macevenv/bin/python")
    )
    p.add_argument("--sizes", nargs="+", default=list(SIZES), choices=[*SIZES, *MATCHED],
                   help="matched sizes (default: all), or rmd17: each code's model at MACE's published "
                   "50-frame ethanol accuracy")  # fmt: skip
    p.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=[*SYSTEMS, "ethanol"])
    p.add_argument("--dtypes", nargs="+", default=["float32", "float64"], choices=["float32", "float64"])
    p.add_argument("--allocators", nargs="+", default=None, choices=ALLOCATORS,
                   help="default: glibc, and tcmalloc when found")  # fmt: skip
    p.add_argument("--tcmalloc", default=None, help="path of libtcmalloc(_minimal).so to preload")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seconds", type=float, default=5.0, help="time each case for at least this long")
    p.add_argument("--json", help="write all measurements to this file")
    p.add_argument("--worker", nargs=6, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        code, system, dtype, size, repeats, seconds = args.worker
        print(json.dumps(worker(code, system, dtype, size, int(repeats), float(seconds))))
        return 0
    if not Path(args.mace_python).exists():
        p.error(f"no MACE python at {args.mace_python!r}: see this script's docstring for the venv")
    if args.quick:
        args.sizes, args.systems, args.dtypes = ["medium"], ["water192"], ["float32"]
    tcmalloc = args.tcmalloc or find_tcmalloc()
    allocators = args.allocators or (["glibc", "tcmalloc"] if tcmalloc else ["glibc"])
    rows = []
    print(f"{'system':>10} {'dtype':>8} {'size':>7} {'allocator':>13} | {'nearsight':>10} {'MACE':>10} atoms/s | "
          f"ratio | {'peak MB ns':>10} {'MACE':>8} | ratio")  # fmt: skip
    for system in args.systems:
        for dtype in args.dtypes:
            for size in args.sizes:
                for alloc in allocators:
                    case = (system, dtype, size, args.repeats, args.seconds, alloc, tcmalloc)
                    ns = measure("nearsight", sys.executable, *case)
                    mc = measure("mace", args.mace_python, *case)
                    ratio = ns["atoms_per_s"] / mc["atoms_per_s"]
                    mem = ns["peak_mb"] / max(mc["peak_mb"], 1e-9)
                    rows.append(
                        {
                            "nearsight": ns,
                            "mace": mc,
                            "allocator": alloc,
                            "ratio_vs_mace": ratio,
                            "memory_ratio": mem,
                        }
                    )
                    print(
                        f"{system:>10} {dtype:>8} {size:>7} {alloc:>13} | {ns['atoms_per_s']:10.1f} "
                        f"{mc['atoms_per_s']:10.1f}         | {ratio:5.2f} | {ns['peak_mb']:10.1f} "
                        f"{mc['peak_mb']:8.1f} | {mem:5.2f}",
                        flush=True,
                    )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    if args.quick:
        r = rows[0]
        summary = {
            "system": "water192",
            "dtype": "float32",
            "size": "medium",
            "threads": 1,
            "allocator": r["allocator"],
            "nearsight_atoms_per_s": round(r["nearsight"]["atoms_per_s"], 1),
            "mace_atoms_per_s": round(r["mace"]["atoms_per_s"], 1),
            "ratio_vs_mace": round(r["ratio_vs_mace"], 3),
            "peak_mb_nearsight": round(r["nearsight"]["peak_mb"], 1),
            "peak_mb_mace": round(r["mace"]["peak_mb"], 1),
        }
        for other in rows[1:]:
            summary[f"ratio_vs_mace_{other['allocator']}"] = round(other["ratio_vs_mace"], 3)
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
