"""Ziegler-Biersack-Littmark (ZBL) nuclear repulsion under the short-range network.

A network learns the repulsion between atoms only where the training data go; closer than that
its energy is whatever the fit left, and with learned charges the Coulomb attraction of a cation
and an anion keeps growing as 1/r.  On the synthetic salt an undertrained charge model let a Na–Cl
pair fall through to 0.06 Å after 8.75 ps of MD at 1500 K.  The universal ZBL screened nuclear
repulsion (Ziegler, Biersack & Littmark, The Stopping and Range of Ions in Solids, 1985),

    V(r) = k_e Z_i Z_j / r · φ(r/a),    a = 0.46850 Å / (Z_i^0.23 + Z_j^0.23),
    φ(x) = 0.18175 e^(−3.19980x) + 0.50986 e^(−0.94229x) + 0.28022 e^(−0.40290x) + 0.02817 e^(−0.20162x),

tends to the bare nuclear Coulomb repulsion as r → 0, so the total energy rises without bound
whatever the network does.  It is a floor at short range only, no cure for an undertrained network.  It is switched off smoothly at r_max = s (R_cov,i + R_cov,j) (ASE's
covalent radii, ``scale`` s = 1 by default) by the polynomial envelope

    f(u) = 1 − (p+1)(p+2)/2 u^p + p(p+2) u^(p+1) − p(p+1)/2 u^(p+2),    u = r / r_max ≤ 1,

(p = ``envelope_degree``, 6 by default; f and its first two derivatives vanish at u = 1), the form
MACE uses for its ZBL term, so the network still learns the bonded region.  Per-atom energies
ε_i = ½ Σ_j V(r_ij) f(r_ij / r_max,ij) over the model's edges (r_max must not exceed the model's
cutoff); forces and stress are autograd derivatives through the edge vectors.
"""

from __future__ import annotations

import math

import torch
from ase.data import covalent_radii
from torch import nn

from .. import keys

COULOMB_EV_A = 14.399645478425668  # k_e e² in eV·Å
ZBL_LENGTH = 0.46850  # Å
ZBL_COEFFICIENTS = (0.18175, 0.50986, 0.28022, 0.02817)
ZBL_EXPONENTS = (3.19980, 0.94229, 0.40290, 0.20162)


class ZBLRepulsion(nn.Module):
    """Per-atom ZBL energies ``[n_atoms]`` (eV) from ``graph[keys.EDGE_VECTORS]`` (see the module)."""

    def __init__(self, scale: float = 1.0, envelope_degree: int = 6) -> None:
        super().__init__()
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not (0 < scale < 10):
            raise ValueError(f"repulsion: scale = {scale!r} must be a number in (0, 10)")
        if isinstance(envelope_degree, bool) or not isinstance(envelope_degree, int) or envelope_degree < 2:
            raise ValueError(f"repulsion: envelope_degree = {envelope_degree!r} must be an integer ≥ 2")
        self.scale = float(scale)
        self.envelope_degree = int(envelope_degree)
        self.register_buffer("radii", torch.tensor(covalent_radii, dtype=torch.float64), persistent=False)

    def max_range(self, species: list[int]) -> float:
        """The largest r_max (Å) among the pairs of ``species``."""
        largest = max(float(covalent_radii[z]) for z in species)
        return 2.0 * self.scale * largest

    def pair_energy(self, r: torch.Tensor, zi: torch.Tensor, zj: torch.Tensor) -> torch.Tensor:
        """V(r) f(r/r_max) ``[n_pairs]`` (eV) for distances ``r`` (Å) and atomic numbers ``zi``, ``zj``."""
        zi_f, zj_f = zi.to(r.dtype), zj.to(r.dtype)
        a = ZBL_LENGTH / (zi_f**0.23 + zj_f**0.23)
        x = r / a
        phi = sum(c * torch.exp(-e * x) for c, e in zip(ZBL_COEFFICIENTS, ZBL_EXPONENTS))
        r_max = self.scale * (self.radii[zi] + self.radii[zj]).to(r.dtype)
        u = (r / r_max).clamp(max=1.0)
        p = self.envelope_degree
        envelope = (
            1.0
            - 0.5 * (p + 1) * (p + 2) * u**p
            + p * (p + 2) * u ** (p + 1)
            - 0.5 * p * (p + 1) * u ** (p + 2)
        )
        inside = r < r_max
        energy = COULOMB_EV_A * zi_f * zj_f / r * phi * envelope
        return torch.where(inside, energy, torch.zeros_like(energy))

    def forward(self, graph: dict[str, torch.Tensor]) -> torch.Tensor:
        vectors = graph[keys.EDGE_VECTORS]  # [n_edges, 3], both directions of every pair
        i, j = graph[keys.EDGE_INDEX][0], graph[keys.EDGE_INDEX][1]
        numbers = graph[keys.ATOMIC_NUMBERS]
        r = torch.linalg.norm(vectors, dim=1)
        energy = 0.5 * self.pair_energy(r, numbers[i], numbers[j])  # half of each directed edge to i
        return torch.zeros(numbers.shape[0], dtype=r.dtype, device=r.device).index_add(0, i, energy)


def check_range(repulsion: ZBLRepulsion, species: list[int], cutoff: float) -> None:
    """The ZBL range must fit inside the short-range model's cutoff (it uses the model's edges)."""
    reach = repulsion.max_range(species)
    if reach > cutoff + 1e-12:
        raise ValueError(
            f"repulsion: r_max = {reach:.3f} Å for the species {species} (scale {repulsion.scale} × covalent "
            f"radii) exceeds the model's cutoff {cutoff} Å; lower repulsion.scale"
        )
    if not math.isfinite(reach):
        raise ValueError("repulsion: covalent radius missing for a species")
