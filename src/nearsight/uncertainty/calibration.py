"""Calibration of predicted σ against errors: fitted scale, miscalibration area, NLL, Spearman;
per quantity for a committee on labelled frames (:func:`committee_calibration`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from ase.stress import voigt_6_to_full_3x3_stress
from scipy import special, stats

from .. import units


def fit_sigma_scale(errors: np.ndarray, sigmas: np.ndarray) -> float:
    """Maximum-likelihood s for errors ~ N(0, (s σ)²): s² = mean((e/σ)²)."""
    e, s = _pair(errors, sigmas)
    return float(np.sqrt(np.mean((e / s) ** 2)))


def median_sigma_scale(errors: np.ndarray, sigmas: np.ndarray) -> float:
    """Robust s for errors ~ N(0, (s σ)²): median(|e|/σ) / 0.6745 (the median of |z| for z ~ N(0, 1)).

    A committee's σ is itself an estimate from a few members, so |e|/σ has heavy tails: the
    maximum-likelihood :func:`fit_sigma_scale` is then set by the few values whose σ came out
    small by chance (with 4 members, scales 10-30x the typical ratio are seen), while the median
    is not, and it is the scale that puts half the errors inside ±0.674 s σ, as the
    miscalibration area checks.
    """
    e, s = _pair(errors, sigmas)
    return float(np.median(np.abs(e) / s) / special.erfinv(0.5) / np.sqrt(2.0))


def gaussian_nll(errors: np.ndarray, sigmas: np.ndarray) -> float:
    """Mean Gaussian negative log-likelihood of the errors given σ (nats, includes ½ log 2π)."""
    e, s = _pair(errors, sigmas)
    return float(np.mean(0.5 * np.log(2 * np.pi * s**2) + 0.5 * (e / s) ** 2))


def miscalibration_area(errors: np.ndarray, sigmas: np.ndarray, n_levels: int = 99) -> float:
    """Area between the observed and expected fraction of errors inside central Gaussian intervals.

    For confidence p the interval is |e| <= z_p σ with z_p = √2 erf⁻¹(p); the area is
    mean over p in (0, 1) of |observed(p) − p|: 0 for perfect calibration, at most 0.5.
    """
    e, s = _pair(errors, sigmas)
    levels = np.linspace(0, 1, n_levels + 2)[1:-1]
    z = np.sqrt(2.0) * special.erfinv(levels)
    ratio = np.abs(e) / s
    observed = (ratio[None, :] <= z[:, None]).mean(axis=1)
    return float(np.mean(np.abs(observed - levels)))


def spearman(errors: np.ndarray, sigmas: np.ndarray) -> float:
    """Spearman rank correlation between |error| and σ."""
    e, s = _pair(errors, sigmas)
    return float(stats.spearmanr(np.abs(e), s).statistic)


def calibration_report(
    errors: np.ndarray, sigmas: np.ndarray, scale: float | None = None
) -> dict[str, float]:
    """Metrics before and after scaling σ by ``scale`` (default: fitted on these data)."""
    scale = fit_sigma_scale(errors, sigmas) if scale is None else float(scale)
    sig = np.asarray(sigmas, dtype=np.float64)
    return {
        "n": int(np.asarray(errors).size),
        "sigma_scale": scale,
        "rmse": float(np.sqrt(np.mean(np.asarray(errors, dtype=np.float64) ** 2))),
        "mean_sigma": float(np.mean(sig)),
        "spearman": spearman(errors, sigmas),
        "nll_raw": gaussian_nll(errors, sigmas),
        "nll_scaled": gaussian_nll(errors, sig * scale),
        "miscalibration_area_raw": miscalibration_area(errors, sigmas),
        "miscalibration_area_scaled": miscalibration_area(errors, sig * scale),
    }


def _pair(errors, sigmas) -> tuple[np.ndarray, np.ndarray]:
    e = np.asarray(errors, dtype=np.float64).ravel()
    s = np.asarray(sigmas, dtype=np.float64).ravel()
    if e.shape != s.shape:
        raise ValueError(f"errors and sigmas differ in size: {e.size} vs {s.size}")
    if e.size == 0:
        raise ValueError("no errors given")
    bad = ~(np.isfinite(e) & np.isfinite(s)) | (s <= 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{int(bad.sum())} non-finite error(s) or σ <= 0, first at index {i}: e={e[i]}, σ={s[i]}"
        )
    return e, s


#: The quantities of :func:`committee_calibration`, each with the unit its errors and σ are in.
COMMITTEE_QUANTITIES = {"energy_per_atom": "eV/atom", "forces": "eV/Å", "stress": "GPa"}


def committee_calibration(
    frames: Sequence, preds: Sequence[dict], scales: Mapping[str, float] | None = None
) -> dict[str, dict]:
    """Calibration of a committee's σ against its errors on labelled frames, per quantity.

    ``preds`` are the per-frame dicts of :func:`nearsight.uncertainty.predict_committee` (mean
    ``energy``, ``forces``, ``stress`` and their ``*_std``); ``frames`` the labelled frames. The
    quantities, each a :func:`calibration_report` of its errors and σ:

    * ``energy_per_atom``: one value per frame, (E_mean − E_ref) / N against σ_E / N (eV/atom);
    * ``forces``: one value per Cartesian force component (eV/Å);
    * ``stress``: the nine components of the 3×3 stress of 3D-periodic frames with a stress
      label and prediction (GPa).

    A quantity without labelled data is left out. The fitted ``sigma_scale`` is the robust
    :func:`median_sigma_scale` (``sigma_scale_ml``: the maximum-likelihood one, for reference).
    ``scales`` (quantity → σ scale, say fitted on validation data) replaces the fitted scale of
    the quantities it names; each report also has ``scale_given`` (whether it did) and
    ``sigma_scale_fitted`` (the scale these data give either way). Values where both the error
    and σ vanish (below 1e-6 of their RMS: components that symmetry fixes at zero for every
    member alike, as the forces of a strained perfect crystal) carry no information and are left out (``n_symmetry_zeros``); σ = 0 with
    a non-zero error (members that agree exactly, e.g. the same model twice) is a ``ValueError``
    naming the quantity.
    """
    if len(frames) != len(preds):
        raise ValueError(f"{len(frames)} frames but {len(preds)} predictions")
    pairs: dict[str, tuple[list, list]] = {name: ([], []) for name in COMMITTEE_QUANTITIES}
    for frame, pred in zip(frames, preds):
        n = len(frame.numbers)
        if frame.energy is not None:
            pairs["energy_per_atom"][0].append((pred["energy"] - frame.energy) / n)
            pairs["energy_per_atom"][1].append(pred["energy_std"] / n)
        if frame.forces is not None:
            pairs["forces"][0].append(np.ravel(pred["forces"] - frame.forces))
            pairs["forces"][1].append(np.ravel(pred["forces_std"]))
        if frame.stress is not None and "stress" in pred and "stress_std" in pred and np.all(frame.pbc):
            stress, std = (_full_3x3(pred[k]) for k in ("stress", "stress_std"))
            pairs["stress"][0].append((stress - _full_3x3(frame.stress)).ravel() / units.GPa)
            pairs["stress"][1].append(std.ravel() / units.GPa)
    report = {}
    for name, (errors, sigmas) in pairs.items():
        if not errors:
            continue
        e, s = np.hstack(errors).astype(np.float64), np.hstack(sigmas).astype(np.float64)
        rms_e, rms_s = np.sqrt(np.mean(e**2)), np.sqrt(np.mean(s**2))
        keep = ~((np.abs(e) <= 1e-6 * rms_e) & (s <= 1e-6 * rms_s))
        n_zeros = int(e.size - keep.sum())
        e, s = e[keep], s[keep]
        if not e.size:
            continue
        zero = s == 0
        if zero.any():
            i = int(np.flatnonzero(zero)[0])
            raise ValueError(
                f"{name}: committee σ = 0 for {int(zero.sum())} of {s.size} values (first at index {i}): "
                "the members agree exactly there (the same model twice?), so σ cannot be calibrated"
            )
        given = scales.get(name) if scales else None
        try:
            fitted = median_sigma_scale(e, s)
            entry = calibration_report(e, s, scale=fitted if given is None else given)
            ml = fit_sigma_scale(e, s)
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None
        report[name] = {**entry, "sigma_scale_fitted": fitted, "sigma_scale_ml": ml,
                        "scale_given": given is not None, "n_symmetry_zeros": n_zeros}  # fmt: skip
    return report


def _full_3x3(stress) -> np.ndarray:
    """A stress as 3×3 (Voigt 6, as :class:`EnsembleCalculator` reports it, or already 3×3)."""
    a = np.asarray(stress, dtype=np.float64)
    return voigt_6_to_full_3x3_stress(a) if a.shape == (6,) else a.reshape(3, 3)
