"""A locality report: one summary dict (JSON, written atomically), a text table and a plot.

The summary puts side by side what the reference says (decay length of its force response, the
cutoff each force tolerance needs) and what a model can see (its cutoff, receptive field and hard
force range, and its own response curve).
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .._files import atomic_write
from .density_matrix import DensityMatrixDecay
from .force_response import ForceResponse

__all__ = ["locality_summary", "format_table", "plot_locality", "write_json"]


def locality_summary(
    reference: ForceResponse | None = None,
    model: ForceResponse | None = None,
    density: Sequence[DensityMatrixDecay] = (),
    tolerances: Sequence[float] = (0.01,),
    amplitude_A: float = 0.1,
    kind: str = "sum",
    receptive: dict | None = None,
    structure: str = "",
) -> dict:
    """Everything measured, JSON-ready: fits, implied cutoffs per tolerance (eV/Å) for
    displacements of ``amplitude_A`` (``kind``: see :meth:`ForceResponse.cutoff_for`), the model's
    ranges, and the raw pairs."""
    out: dict = {"structure": structure, "units": {"distance": "A", "response": "eV/A^2", "force": "eV/A"}}
    cut_def = (
        f"smallest sampled r_c with amplitude * {'sum' if kind == 'sum' else 'max'}_(r_ij > r_c) K_ij "
        f"<= tolerance for every centre; amplitude = {amplitude_A:g} A"
    )
    for name, result in (("reference", reference), ("model", model)):
        if result is None:
            continue
        entry = result.to_dict()
        cutoffs = []
        for tol in tolerances:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                r_c = result.cutoff_for(tol, amplitude_A, kind)
            cutoffs.append(
                {"tolerance_eV_per_A": tol, "cutoff_A": r_c, "resolved": not caught,
                 "neglected_at_cutoff_eV_per_A": result.neglected_force(r_c, amplitude_A, kind)}
            )  # fmt: skip
        entry["cutoffs"] = cutoffs
        entry["cutoff_definition"] = cut_def
        entry["max_distance_A"] = result.max_distance
        out[name] = entry
    if model is not None and receptive is not None:
        out["model"]["ranges_A"] = receptive
        limit = receptive.get("force_range")
        if limit is not None:
            beyond = model.distances > limit + 1e-9
            out["model"]["max_response_beyond_force_range"] = (
                float(model.response[beyond].max()) if beyond.any() else None
            )
    if density:
        out["density_matrix"] = [d.to_dict() for d in density]
    return out


def format_table(summary: dict) -> str:
    """The summary as plain text: one line per curve, then the cutoffs per tolerance."""

    def fmt(x: float | None, spec: str = ".3g") -> str:
        return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, spec)

    lines = [f"locality of {summary.get('structure') or 'the structure'}"]
    head = f"{'curve':<34} {'xi (A)':>8} {'p':>6} {'better':>12} {'window (A)':>13} {'max K':>9}"
    lines += [head, "-" * len(head)]
    curves = []
    for name in ("reference", "model"):
        if name in summary:
            k = max((p["response_eV_per_A2"] for p in summary[name]["pairs"]), default=0.0)
            curves.append((f"{name}: {summary[name]['reference']}"[:34], summary[name]["fit"], k))
    for d in summary.get("density_matrix", []):
        k = max((p["value"] for p in d["pairs"]), default=0.0)
        curves.append((f"density matrix T_e={d['electronic_temperature_K']:g} K"[:34], d["fit"], k))
    for label, fit, k in curves:
        if isinstance(fit, str):
            lines.append(f"{label:<34} {fit}")
            continue
        window = f"{fit['window'][0]:.2f}-{fit['window'][1]:.2f}"
        lines.append(
            f"{label:<34} {fmt(fit['decay_length'], '8.3f'):>8} {fmt(fit['exponent'], '6.2f'):>6} "
            f"{fit['better']:>12} {window:>13} {fmt(k, '9.3g'):>9}"
        )
    for name in ("reference", "model"):
        for c in summary.get(name, {}).get("cutoffs", []):
            note = "" if c["resolved"] else "  (structure too small: at least this)"
            lines.append(
                f"{name}: tolerance {c['tolerance_eV_per_A']:g} eV/A -> r_c = {c['cutoff_A']:.2f} A "
                f"(neglected {c['neglected_at_cutoff_eV_per_A']:.2g} eV/A){note}"
            )
    ranges = summary.get("model", {}).get("ranges_A")
    if ranges:
        lines.append(
            f"model: r_c = {ranges['cutoff']:g} A, {ranges['layers']} layer(s), receptive field "
            f"{fmt(ranges['receptive_field'])} A, force range {fmt(ranges['force_range'])} A; largest "
            f"response beyond it: {fmt(summary['model'].get('max_response_beyond_force_range'))}"
        )
    if summary.get("reference", {}).get("cutoffs"):
        lines.append(summary["reference"]["cutoff_definition"])
    return "\n".join(lines)


def _draw_fit(ax, fit: object, color: str, label: str) -> None:
    if fit is None or isinstance(fit, str):
        return
    r = np.linspace(fit.window[0], fit.window[1], 100)
    if math.isfinite(fit.decay_length):
        ax.plot(r, fit.exponential(r), "-", color=color, lw=1,
                label=f"{label}: exp, xi = {fit.decay_length:.2f} A")  # fmt: skip
    ax.plot(r, fit.power_law(r), ":", color=color, lw=1, label=f"{label}: r^-{fit.exponent:.1f}")


def _fit_object(result: ForceResponse | DensityMatrixDecay):
    try:
        return result.fit
    except ValueError:
        return None


def plot_locality(
    path: str | os.PathLike,
    reference: ForceResponse | None = None,
    model: ForceResponse | None = None,
    density: Sequence[DensityMatrixDecay] = (),
    cutoffs: dict[str, float] | None = None,
    model_ranges: dict | None = None,
    title: str = "",
) -> Path:
    """Log-scale response against distance: reference and model points with their fits, the
    implied cutoffs (``{label: r_c}``) and the model's cutoff and force range as vertical lines; a
    second panel with the density-matrix decays where given.  Written atomically (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (reference is not None or model is not None) + bool(density)
    fig, axes = plt.subplots(1, max(panels, 1), figsize=(9.5 * max(panels, 1), 4.5), squeeze=False)
    axes = list(axes[0])
    if reference is not None or model is not None:
        ax = axes.pop(0)
        for result, color, marker, label in (
            (reference, "C0", "o", "reference"),
            (model, "C3", "x", "model"),
        ):
            if result is None:
                continue
            keep = result.response > 0
            ax.scatter(result.distances[keep], result.response[keep], s=12, marker=marker, color=color,
                       alpha=0.7, label=f"{label}: {result.reference}"[:48])  # fmt: skip
            _draw_fit(ax, _fit_object(result), color, label)
        for i, (label, r_c) in enumerate((cutoffs or {}).items()):
            ax.axvline(r_c, color="k", ls="--", lw=1, alpha=0.4 + 0.3 * (i % 2), label=label)
        if model_ranges:
            ax.axvline(
                model_ranges["cutoff"],
                color="C3",
                ls="-.",
                lw=1,
                label=f"model r_c {model_ranges['cutoff']:g} A",
            )
            if model_ranges.get("force_range"):
                ax.axvline(model_ranges["force_range"], color="C3", ls=":", lw=1.5,
                           label=f"model force range 2·T·r_c = {model_ranges['force_range']:g} A")  # fmt: skip
        ax.set_yscale("log")
        ax.set_xlabel("distance r_ij (Å)")
        ax.set_ylabel("force response ‖∂F_i/∂R_j‖ (eV/Å²)")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
        ax.set_title(title or "force response")
    if density:
        ax = axes.pop(0)
        for k, d in enumerate(density):
            color = f"C{k % 10}"
            keep = d.values > d.floor
            label = f"{d.formula} T_e = {d.electronic_temperature_K:g} K"
            ax.scatter(d.distances[keep], d.values[keep], s=8, color=color, alpha=0.5, label=label)
            _draw_fit(ax, _fit_object(d), color, "fit")
        ax.set_yscale("log")
        ax.set_xlabel("distance r_AB (Å)")
        ax.set_ylabel("max |ρ_μν| (Löwdin basis)")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
        ax.set_title("density-matrix decay")
    fig.tight_layout()
    path = Path(path)
    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=120), mode="wb")
    plt.close(fig)
    return path


def write_json(path: str | os.PathLike, data: dict) -> Path:
    """``data`` as indented JSON, written atomically (a kill leaves the old file or the new one)."""
    text = json.dumps(data, indent=1, allow_nan=False, default=float)
    return atomic_write(path, lambda fh: fh.write(text + "\n"))
