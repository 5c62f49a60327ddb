"""CPU cost of one training step of a config's model, against the batch size.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/training_step.py \
        [--config examples/ethanol_equivariant.yaml] [--batch-sizes 1 5 10 20 40] [--profile 5] [--own-data] \
        [--cache]

One step = the energy + forces loss on a batch of the first training frames, its gradient
(double backward through the forces) and the optimizer step, as ``Trainer.gradient_step``
runs it. Prints CPU ms per step and per frame (process time, one thread, after warm-up);
``--profile B`` adds the PyTorch profiler's operator table at batch size B, grouped by input
shape. The data default to rMD17 ethanol (``$NEARSIGHT_DATA`` or ../shared/data), else the
config's own training file.  ``--cache`` (ACSF/SOAP models) times every batch size with and
without ``training.cache_descriptors`` side by side and prints the ratio and the cache's one-off
cost per frame.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from ethanol_equivariant import shared_data_dir  # noqa: E402

from nearsight.training.config import load_config  # noqa: E402
from nearsight.training.trainer import Trainer  # noqa: E402


def step_trainer(
    config_path: Path, batch_size: int, out_dir: str, own_data: bool = False, cache: bool = False
) -> Trainer:
    cfg = load_config(config_path)
    ethanol = shared_data_dir() / "ethanol"
    if (ethanol / "train.xyz").is_file() and not own_data:
        cfg["data"].update(
            train=str(ethanol / "train.xyz"),
            test=None,
            reference_energies=str(ethanol / "isolated_atoms.xyz"),
        )
    cfg["data"]["max_train_frames"] = max(batch_size, 50)
    cfg["output_dir"] = out_dir
    cfg["num_threads"] = 1
    cfg["training"].update(batch_size=batch_size, cache_descriptors=cache, time_limit_clock="cpu")
    trainer = Trainer(cfg, log=lambda m: None)
    trainer.setup()
    return trainer


def time_steps(trainer: Trainer, batch_size: int, n: int) -> float:
    """CPU seconds per step (mean over ``n`` after 5 warm-up steps)."""
    indices = list(range(batch_size))
    for k in range(5 + n):
        if k == 5:
            t0 = time.process_time()
        trainer.gradient_step(indices, f"step {k}")
        trainer.optimizer.step()
    return (time.process_time() - t0) / n


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, default=ROOT / "examples" / "ethanol_equivariant.yaml")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 5, 10, 20, 40])
    p.add_argument("--steps", type=int, default=30, help="timed steps per batch size")
    p.add_argument("--profile", type=int, default=None, metavar="B", help="profile at batch size B")
    p.add_argument(
        "--own-data", action="store_true", help="train on the config's data, not rMD17 ethanol (e.g. silicon)"
    )
    p.add_argument("--cache", action="store_true", help="also time each batch size with the descriptor cache")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cached_header = f"{'cached ms/step':>16}{'speed-up':>10}{'cache s/frame':>15}" if args.cache else ""
        print(f"{'batch':>6}{'CPU ms/step':>13}{'ms/frame':>10}{cached_header}")
        for b in args.batch_sizes:
            dt = time_steps(step_trainer(args.config, b, tmp, args.own_data), b, args.steps)
            row = {"batch_size": b, "cpu_ms_per_step": round(1e3 * dt, 2)}
            line = f"{b:>6}{1e3 * dt:>13.1f}{1e3 * dt / b:>10.2f}"
            if args.cache:
                trainer = step_trainer(args.config, b, tmp, args.own_data, cache=True)
                per_frame = trainer.cache_seconds / (len(trainer.train_graphs) + len(trainer.valid_graphs))
                cached = time_steps(trainer, b, args.steps)
                row.update(
                    cached_cpu_ms_per_step=round(1e3 * cached, 2), cache_cpu_s_per_frame=round(per_frame, 3)
                )
                line += f"{1e3 * cached:>16.1f}{dt / cached:>9.2f}x{per_frame:>15.3f}"
            rows.append(row)
            print(line)
        if args.profile:
            from torch.profiler import ProfilerActivity, profile

            trainer = step_trainer(args.config, args.profile, tmp, args.own_data)
            time_steps(trainer, args.profile, 1)
            with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
                time_steps(trainer, args.profile, 10)
            table = prof.key_averages(group_by_input_shape=True)
            print(table.table(sort_by="self_cpu_time_total", row_limit=25, max_shapes_column_width=60))
    print(json.dumps({"config": str(args.config), "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
