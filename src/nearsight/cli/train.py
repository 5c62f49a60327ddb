"""``nearsight train`` and ``nearsight active-learn``: fresh, overwritten or resumed runs, committees."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

# what a training run writes in its output directory (removed by ``train --overwrite``)
RUN_FILES = (
    "checkpoint.pt",
    "best_model.pt",
    "final_model.pt",
    "training_summary.json",
    "training_log.csv",
    "learning_curve.png",
    "parity_valid.png",
    "parity_test.png",
)


def _is_main_rank() -> bool:
    return os.environ.get("RANK", "0") == "0"


def _clear_run(out_dir: Path) -> None:
    """Remove the files of an earlier run in ``out_dir`` (``--overwrite``); other files stay."""
    for name in RUN_FILES:
        (out_dir / name).unlink(missing_ok=True)
    for events in (out_dir / "tensorboard").glob("events.out.tfevents.*"):
        events.unlink(missing_ok=True)


def _check_fresh_output(out_dir: Path, args: argparse.Namespace) -> None:
    """A new run must not mix its files with an earlier run's: refuse unless --resume/--overwrite."""
    if args.resume and args.overwrite:
        raise ValueError(
            "--resume continues the run in the output directory, --overwrite replaces it: pick one"
        )
    if args.resume or args.members != 1:  # committees keep finished members (see _train_committee)
        return
    found = [name for name in ("best_model.pt", "checkpoint.pt") if (out_dir / name).is_file()]
    if not found:
        return
    if args.overwrite:
        if _is_main_rank():
            _clear_run(out_dir)
        return
    state = "finished" if (out_dir / "training_summary.json").is_file() else "started"
    raise ValueError(
        f"output directory {str(out_dir)!r} already holds a {state} run ({', '.join(found)}): pass --resume "
        "to continue it, --overwrite to replace it, or another --output-dir"
    )


def train_command(args: argparse.Namespace) -> int:
    from ..training.config import load_config

    config = load_config(args.config)
    if args.output_dir:
        config["output_dir"] = str(Path(args.output_dir).resolve())
    out_dir = Path(config["output_dir"])
    _check_fresh_output(out_dir, args)
    if _is_main_rank():  # output_dir is relative to the working directory: say where it went
        print(f"output directory: {out_dir.resolve()}", flush=True)
    if args.members != 1:
        return _train_committee(config, args)
    from ..training.trainer import Trainer

    trainer = Trainer(config, resume=args.resume)
    path = trainer.train()
    if trainer.dist.is_main:  # under torchrun, one line from rank 0
        print(path.resolve())
    return 0


def _train_committee(config: dict, args: argparse.Namespace) -> int:
    from ..uncertainty import train_committee

    if args.members < 2:
        raise ValueError(f"--members {args.members}: a committee needs at least 2 members")
    if args.resume:
        raise ValueError(
            "--resume continues one model; with --members, run the same command again: finished "
            "members are kept and an interrupted one is trained again from the start"
        )
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError(
            "--members under torchrun is not supported: run one torchrun per member "
            "(seed k, --output-dir DIR/member_k) or train the committee without torchrun"
        )
    if config["data"]["split_seed"] is None:  # every member validates on the same frames
        config["data"]["split_seed"] = config["seed"]
    if args.overwrite and _is_main_rank():  # members without final_model.pt train again from scratch
        for k in range(args.members):
            _clear_run(Path(config["output_dir"]) / f"member_{k}")
    for path in train_committee(config, args.members):
        print(path.resolve())
    return 0


def active_learn_command(args: argparse.Namespace) -> int:
    from ..active_learning import load_al_config, run_active_learning

    config = load_al_config(args.config)
    if args.output_dir:
        config["output_dir"] = str(Path(args.output_dir).resolve())
    state = run_active_learning(config, resume=args.resume, allow_python_oracle=args.allow_python_oracle)
    print(f"{state['status']} after {len(state['history'])} iteration(s): {config['output_dir']}")
    return 0
