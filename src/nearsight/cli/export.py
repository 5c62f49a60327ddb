"""``nearsight export``: a model file compiled for use outside Python.

    nearsight export MODEL.pt OUT.pt2 [--dtype float64|float32] [--device cpu|cuda] [--quick] [--threads N]
                     [--chunk-atoms S]
    nearsight export MODEL.pt OUT.ts          # TorchScript, while torch still supports it

A ``.pt2`` package (torch.export + AOTInductor) is what ``pair_style nearsight`` in LAMMPS loads;
it holds native code for this machine's CPU and this torch, both recorded in its metadata.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def export_command(args: argparse.Namespace) -> int:
    from ..models.io import load_model

    out = Path(args.output)
    model = load_model(args.model, dtype=args.dtype)
    if out.suffix == ".ts":
        from ..models.export import export_torchscript

        export_torchscript(model, out)
    elif out.suffix == ".pt2":
        from ..models.aoti import export_package, read_metadata

        export_package(
            model,
            out,
            dtype=args.dtype,
            device=args.device,
            optimise=not args.quick,
            threads=args.threads,
            chunk_atoms=args.chunk_atoms,
        )
        meta = read_metadata(out)
        isa = meta["cpu_isa"] or "scalar code"
        print(
            f"{out}: {meta['model_type']} model, species {meta['species']}, cutoff {meta['cutoff']} Å, "
            f"{meta['interaction_layers']} interaction layer(s), {meta['dtype']} on {meta['device']} "
            f"({isa}, torch {meta['torch_version']})"
        )
    else:
        raise ValueError(f"export: {out}: the output must end in .pt2 (AOTInductor) or .ts (TorchScript)")
    print(out)
    return 0


def add_export_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="compile a model for C++/LAMMPS (AOTInductor .pt2, or TorchScript .ts)")
    p.add_argument("model", help="a model file written by nearsight train")
    p.add_argument("output", help="OUT.pt2 (torch.export + AOTInductor) or OUT.ts (TorchScript)")
    p.add_argument("--dtype", choices=["float64", "float32"], default="float64", help="default: float64")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="default: cpu")
    p.add_argument(
        "--quick",
        action="store_true",
        help="unoptimised scalar code: compiles about three times sooner, runs several times slower",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="fix the compiled kernels' thread count (default: OMP_NUM_THREADS, read at run time; "
        "message-passing models: 1, one per LAMMPS rank; matrix products follow OMP_NUM_THREADS)",
    )
    p.add_argument(
        "--chunk-atoms",
        type=int,
        default=None,
        help="message-passing models: atoms per chunk of each layer (default: from the model's widths and "
        "neighbour count, its largest per-chunk tensors ~6 MB)",
    )
    p.set_defaults(func=export_command)
