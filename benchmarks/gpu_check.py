"""The compiled package on a CUDA device: equal to the eager model there (float64), and its speed
against eager PyTorch (float32), in one process on the GPU machine.

    PYTHONPATH=src:tests:benchmarks python3 benchmarks/gpu_check.py OUT_DIR

Writes ``OUT_DIR/gpu_check.json`` after every case (a run cut short keeps what it finished).
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import torch


def timed(fn, repeats: int = 10) -> float:
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def inputs_of(atoms, cutoff, dtype):
    from nearsight.data.neighbours import atoms_to_graph
    from nearsight.models.aoti import graph_inputs

    g = {k: v.cuda() for k, v in atoms_to_graph(atoms, cutoff, dtype).items()}
    return g, graph_inputs(g, dtype)


def main() -> None:
    from aoti_speed import build_model

    from aoti_models import water_model
    from nearsight import keys
    from nearsight.models.aoti import export_package, load_package
    from nearsight.models.forcefield import ForceField
    from structures import water_box

    out_dir = Path(sys.argv[1])
    out_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = [{"device": torch.cuda.get_device_name(0), "torch": torch.__version__}]

    def save(row):
        rows.append(row)
        print(json.dumps(row), flush=True)
        (out_dir / "gpu_check.json").write_text(json.dumps(rows, indent=1) + "\n")

    # exactness, float64: the package against the eager model on the GPU
    for kind in ("equivariant", "acsf"):
        model = water_model(kind).cuda()
        t = time.perf_counter()
        path = export_package(model, out_dir / f"{kind}_cuda64.pt2", device="cuda")
        compile_s = time.perf_counter() - t
        potential = load_package(path)
        ff = ForceField(model)
        for atoms in (water_box(2, seed=3), water_box(6, seed=4)):
            g, args = inputs_of(atoms, potential.cutoff, torch.float64)
            e_i, forces, virial, _ = potential(*args)
            ref = ff(g, forces=True, stress=True)
            ref_virial = -ref[keys.STRESS][0] * torch.linalg.det(g[keys.CELL][0]).abs()
            save(
                {
                    "check": "float64 package vs eager on cuda",
                    "model": kind,
                    "atoms": len(atoms),
                    "edges": int(args[3].shape[1]),
                    "energy_diff_eV": abs(float(e_i.sum() - ref[keys.ENERGY][0])),
                    "max_force_diff": float((forces - ref[keys.FORCES]).abs().max()),
                    "max_virial_diff": float((virial - ref_virial).abs().max()),
                    "compile_s": round(compile_s, 1),
                }
            )
    # speed, float32: compiled against eager on the GPU
    for kind in ("equivariant", "bpnn"):
        model = build_model(kind).float().cuda().eval()
        t = time.perf_counter()
        path = export_package(model, out_dir / f"{kind}_cuda32.pt2", dtype="float32", device="cuda")
        compile_s = time.perf_counter() - t
        potential = load_package(path)
        ff = ForceField(model)
        for p in ff.parameters():
            p.requires_grad_(False)
        for n_side in (8, 16):  # 1536 and 12 288 atoms
            atoms = water_box(n_side, seed=1)
            g, args = inputs_of(atoms, float(model.cutoff), torch.float32)
            t_eager = timed(lambda g=g, ff=ff: ff(g, forces=True, stress=True))
            t_aoti = timed(lambda args=args, potential=potential: potential(*args))
            save(
                {
                    "check": "float32 speed on cuda",
                    "model": kind,
                    "atoms": len(atoms),
                    "edges": int(args[3].shape[1]),
                    "eager_ms": round(1e3 * t_eager, 2),
                    "compiled_ms": round(1e3 * t_aoti, 2),
                    "compiled_over_eager_speed": round(t_eager / t_aoti, 2),
                    "peak_gpu_memory_MB": round(torch.cuda.max_memory_allocated() / 2**20),
                    "compile_s": round(compile_s, 1),
                }
            )


if __name__ == "__main__":
    main()
