"""Analytic diabatic models (atomic units: Hartree, bohr), as functions of the coordinates.

Tully's one-dimensional models (J. C. Tully, J. Chem. Phys. 93, 1061 (1990)), x in bohr:

* 1, single avoided crossing: V_11 = A(1 − e^(−Bx)) (x > 0), −A(1 − e^(Bx)) (x < 0), V_22 = −V_11,
  V_12 = C e^(−Dx²); A = 0.01, B = 1.6, C = 0.005, D = 1.0;
* 2, dual avoided crossing: V_11 = 0, V_22 = −A e^(−Bx²) + E_0, V_12 = C e^(−Dx²); A = 0.10,
  B = 0.28, C = 0.015, D = 0.06, E_0 = 0.05;
* 3, extended coupling with reflection: V_11 = A, V_22 = −A, V_12 = B e^(Cx) (x < 0),
  B(2 − e^(−Cx)) (x > 0); A = 6e-4, B = 0.10, C = 0.90.

The two-dimensional conical intersection of Ferretti, Granucci, Lami, Persico and Villani
(J. Chem. Phys. 104, 5517 (1996)), (X, Y) in bohr:

    V_11 = ½k_x(X − X_1)² + ½k_y Y²,    V_22 = ½k_x(X − X_2)² + ½k_y Y² + Δ,
    V_12 = γ Y exp(−α(X − X_3)² − βY²),

with X_1 = 4, X_2 = X_3 = 3, k_x = 0.02, k_y = 0.10, Δ = 0.01, α = 3, β = 1.5 and γ = 0.01 by
default: the diagonal elements cross where 0.02(X − 3) = 0, and the coupling vanishes at Y = 0, so
the intersection is exactly at (3, 0); there the gap grows as 0.02|X − 3| along X and 2γ|Y| along Y.
"""

from __future__ import annotations

import torch


def tully(x: torch.Tensor, model: int) -> torch.Tensor:
    """V_d ``[..., 2, 2]`` (Eh) of Tully's model 1, 2 or 3 at positions ``x`` ``[...]`` (bohr)."""
    if model == 1:
        A, B, C, D = 0.01, 1.6, 0.005, 1.0
        v11 = torch.sign(x) * A * (1 - torch.exp(-B * x.abs()))
        v22, v12 = -v11, C * torch.exp(-D * x**2)
    elif model == 2:
        A, B, C, D, E0 = 0.10, 0.28, 0.015, 0.06, 0.05
        v11 = torch.zeros_like(x)
        v22, v12 = -A * torch.exp(-B * x**2) + E0, C * torch.exp(-D * x**2)
    elif model == 3:
        A, B, C = 6e-4, 0.10, 0.90
        v11, v22 = torch.full_like(x, A), torch.full_like(x, -A)
        v12 = torch.where(x < 0, B * torch.exp(C * x.clamp(max=0)), B * (2 - torch.exp(-C * x.clamp(min=0))))
    else:
        raise ValueError(f"Tully model {model!r}: must be 1, 2 or 3")
    return _matrix(v11, v22, v12)


FERRETTI = {
    "x1": 4.0,
    "x2": 3.0,
    "x3": 3.0,
    "kx": 0.02,
    "ky": 0.10,
    "delta": 0.01,
    "alpha": 3.0,
    "beta": 1.5,
    "gamma": 0.01,
}


def ferretti(X: torch.Tensor, Y: torch.Tensor, gamma: float = FERRETTI["gamma"]) -> torch.Tensor:
    """V_d ``[..., 2, 2]`` (Eh) of the Ferretti et al. model at (X, Y) ``[...]`` (bohr)."""
    p = FERRETTI
    v11 = 0.5 * p["kx"] * (X - p["x1"]) ** 2 + 0.5 * p["ky"] * Y**2
    v22 = 0.5 * p["kx"] * (X - p["x2"]) ** 2 + 0.5 * p["ky"] * Y**2 + p["delta"]
    v12 = gamma * Y * torch.exp(-p["alpha"] * (X - p["x3"]) ** 2 - p["beta"] * Y**2)
    return _matrix(v11, v22, v12)


def _matrix(v11: torch.Tensor, v22: torch.Tensor, v12: torch.Tensor) -> torch.Tensor:
    return torch.stack([torch.stack([v11, v12], -1), torch.stack([v12, v22], -1)], -2)
