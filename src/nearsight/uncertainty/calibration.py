"""Calibration of predicted σ against errors: fitted scale, miscalibration area, NLL, Spearman."""

from __future__ import annotations

import numpy as np
from scipy import special, stats


def fit_sigma_scale(errors: np.ndarray, sigmas: np.ndarray) -> float:
    """Maximum-likelihood s for errors ~ N(0, (s σ)²): s² = mean((e/σ)²)."""
    e, s = _pair(errors, sigmas)
    return float(np.sqrt(np.mean((e / s) ** 2)))


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
