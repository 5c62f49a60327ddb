"""The demo: train on a config's data, evaluate on held-out frames, run MD, print a table."""

from __future__ import annotations

from pathlib import Path


def run_demo(config_path: str, output_dir: str, md_steps: int = 400) -> dict:
    """Train on ``config_path``'s data into ``output_dir/training``, then evaluate, run NVE MD and
    write ``demo_summary.json``, the parity plot and the trajectory; returns the summary."""
    import torch

    from ..calculator import NearsightCalculator
    from ..data.readers import read_frames
    from ..models.io import load_model
    from ..simulate.md import run_md
    from ..training.config import load_config
    from ..training.metrics import compute_metrics, parity_plot, predict, write_json
    from ..training.trainer import Trainer
    from .evaluate import format_metrics

    out = Path(output_dir).resolve()
    config = load_config(config_path)
    config["output_dir"] = str(out / "training")
    trainer = Trainer(config)
    model_path = trainer.train()
    model = load_model(model_path, dtype=torch.float64)
    rows = {
        "train": compute_metrics(trainer.train_frames, predict(model, trainer.train_frames)),
        "validation": compute_metrics(trainer.valid_frames, predict(model, trainer.valid_frames)),
    }
    test_path = config["data"]["test"]
    test_frames = []
    if test_path:
        test_frames = read_frames(test_path, format=config["data"]["format"])
        preds = predict(model, test_frames)
        rows[f"test ({Path(test_path).name})"] = compute_metrics(test_frames, preds)
        parity_plot(test_frames, preds, out / "parity_test.png", title=f"held-out: {Path(test_path).name}")
    start = (test_frames or trainer.valid_frames)[0].to_atoms()
    md = run_md(
        start,
        NearsightCalculator(model, dtype="float64"),
        steps=md_steps,
        timestep_fs=0.5,
        temperature_K=300.0,
        trajectory=out / "md.traj",
        logfile=out / "md.log",
    )
    summary = {
        "model": str(model_path),
        "metrics": rows,
        "training_wall_time_s": trainer.wall_time,
        "md": {
            "steps": md.steps,
            "timestep_fs": 0.5,
            "energy_drift_ev_per_atom_ps": md.drift_ev_per_atom_ps,
            "mean_temperature_K": float(md.temperature.mean()),
            "wall_time_s": md.wall_time_s,
        },
    }
    write_json(summary, out / "demo_summary.json")
    print()
    print(format_metrics(rows))
    print()
    print(
        f"training wall time {trainer.wall_time:.0f} s; NVE MD {md.steps} steps x 0.5 fs: "
        f"drift {md.drift_ev_per_atom_ps:.2e} eV/atom/ps, mean T {md.temperature.mean():.0f} K"
    )
    print(
        f"parity plot: {out / 'parity_test.png'}   trajectory: {out / 'md.traj'}   summary: {out / 'demo_summary.json'}"
    )
    return summary
