"""Error metrics of a model on labelled frames, parity plots and JSON output."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .. import keys, units
from .._files import atomic_write
from ..data.frame import Frame
from ..data.neighbours import collate, frame_to_graph
from ..models.forcefield import ForceField


def split_predictions(out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> list[dict]:
    """Per-frame numpy ``energy``, ``forces`` (and ``stress``, ``charges``, ``dipole`` where the
    outputs have them) from batched outputs."""
    energy = out[keys.ENERGY].detach().double().numpy()
    forces = out[keys.FORCES].detach().double().numpy()
    stress = out[keys.STRESS].detach().double().numpy() if keys.STRESS in out else None
    charges = out[keys.CHARGES].detach().double().numpy() if keys.CHARGES in out else None
    dipole = out[keys.DIPOLE].detach().double().numpy() if keys.DIPOLE in out else None
    states = {name: out[name].detach().double().numpy() for name in STATE_OUTPUTS if name in out}
    offsets = np.concatenate([[0], np.cumsum(batch[keys.N_ATOMS].numpy())])
    results = []
    for k in range(len(offsets) - 1):
        res = {"energy": energy[k], "forces": forces[offsets[k] : offsets[k + 1]]}
        if stress is not None:
            res["stress"] = stress[k]
        if charges is not None:
            res["charges"] = charges[offsets[k] : offsets[k + 1]]
        if dipole is not None:
            res["dipole"] = dipole[k]
        for name, value in states.items():
            per_atom = keys.field(name).per == "atom"
            res[name] = value[offsets[k] : offsets[k + 1]] if per_atom else value[k]
        results.append(res)
    return results


def predict(
    model: nn.Module,
    frames: Sequence[Frame],
    batch_size: int = 64,
    dtype: torch.dtype = torch.float64,
    stress: bool | None = None,
    graphs: Sequence[dict] | None = None,
) -> list[dict[str, np.ndarray]]:
    """Energy, forces (and stress for 3D-periodic frames) for each frame."""
    ff = ForceField(model).to(dtype)
    if graphs is None:
        graphs = [frame_to_graph(f, ff.cutoff, dtype) for f in frames]
    want_stress = any(f.pbc.all() for f in frames) if stress is None else stress
    results = []
    for start in range(0, len(graphs), batch_size):
        batch = collate(graphs[start : start + batch_size])
        batch = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in batch.items()}
        out = ff(batch, forces=True, stress=want_stress)
        results += split_predictions(out, batch)
    return results


def _mae_rmse(diff: np.ndarray) -> tuple[float, float]:
    if diff.size == 0:
        return float("nan"), float("nan")
    return float(np.mean(np.abs(diff))), float(np.sqrt(np.mean(diff**2)))


def compute_metrics(frames: Sequence[Frame], predictions: Sequence[dict]) -> dict:
    """MAE/RMSE of energy (per structure and per atom), forces (per component), stress (eV/Å³ and
    GPa)."""
    de, de_atom, df, ds = [], [], [], []
    for frame, pred in zip(frames, predictions):
        if frame.energy is not None:
            de.append(pred["energy"] - frame.energy)
            de_atom.append((pred["energy"] - frame.energy) / frame.n_atoms)
        if frame.forces is not None:
            df.append((pred["forces"] - frame.forces).ravel())
        if frame.stress is not None and "stress" in pred and frame.pbc.all():
            ds.append((pred["stress"] - frame.stress).ravel())
    m: dict[str, float | int] = {"n_frames": len(frames), "n_atoms": int(sum(f.n_atoms for f in frames))}
    m["energy_mae"], m["energy_rmse"] = _mae_rmse(np.asarray(de))
    m["energy_per_atom_mae"], m["energy_per_atom_rmse"] = _mae_rmse(np.asarray(de_atom))
    m["forces_mae"], m["forces_rmse"] = _mae_rmse(np.concatenate(df) if df else np.zeros(0))
    if ds:  # eV/Å³, and GPa as materials users read it
        m["stress_mae"], m["stress_rmse"] = _mae_rmse(np.concatenate(ds))
        m["stress_mae_GPa"], m["stress_rmse_GPa"] = m["stress_mae"] / units.GPa, m["stress_rmse"] / units.GPa
    m["n_energy"], m["n_forces"], m["n_stress"] = len(de), len(df), len(ds)
    for name in ("charges", "dipole"):  # labels of charge-predicting models: e per atom, e·Å per component
        diffs = [
            (pred[name] - frame.labels[name]).ravel()
            for frame, pred in zip(frames, predictions)
            if name in frame.labels and name in pred
        ]
        if diffs:
            m[f"{name}_mae"], m[f"{name}_rmse"] = _mae_rmse(np.concatenate(diffs))
            m[f"n_{name}"] = len(diffs)
    m.update(state_metrics(frames, predictions))
    return m


STATE_OUTPUTS = (keys.STATE_ENERGIES, keys.STATE_FORCES, keys.STATE_COUPLINGS)


def state_metrics(frames: Sequence[Frame], predictions: Sequence[dict]) -> dict:
    """Multi-state models: MAE/RMSE of each state's energy (eV) and force components (eV/Å), as
    lists over the states; for the couplings (sign-free: each label's sign is arbitrary) the MAE of
    the components after choosing the better sign per structure and pair, and the mean |cos| of the
    angle between predicted and label vectors."""
    from ..nonadiabatic.loss import sign_free_cosine

    m: dict = {}
    for name in (keys.STATE_ENERGIES, keys.STATE_FORCES):
        pairs = [
            (p[name], f.labels[name]) for f, p in zip(frames, predictions) if name in f.labels and name in p
        ]
        if not pairs:
            continue
        axis = 1 if keys.field(name).per == "atom" else 0
        diffs = [np.moveaxis(np.asarray(p) - np.asarray(r).reshape(np.shape(p)), axis, 0) for p, r in pairs]
        per_state = [np.concatenate([d[s].ravel() for d in diffs]) for s in range(diffs[0].shape[0])]
        m[f"{name}_mae"] = [_mae_rmse(d)[0] for d in per_state]
        m[f"{name}_rmse"] = [_mae_rmse(d)[1] for d in per_state]
        m[f"n_{name}"] = len(pairs)
    name = keys.STATE_COUPLINGS
    pairs = [(p[name], f.labels[name]) for f, p in zip(frames, predictions) if name in f.labels and name in p]
    if pairs:
        diffs, cosines = [], []
        for pred, ref in pairs:
            ref = np.asarray(ref).reshape(pred.shape)  # [n_atoms, P, 3]
            for k in range(pred.shape[1]):
                a, b = pred[:, k], ref[:, k]
                diffs.append(min((a - b).ravel(), (a + b).ravel(), key=lambda d: float(d @ d)))
                cosines.append(sign_free_cosine(a, b))
        m[f"{name}_mae"], m[f"{name}_rmse"] = _mae_rmse(np.concatenate(diffs))
        m[f"{name}_cosine"] = float(np.nanmean(cosines))
        m[f"n_{name}"] = len(pairs)
    return m


def write_json(data: dict, path: str | os.PathLike) -> Path:
    """Atomic JSON write."""
    return atomic_write(path, lambda fh: fh.write(json.dumps(data, indent=2, default=float) + "\n"))


def parity_plot(
    frames: Sequence[Frame], predictions: Sequence[dict], path: str | os.PathLike, title: str = ""
) -> Path:
    """Energy-per-atom and force-component parity plots side by side (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = []  # (axis label, unit of the MAE, reference, prediction)
    e_ref = np.asarray([f.energy / f.n_atoms for f in frames if f.energy is not None])
    e_pred = np.asarray(
        [p["energy"] / f.n_atoms for f, p in zip(frames, predictions) if f.energy is not None]
    )
    if e_ref.size:
        offset = e_ref.mean()  # plot relative to the mean so that the axes stay readable
        panels.append(
            (
                f"energy per atom (meV, from {offset:.3f} eV)",
                "meV/atom",
                1e3 * (e_ref - offset),
                1e3 * (e_pred - offset),
            )
        )
    f_ref = [f.forces.ravel() for f in frames if f.forces is not None]
    f_pred = [p["forces"].ravel() for f, p in zip(frames, predictions) if f.forces is not None]
    if f_ref:
        panels.append(("force component (eV/Å)", "meV/Å", np.concatenate(f_ref), np.concatenate(f_pred)))
    fig, axes = plt.subplots(1, max(len(panels), 1), figsize=(5 * max(len(panels), 1), 4.6), squeeze=False)
    for ax, (label, unit, ref, pred) in zip(axes[0], panels):
        lo, hi = float(min(ref.min(), pred.min())), float(max(ref.max(), pred.max()))
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        ax.scatter(ref, pred, s=4, alpha=0.5)
        mae = float(np.mean(np.abs(pred - ref))) * (1.0 if unit == "meV/atom" else 1e3)
        ax.set_xlabel(f"reference {label}")
        ax.set_ylabel(f"predicted {label}")
        ax.set_title(f"MAE {mae:.2f} {unit}")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def compute_metrics_by_type(frames: Sequence[Frame], predictions: Sequence[dict]) -> dict:
    """:func:`compute_metrics` over all frames, and per ``config_type`` when there are several."""
    out = compute_metrics(frames, predictions)
    types = sorted({f.config_type for f in frames})
    if len(types) > 1:
        out["by_config_type"] = {
            name: compute_metrics(
                [f for f in frames if f.config_type == name],
                [p for f, p in zip(frames, predictions) if f.config_type == name],
            )
            for name in types
        }
    return out
