"""``nearsight evaluate``: metrics of a model or a committee on labelled data, with the label keys used."""

from __future__ import annotations

import argparse
from pathlib import Path


def _read(path: str, fmt: str | None, args: argparse.Namespace) -> tuple[list, dict[str, str | None]]:
    """The labelled frames of ``path`` and the label keys used (detected where not given)."""
    from ..data.readers import read_frames_and_keys

    return read_frames_and_keys(
        path,
        format=fmt,
        energy_key=args.energy_key,
        forces_key=args.forces_key,
        stress_key=args.stress_key,
        virial_key=args.virial_key,
        require_labels=True,
        extra_labels={
            name: key
            for name, key in (
                ("charges", getattr(args, "charges_key", None)),
                ("dipole", getattr(args, "dipole_key", None)),
            )
            if key
        },
    )


def label_line(data: str, frames: list, used: dict[str, str | None]) -> str:
    """Which key each label came from and in how many frames, e.g. for ``REF_energy`` files."""
    counts = {
        "energy": sum(f.energy is not None for f in frames),
        "forces": sum(f.forces is not None for f in frames),
        "stress": sum(f.stress is not None for f in frames),
    }
    parts = []
    for label, count in counts.items():
        key = repr(used.get(label))
        if label == "stress" and used.get("virial"):  # a stress label may come from a virial
            key = (
                f"{key} or virial {used['virial']!r}" if used.get("stress") else f"virial {used['virial']!r}"
            )
        parts.append(f"{label} from {key} ({count} of {len(frames)} frames)" if count else f"no {label}")
    return f"labels of {Path(data).name}: " + ", ".join(parts)


def evaluate_files(model_path: str | list[str], data: str, args: argparse.Namespace) -> dict:
    """Metrics of one model, or of a committee's mean (several paths) with its mean force σ and the
    calibration of its σ (``calibration``: :func:`~nearsight.uncertainty.calibration.committee_calibration`,
    with the scales of ``args.sigma_scales`` where given)."""
    import numpy as np
    import torch

    from ..data.validate import validate_frames
    from ..models.io import load_model
    from ..training.metrics import compute_metrics_by_type, parity_plot, predict, write_json
    from ..uncertainty import predict_committee
    from ..uncertainty.calibration import committee_calibration

    dtype = getattr(torch, args.dtype)
    paths = [model_path] if isinstance(model_path, str) else list(model_path)
    scales_file = getattr(args, "sigma_scales", None)
    if scales_file and len(paths) < 2:
        raise ValueError("--sigma-scales needs a committee (several models); one model has no σ to scale")
    scales = read_sigma_scales(scales_file) if scales_file else None
    models = [load_model(p, dtype=dtype) for p in paths]
    frames, used = _read(data, args.format, args)
    for model in models:
        validate_frames(frames, require=(), known_species=list(model.species))
    if len(models) == 1:
        preds = predict(models[0], frames, batch_size=args.batch_size, dtype=dtype)
    else:
        preds = predict_committee(models, frames, batch_size=args.batch_size, dtype=dtype)
    metrics = compute_metrics_by_type(frames, preds)  # and per config_type where there are several
    metrics.update(model=str(paths[0]) if len(paths) == 1 else [str(p) for p in paths])
    if len(models) > 1:
        metrics["committee_size"] = len(models)
        metrics["forces_std_mean"] = float(np.mean(np.concatenate([p["forces_std"].ravel() for p in preds])))
        try:
            metrics["calibration"] = committee_calibration(frames, preds, scales)
        except ValueError as exc:
            if scales is not None:  # asked for: an error; otherwise a note beside the metrics
                raise
            metrics["calibration_error"] = str(exc)
        if scales is not None:
            missing = [q for q in metrics["calibration"] if q not in scales]
            if missing:
                raise ValueError(
                    f"--sigma-scales: {scales_file} has no σ scale for {missing[0]!r} (a key {missing[0]!r}, or "
                    f"'calibration' → {missing[0]!r} → 'sigma_scale' of an `evaluate --json` output)"
                )
            metrics["sigma_scales_file"] = str(scales_file)
    metrics.update(data=str(data), dtype=args.dtype, label_keys=used)
    metrics["labels"] = label_line(data, frames, used)
    if args.json:
        write_json(metrics, args.json)
    if args.plot:
        parity_plot(frames, preds, args.plot, title=Path(data).name)
    return metrics


def read_sigma_scales(path: str) -> dict[str, float]:
    """σ scales per quantity from a JSON file: ``{"energy_per_atom": s, "forces": s, "stress": s}``
    (any of them), or an ``evaluate --json`` output of a committee, whose ``calibration`` →
    quantity → ``sigma_scale`` values are taken."""
    import json

    from ..uncertainty.calibration import COMMITTEE_QUANTITIES

    try:
        data = json.loads(Path(path).read_text())
    except OSError as exc:
        raise ValueError(f"--sigma-scales: cannot read {path}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"--sigma-scales: {path} is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"--sigma-scales: {path} holds a JSON {type(data).__name__}, not an object")
    if "calibration" in data:
        source, where = data["calibration"], "'calibration' → "
        if not isinstance(source, dict):
            raise ValueError(f"--sigma-scales: 'calibration' in {path} is not an object")
        scales = {}
        for name, entry in source.items():
            if name not in COMMITTEE_QUANTITIES:
                continue
            if not isinstance(entry, dict) or "sigma_scale" not in entry:
                raise ValueError(f"--sigma-scales: {path} has no key {where}{name!r} → 'sigma_scale'")
            scales[name] = entry["sigma_scale"]
    else:
        where = ""
        scales = {name: data[name] for name in COMMITTEE_QUANTITIES if name in data}
    if not scales:
        raise ValueError(
            f"--sigma-scales: {path} has none of the keys {', '.join(map(repr, COMMITTEE_QUANTITIES))} "
            "(nor 'calibration' → quantity → 'sigma_scale' of an `evaluate --json` output)"
        )
    for name, value in scales.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
            raise ValueError(f"--sigma-scales: {where}{name!r} in {path} is {value!r}, not a number > 0")
    return {name: float(value) for name, value in scales.items()}


def format_calibration(calibration: dict[str, dict], scales_file: str | None = None) -> str:
    """A table of :func:`~nearsight.uncertainty.calibration.committee_calibration`: one row per
    quantity, in meV/atom, meV/Å and GPa."""
    factors = {"energy_per_atom": (1e3, "meV/atom"), "forces": (1e3, "meV/Å"), "stress": (1.0, "GPa")}
    given = scales_file is not None
    title = (
        f"committee σ calibration with the σ scales given in {scales_file} (not fitted on these data):"
        if given
        else "committee σ calibration (σ scale fitted on these data):"
    )
    scale_head = f"{'σ scale':>9}{'fit here':>10}" if given else f"{'σ scale':>9}"
    lines = [
        title,
        f"{'quantity':<17}{'unit':<10}{'n':>8}{'mean σ':>10}{'RMSE':>10}{scale_head}{'Spearman':>10}"
        "   miscalibration area raw → scaled",
    ]
    for name, r in calibration.items():
        factor, unit = factors.get(name, (1.0, ""))
        scale = f"{r['sigma_scale']:>9.3g}" + (f"{r['sigma_scale_fitted']:>10.3g}" if given else "")
        lines.append(
            f"{name:<17}{unit:<10}{r['n']:>8}{factor * r['mean_sigma']:>10.4g}{factor * r['rmse']:>10.4g}"
            f"{scale}{r['spearman']:>10.3f}   {r['miscalibration_area_raw']:.3f} → "
            f"{r['miscalibration_area_scaled']:.3f}"
        )
    return "\n".join(lines)


def format_metrics(rows: dict[str, dict]) -> str:
    """A table: one row per dataset, errors in meV, meV/atom, meV/Å."""
    head = f"{'dataset':<28}{'frames':>7}{'E MAE':>10}{'E RMSE':>10}{'E/atom MAE':>12}{'F MAE':>10}{'F RMSE':>10}"
    unit = f"{'':<28}{'':>7}{'meV':>10}{'meV':>10}{'meV/atom':>12}{'meV/Å':>10}{'meV/Å':>10}"
    lines = [head, unit]

    def cell(m: dict, key: str, label: str, width: int, digits: int) -> str:
        if not m.get(f"n_{label}", 1):  # no frame has the label: "-", never a NaN
            return f"{'-':>{width}}"
        return f"{1e3 * m[key]:>{width}.{digits}f}"

    for name, m in rows.items():
        lines.append(
            f"{name:<28}{m['n_frames']:>7}{cell(m, 'energy_mae', 'energy', 10, 2)}"
            f"{cell(m, 'energy_rmse', 'energy', 10, 2)}{cell(m, 'energy_per_atom_mae', 'energy', 12, 3)}"
            f"{cell(m, 'forces_mae', 'forces', 10, 2)}{cell(m, 'forces_rmse', 'forces', 10, 2)}"
        )
        if "stress_mae" in m:
            lines[-1] += f"   stress MAE {1e3 * m['stress_mae']:.3f} meV/Å³ = {m['stress_mae_GPa']:.3f} GPa"
        if "charges_mae" in m:
            lines[-1] += f"   charges MAE {1e3 * m['charges_mae']:.1f} me"
        if "dipole_mae" in m:
            lines[-1] += f"   dipole MAE {1e3 * m['dipole_mae']:.1f} me·Å"
    return "\n".join(lines)


def evaluate_command(args: argparse.Namespace) -> int:
    metrics = evaluate_files(args.model, args.data, args)
    print(metrics["labels"])
    rows = {Path(args.data).name: metrics}
    rows.update({f"  {name}": m for name, m in metrics.get("by_config_type", {}).items()})
    print(format_metrics(rows))
    if "committee_size" in metrics:
        print(
            f"committee mean of {metrics['committee_size']} models; "
            f"mean force σ {1e3 * metrics['forces_std_mean']:.2f} meV/Å (per component)"
        )
        if metrics.get("calibration"):
            print(format_calibration(metrics["calibration"], metrics.get("sigma_scales_file")))
        elif "calibration_error" in metrics:
            print(f"committee σ calibration not computed: {metrics['calibration_error']}")
    return 0
