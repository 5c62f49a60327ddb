"""Band structure and density of states of one model, or of a committee as mean ± σ.

A committee's members share the structure, hence the band path and its q-points; at each q-point the
branches are taken in ascending order, and each branch's mean ν̄ and σ over members are drawn as a line
with a shaded band ν̄ ± σ. The DOS of every member is computed on one frequency grid and drawn the same
way. Frequencies are in THz (left axis) and cm⁻¹ (right axis, 1 THz = 33.356 cm⁻¹).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .phonons import PhononBands, PhononResult


def plot_phonons(
    members: Sequence[PhononResult],
    path: str | Path,
    npoints: int = 51,
    mesh: Sequence[int] = (20, 20, 20),
    title: str | None = None,
) -> Path:
    """Write a PNG with the band structure (left) and the DOS (right) of ``members``."""
    from matplotlib.figure import Figure

    from .phonons import THZ_TO_CM1

    if not members:
        raise ValueError("no phonon results to plot")
    bands = [m.band_structure(npoints) for m in members]
    _check_same_path(bands)
    stacked = [np.stack([b.frequencies[s] for b in bands]) for s in range(len(bands[0].labels))]  # [M, n, 3N]
    low = min(float(s.min()) for s in stacked)
    high = max(float(s.max()) for s in stacked)
    pad = 0.05 * max(high - low, 1e-3)
    pitch = (high - low + 2 * pad) / 400
    grids = [m.dos(mesh, freq_min=low - pad, freq_max=high + pad, freq_pitch=pitch) for m in members]
    size = min(len(g[0]) for g in grids)
    nu, dos = grids[0][0][:size], np.stack([g[1][:size] for g in grids])  # [M, n_ν]

    fig = Figure(figsize=(8.0, 4.5), layout="constrained")
    ax_band, ax_dos = fig.subplots(1, 2, sharey=True, width_ratios=[3, 1])
    colour = "tab:blue"
    ticks, tick_labels = [], []
    reference = bands[0]
    for s, freqs in enumerate(stacked):
        x = reference.distances[s]
        mean, std = freqs.mean(0), freqs.std(0)
        ax_band.plot(x, mean, color=colour, lw=1.2)
        if len(members) > 1:
            for branch in range(mean.shape[1]):
                lo, hi = mean[:, branch] - std[:, branch], mean[:, branch] + std[:, branch]
                ax_band.fill_between(x, lo, hi, color=colour, alpha=0.25, lw=0)
        start, end = reference.labels[s]
        previous_end = reference.labels[s - 1][1] if s else None
        if s == 0 or previous_end != start:
            name = _pretty(start) if s == 0 else f"{_pretty(previous_end)}|{_pretty(start)}"
            if s:
                tick_labels[-1] = name
            else:
                ticks.append(x[0])
                tick_labels.append(name)
        ticks.append(x[-1])
        tick_labels.append(_pretty(end))
    ax_band.set_xticks(ticks, tick_labels)
    for t in ticks:
        ax_band.axvline(t, color="0.6", lw=0.6)
    ax_band.axhline(0.0, color="0.3", lw=0.6)
    ax_band.set_xlim(ticks[0], ticks[-1])
    ax_band.set_ylim(low - pad, high + pad)
    ax_band.set_ylabel("frequency (THz)")
    members_note = f"{len(members)} models: mean ± σ" if len(members) > 1 else ""
    ax_band.set_title(title or members_note or "phonon band structure", fontsize=10)

    mean_dos, std_dos = dos.mean(0), dos.std(0)
    ax_dos.plot(mean_dos, nu, color=colour, lw=1.0)
    if len(members) > 1:
        ax_dos.fill_betweenx(
            nu, np.maximum(mean_dos - std_dos, 0), mean_dos + std_dos, color=colour, alpha=0.25, lw=0
        )
    ax_dos.set_xlim(0, None)
    ax_dos.set_xlabel("DOS (states/THz/cell)")
    ax_dos.axhline(0.0, color="0.3", lw=0.6)
    right = ax_dos.secondary_yaxis("right", functions=(lambda f: f * THZ_TO_CM1, lambda w: w / THZ_TO_CM1))
    right.set_ylabel("wavenumber (cm⁻¹)")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def _check_same_path(bands: Sequence[PhononBands]) -> None:
    first = bands[0]
    for k, other in enumerate(bands[1:], start=1):
        if other.labels != first.labels or any(
            a.shape != b.shape or not np.allclose(a, b) for a, b in zip(first.q_points, other.q_points)
        ):
            raise ValueError(
                f"committee member {k} has another band path than member 0 (its primitive cell differs); "
                "members must share the structure"
            )


def _pretty(label: str) -> str:
    """Γ for Gamma, subscripts for seekpath's suffixes (W_2 -> W₂)."""
    if label == "Gamma":
        return "Γ"
    name, _, suffix = label.partition("_")
    return f"{name}$_{{{suffix}}}$" if suffix else name
