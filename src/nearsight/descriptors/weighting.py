"""DScribe's weighting of the neighbour density (SOAP's ``weighting`` dict), as functions.

``{"function": "poly", "r0", "c", "m"}``: w = c (1 + 2x³ - 3x²)^m for x = r/r0 <= 1, else 0 (smooth,
compact at r0); ``"pow"``: w = c / (d + (r/r0)^m); ``"exp"``: w = c / (d + exp(-r/r0)); ``"w0"``: the
weight of the centre atom; ``threshold``: the weight where the implied cutoff of ``pow``/``exp`` lies.
"""

from __future__ import annotations

import math

import torch


def check_weighting(weighting: dict | None) -> dict:
    """DScribe's weighting dict checked and normalised (floats, ``threshold`` default 1e-2); ``{}`` for none."""
    if not weighting:
        return {}
    w = dict(weighting)
    unknown = set(w) - {"function", "r0", "c", "d", "m", "w0", "threshold"}
    if unknown:
        raise ValueError(f"unknown weighting keys {sorted(unknown)} in {weighting!r}")
    if "w0" in w:
        if w["w0"] is None or float(w["w0"]) < 0:
            raise ValueError(f"weighting w0 must be >= 0, got {w['w0']!r}")
        w["w0"] = float(w["w0"])
    func = w.get("function")
    if func is None:
        return w
    needed = {"poly": ("r0", "c", "m"), "pow": ("r0", "c", "d", "m"), "exp": ("r0", "c", "d")}
    if func not in needed:
        raise ValueError(f"weighting function must be one of {sorted(needed)}, got {func!r}")
    for key in needed[func]:
        if key not in w:
            raise ValueError(f"weighting function {func!r} needs {key!r}, got {weighting!r}")
        w[key] = float(w[key])
        if (key == "r0" and w[key] <= 0) or w[key] < 0:
            raise ValueError(f"weighting {key} must be {'> 0' if key == 'r0' else '>= 0'}, got {w[key]}")
    w["threshold"] = float(w.get("threshold", 1e-2))
    return w


def inferred_r_cut(w: dict) -> float | None:
    """The radius where the weight falls to ``threshold`` (``r0`` for ``poly``); None without a function."""
    func = w.get("function")
    if func == "poly":
        return w["r0"]
    if func == "pow":
        return w["r0"] * (w["c"] / w["threshold"] - w["d"]) ** (1.0 / w["m"])
    if func == "exp":
        return w["r0"] * math.log(w["c"] / w["threshold"] - w["d"])
    return None


def neighbour_weights(w: dict, r: torch.Tensor) -> torch.Tensor | None:
    """The weight of each neighbour's Gaussian at distance ``r``; None without a function."""
    func = w.get("function")
    if func is None:
        return None
    x = r / w["r0"]
    if func == "poly":
        inside = x <= 1.0
        xc = torch.where(inside, x, torch.ones_like(x))
        return torch.where(inside, w["c"] * (1.0 + 2.0 * xc**3 - 3.0 * xc**2) ** w["m"], torch.zeros_like(x))
    if func == "pow":
        return w["c"] / (w["d"] + x ** w["m"])
    return w["c"] / (w["d"] + torch.exp(-x))


def centre_weight(w: dict) -> float:
    """The weight of the centre atom's own Gaussian: ``w0`` if given, else the function at r = 0."""
    if "w0" in w:
        return w["w0"]
    if w.get("function") is None:
        return 1.0
    return float(neighbour_weights(w, torch.zeros(1, dtype=torch.float64))[0])
