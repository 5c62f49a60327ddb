"""Plots of free-energy profiles (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .umbrella import FreeEnergyProfile, UmbrellaWindow


def _figure(rows: int):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(rows, 1, figsize=(6.4, 2.6 + 2.2 * rows), sharex=True, squeeze=False)
    return plt, fig, axes[:, 0]


def plot_profiles(
    profiles: dict[str, FreeEnergyProfile],
    path: str | Path,
    *,
    windows: Sequence[UmbrellaWindow] | None = None,
    exact: tuple[np.ndarray, np.ndarray] | None = None,
    xlabel: str = "collective variable",
) -> Path:
    """F(s) in k_BT with 1σ error bars for each profile (and ``exact`` = (s, F in k_BT) as a line);
    with ``windows``, a second panel shows each umbrella window's histogram of s."""
    plt, fig, axes = _figure(2 if windows else 1)
    ax = axes[0]
    for label, p in profiles.items():
        f, err = p.free_energy / p.kT, p.uncertainty / p.kT
        ok = np.isfinite(f)
        ax.errorbar(
            p.bin_centres[ok], f[ok], yerr=np.nan_to_num(err[ok]), marker="o", ms=3, capsize=2, label=label
        )
    if exact is not None:
        ax.plot(exact[0], exact[1], "k--", lw=1, label="exact")
    ax.set_ylabel("F / k_BT")
    ax.legend(frameon=False)
    if windows:
        bins = np.linspace(min(w.cv.min() for w in windows), max(w.cv.max() for w in windows), 80)
        for w in windows:
            axes[1].hist(w.cv.ravel(), bins=bins, histtype="step", density=True)
        axes[1].set_ylabel("window histograms")
    axes[-1].set_xlabel(xlabel)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_metadynamics_run(run, path: str | Path) -> Path:
    """The biased CVs of every walker and the hill heights (k_BT) against the MD step, for a
    :class:`~nearsight.sampling.metadynamics.MetadynamicsRun`."""
    plt, fig, axes = _figure(2)
    step = run.sample_interval * np.arange(1, len(run.cv) + 1)
    for d in range(run.cv.shape[2]):
        for w in range(run.cv.shape[1]):
            axes[0].plot(step, run.cv[:, w, d], lw=0.5, alpha=0.6)
    axes[0].set_ylabel("biased CVs")
    deposited = run.bias.pace * (np.arange(run.bias.n_hills) // len(run.bias.walkers) + 1)
    axes[1].plot(deposited, run.bias.heights / run.kT, ".", ms=2)
    axes[1].set_ylabel("hill height / k_BT")
    axes[1].set_xlabel("MD step")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
