"""Fitting how a quantity decays with distance: exponential against power law.

Kohn's nearsightedness (Kohn, PRL 76, 3168 (1996); Prodan & Kohn, PNAS 102, 11635 (2005)): in a
system with a gap the one-body density matrix and every local response decay exponentially,

    y(r) ≈ A exp(−r/ξ)                 (ξ: the decay length, Å),

while in a metal at zero electronic temperature they decay only as a power law with Friedel
oscillations, y(r) ≈ B r^(−p).  A finite electronic temperature T restores exponential decay with
ξ ∝ ħv_F/(k_B T) (Goedecker, PRB 58, 3501 (1998)).

Both forms are fitted by linear least squares on log y, to the *tail envelope*

    M(r) = max_{r' ≥ r} y(r'),

the largest value at or beyond each sampled distance: the envelope is what a cutoff at r neglects
at worst, it is blind to the zeros of Friedel oscillations, and for a monotone decay it is the data
itself.  The form whose residual (root-mean-square of the log residuals, natural log) is smaller
"fits better".
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["DecayFit", "fit_decay", "tail_envelope"]


def tail_envelope(r: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct distances (rounded to 1e-6 Å), ascending, and M(r) = max_{r' ≥ r} y(r') at each."""
    r = np.round(np.asarray(r, dtype=float), 6)
    y = np.abs(np.asarray(y, dtype=float))
    distinct, inverse = np.unique(r, return_inverse=True)
    best = np.zeros(len(distinct))
    np.maximum.at(best, inverse, y)
    return distinct, np.maximum.accumulate(best[::-1])[::-1]


@dataclass(frozen=True)
class DecayFit:
    """Exponential and power-law fits of the tail envelope of y(r).

    Attributes
    ----------
    decay_length : float
        ξ (Å) of y ≈ A exp(−r/ξ); ``inf`` where the envelope does not fall.
    prefactor : float
        A, in the unit of y.
    exponent : float
        p of y ≈ B r^(−p).
    power_prefactor : float
        B, in the unit of y times Å^p.
    rms_exponential, rms_power : float
        Root-mean-square residuals of ln y of each fit (0: a perfect fit).
    window : tuple of float
        The distances (Å) fitted, ``(r_min, r_max)`` inclusive.
    n_points : int
        Distinct distances in the window with y above the floor.
    floor : float
        Values at or below it (round-off, exact zeros) were left out.
    """

    decay_length: float
    prefactor: float
    exponent: float
    power_prefactor: float
    rms_exponential: float
    rms_power: float
    window: tuple[float, float]
    n_points: int
    floor: float

    @property
    def better(self) -> str:
        """``"exponential"`` or ``"power law"``: the fit with the smaller log residual."""
        return "exponential" if self.rms_exponential <= self.rms_power else "power law"

    def exponential(self, r: np.ndarray) -> np.ndarray:
        """A exp(−r/ξ) at ``r`` (Å)."""
        return self.prefactor * np.exp(-np.asarray(r, dtype=float) / self.decay_length)

    def power_law(self, r: np.ndarray) -> np.ndarray:
        """B r^(−p) at ``r`` (Å)."""
        return self.power_prefactor * np.asarray(r, dtype=float) ** (-self.exponent)

    def to_dict(self) -> dict:
        """JSON-ready: every attribute plus ``better``."""
        out = asdict(self)
        out["window"] = list(self.window)
        out["better"] = self.better
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in out.items()}


def fit_decay(
    r: np.ndarray,
    y: np.ndarray,
    window: tuple[float | None, float | None] = (None, None),
    floor: float = 0.0,
    what: str = "decay",
) -> DecayFit:
    """Fit y(r) ≈ A exp(−r/ξ) and y(r) ≈ B r^(−p) to the tail envelope inside ``window``.

    Parameters
    ----------
    r, y : array
        Distances (Å, > 0) and non-negative values (any unit), one per pair.
    window : (r_min, r_max)
        Distances fitted, inclusive; None: from the shortest, to the longest sampled distance.
    floor : float
        Envelope values ``≤ floor`` are left out (exact zeros, numerical noise).
    what : str
        Names the data in error messages.

    Returns
    -------
    DecayFit

    Raises
    ------
    ValueError
        Fewer than three distinct distances with values above ``floor`` in the window, a
        distance ≤ 0, or values that are not finite.
    """
    r = np.asarray(r, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    if r.shape != y.shape:
        raise ValueError(f"{what}: {r.size} distances but {y.size} values")
    if not (np.all(np.isfinite(r)) and np.all(np.isfinite(y))):
        raise ValueError(f"{what}: distances and values must be finite")
    if r.size and r.min() <= 0:
        raise ValueError(f"{what}: distances must be positive, got {r.min():.4g} Å")
    lo = -np.inf if window[0] is None else float(window[0])
    hi = np.inf if window[1] is None else float(window[1])
    if not lo < hi:
        raise ValueError(f"{what}: fit window ({lo}, {hi}) Å is empty (need r_min < r_max)")
    dist, env = tail_envelope(r, y)
    keep = (dist >= lo - 1e-9) & (dist <= hi + 1e-9) & (env > floor)
    x, v = dist[keep], np.log(env[keep])
    if x.size < 3:
        raise ValueError(
            f"{what}: only {x.size} distinct distance(s) in the fit window ({lo:.3g}, {hi:.3g}) Å with "
            f"values above {floor:.3g}; need at least 3 (widen the window or sample more pairs)"
        )
    slope, icpt = np.polyfit(x, v, 1)
    rms_exp = float(np.sqrt(np.mean((v - (slope * x + icpt)) ** 2)))
    pslope, picpt = np.polyfit(np.log(x), v, 1)
    rms_pow = float(np.sqrt(np.mean((v - (pslope * np.log(x) + picpt)) ** 2)))
    return DecayFit(
        decay_length=float(-1.0 / slope) if slope < 0 else math.inf,
        prefactor=float(np.exp(icpt)),
        exponent=float(-pslope),
        power_prefactor=float(np.exp(picpt)),
        rms_exponential=rms_exp,
        rms_power=rms_pow,
        window=(float(x[0]), float(x[-1])),
        n_points=int(x.size),
        floor=float(floor),
    )


def fit_or_reason(result) -> dict | str:
    """``result.fit`` as a dict, or ``"not fitted: <why>"`` where the fit failed (too few points)."""
    try:
        return result.fit.to_dict()
    except ValueError as err:
        return f"not fitted: {err}"
