"""Atom-centred symmetry functions (Behler, J. Chem. Phys. 134, 074106, 2011), in torch.

Radial, resolved by the neighbour's element:

    G2_i = Σ_j exp(-η (r_ij - r_s)²) f_c(r_ij)

Angular, resolved by the unordered element pair of the two neighbours, each
unordered neighbour pair counted once:

    G4_i = 2^(1-ζ) Σ_{j<k} (1 + λ cos θ_ijk)^ζ exp(-η (r_ij² + r_ik² + r_jk²)) f_c(r_ij) f_c(r_ik) f_c(r_jk)
    G5_i = 2^(1-ζ) Σ_{j<k} (1 + λ cos θ_ijk)^ζ exp(-η (r_ij² + r_ik²)) f_c(r_ij) f_c(r_ik)

and the angle- and distance-shifted angular function of ANI (Smith, Isayev &
Roitberg, Chem. Sci. 8, 3192, 2017), which resolves angles and distances finer:

    GA_i = 2^(1-ζ) Σ_{j<k} (1 + cos(θ'_ijk - θ_s))^ζ exp(-η ((r_ij + r_ik)/2 - r_s)²) f_c(r_ij) f_c(r_ik)

with θ' = arccos(0.95 cos θ) keeping the derivative finite at θ = 0 and π.

Feature order: for each neighbour element (ascending Z) its G2 block, then for
each element pair (Z_a <= Z_b, ascending) its G4 block, its G5 block, then
its GA block.  Everything is differentiable, so forces and stress of a model built on
these features come from autograd without dense descriptor-derivative arrays.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from .. import keys
from ..nn import cosine_cutoff
from .triplets import unordered_edge_pairs


def _params(values: Sequence[Sequence[float]] | None, width: int, name: str) -> torch.Tensor:
    if not values:
        return torch.zeros((0, width), dtype=torch.float64)
    t = torch.as_tensor([list(map(float, v)) for v in values], dtype=torch.float64)
    if t.ndim != 2 or t.shape[1] != width:
        raise ValueError(f"{name} must be a list of {width}-tuples, got {values!r}")
    return t


def _factorise(
    params: torch.Tensor, radial: list[int], angular: list[int]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Unique radial and angular parameter rows, and the index of each function's rows in them."""
    if not params.shape[0]:
        empty = torch.zeros(0, dtype=torch.int64)
        return params[:, radial], empty, params[:, angular], empty
    r_u, r_idx = torch.unique(params[:, radial], dim=0, return_inverse=True)
    a_u, a_idx = torch.unique(params[:, angular], dim=0, return_inverse=True)
    return r_u, r_idx, a_u, a_idx


def _outer(
    radial: torch.Tensor, angular: torch.Tensor, r_idx: torch.Tensor, a_idx: torch.Tensor
) -> torch.Tensor:
    """Columns ``radial[:, r_idx[p]] * angular[:, a_idx[p]]``; a plain outer product when the
    parameters form a radial-major grid (the default sets), a gather otherwise."""
    n_r, n_a = radial.shape[1], angular.shape[1]
    if r_idx.shape[0] == n_r * n_a and bool(
        (r_idx == torch.arange(n_r, device=r_idx.device).repeat_interleave(n_a)).all()
        and (a_idx == torch.arange(n_a, device=a_idx.device).repeat(n_r)).all()
    ):
        return (radial[:, :, None] * angular[:, None, :]).reshape(radial.shape[0], n_r * n_a)
    return radial[:, r_idx] * angular[:, a_idx]


class ACSF(nn.Module):
    """Element-resolved G2, G4 and G5 symmetry functions.

    Args:
        species: atomic numbers the descriptor resolves.
        r_cut: radial cutoff (Å).
        g2_params: ``[(eta, r_s), ...]`` (Å⁻², Å).
        g4_params: ``[(eta, zeta, lambda), ...]``.
        g5_params: ``[(eta, zeta, lambda), ...]``.
        ga_params: ``[(eta, zeta, r_s, theta_s), ...]`` (Å⁻², -, Å, rad), ANI-style.
        r_cut_angular: cutoff of the angular terms (defaults to ``r_cut``).
    """

    def __init__(
        self,
        species: Sequence[int],
        r_cut: float,
        g2_params: Sequence[Sequence[float]] | None = None,
        g4_params: Sequence[Sequence[float]] | None = None,
        g5_params: Sequence[Sequence[float]] | None = None,
        ga_params: Sequence[Sequence[float]] | None = None,
        r_cut_angular: float | None = None,
    ) -> None:
        super().__init__()
        self.species = sorted(int(z) for z in species)
        if len(set(self.species)) != len(self.species) or not self.species:
            raise ValueError(f"species must be distinct atomic numbers, got {species!r}")
        self.r_cut = float(r_cut)
        self.r_cut_angular = float(r_cut_angular) if r_cut_angular is not None else self.r_cut
        if not 0 < self.r_cut_angular <= self.r_cut:
            raise ValueError(f"r_cut_angular must be in (0, r_cut], got {self.r_cut_angular}")
        self.register_buffer("g2", _params(g2_params, 2, "g2_params"))
        self.register_buffer("g4", _params(g4_params, 3, "g4_params"))
        self.register_buffer("g5", _params(g5_params, 3, "g5_params"))
        self.register_buffer("ga", _params(ga_params, 4, "ga_params"))
        # radial columns and angular columns of each angular family
        self._factors = {
            name: _factorise(getattr(self, name), radial, angular)
            for name, radial, angular in (("g4", [0], [1, 2]), ("g5", [0], [1, 2]), ("ga", [0, 2], [1, 3]))
        }
        n = len(self.species)
        z_to_index = torch.full((119,), -1, dtype=torch.int64)
        z_to_index[torch.tensor(self.species)] = torch.arange(n)
        self.register_buffer("z_to_index", z_to_index, persistent=False)
        pair = torch.full((n, n), -1, dtype=torch.int64)
        count = 0
        for a in range(n):
            for b in range(a, n):
                pair[a, b] = pair[b, a] = count
                count += 1
        self.register_buffer("pair_index", pair, persistent=False)
        self.n_pairs = count

    @property
    def n_features(self) -> int:
        n = len(self.species)
        return n * self.g2.shape[0] + self.n_pairs * (self.g4.shape[0] + self.g5.shape[0] + self.ga.shape[0])

    def get_config(self) -> dict:
        return {
            "species": self.species,
            "r_cut": self.r_cut,
            "g2_params": self.g2.tolist(),
            "g4_params": self.g4.tolist(),
            "g5_params": self.g5.tolist(),
            "ga_params": self.ga.tolist(),
            "r_cut_angular": self.r_cut_angular,
        }

    def forward(self, graph: dict[str, torch.Tensor]) -> torch.Tensor:
        """Descriptors ``[n_atoms, n_features]`` from ``graph[keys.EDGE_VECTORS]``."""
        vectors = graph[keys.EDGE_VECTORS]  # [n_edges, 3]
        centres = graph[keys.EDGE_INDEX][0]
        neighbours = graph[keys.EDGE_INDEX][1]
        n_atoms = graph[keys.POSITIONS].shape[0]
        element = self.z_to_index[graph[keys.ATOMIC_NUMBERS]]  # [n_atoms]
        dtype = vectors.dtype
        n_el = len(self.species)
        r = torch.linalg.vector_norm(vectors, dim=-1)  # [n_edges]
        blocks = []
        if self.g2.shape[0]:
            eta, rs = self.g2.to(dtype).unbind(-1)
            g2 = torch.exp(-eta * (r[:, None] - rs) ** 2) * cosine_cutoff(r, self.r_cut)[:, None]
            slot = centres * n_el + element[neighbours]  # [n_edges]
            out = vectors.new_zeros((n_atoms * n_el, g2.shape[1])).index_add_(0, slot, g2)
            blocks.append(out.reshape(n_atoms, -1))
        if self.g4.shape[0] or self.g5.shape[0] or self.ga.shape[0]:
            blocks.append(self._angular(vectors, r, centres, neighbours, element, n_atoms))
        return torch.cat(blocks, dim=1)

    def _factor(self, name: str, like: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The factor tables of one family on ``like``'s device and dtype."""
        r_u, r_idx, a_u, a_idx = self._factors[name]
        device, dtype = like.device, like.dtype
        return r_u.to(device, dtype), r_idx.to(device), a_u.to(device, dtype), a_idx.to(device)

    def _angular(self, vectors, r, centres, neighbours, element, n_atoms) -> torch.Tensor:
        keep = torch.nonzero(r < self.r_cut_angular).squeeze(-1)  # edges inside the angular cutoff
        a, b = unordered_edge_pairs(centres[keep], n_atoms)
        a, b = keep[a], keep[b]
        rij, rik = vectors[a], vectors[b]  # [n_trip, 3]
        dij, dik = r[a], r[b]
        cos = (rij * rik).sum(-1) / (dij * dik)  # [n_trip]
        rjk_vec = rik - rij
        djk2 = (rjk_vec * rjk_vec).sum(-1)
        fc_ij = cosine_cutoff(dij, self.r_cut_angular)
        fc_ik = cosine_cutoff(dik, self.r_cut_angular)
        slot = centres[a] * self.n_pairs + self.pair_index[element[neighbours[a]], element[neighbours[b]]]
        pair_fc = fc_ij * fc_ik
        n_rows = n_atoms * self.n_pairs
        parts = []
        # Each family is an outer product of a radial factor (unique radial parameters) and an
        # angular factor (unique angular parameters), gathered per function: the expensive
        # exp and pow run on [n_trip, n_unique] instead of [n_trip, n_functions].
        for name, with_jk in (("g4", True), ("g5", False)):
            params = getattr(self, name)
            if not params.shape[0]:
                continue
            r_u, r_idx, a_u, a_idx = self._factor(name, vectors)
            r2, fc = dij**2 + dik**2, pair_fc
            if with_jk:
                r2 = r2 + djk2
                fc = fc * cosine_cutoff(torch.sqrt(djk2.clamp(min=1e-30)), self.r_cut_angular)
            radial = torch.exp(-r_u[:, 0] * r2[:, None]) * fc[:, None]  # [n_trip, n_eta]
            zeta, lam = a_u.unbind(-1)
            angular = (
                2.0 ** (1.0 - zeta) * (1.0 + lam * cos[:, None]).clamp(min=0.0) ** zeta
            )  # [n_trip, n_ang]
            g = _outer(radial, angular, r_idx, a_idx)  # [n_trip, n_par]
            parts.append(
                vectors.new_zeros((n_rows, g.shape[1]))
                .index_add_(0, slot, g)
                .reshape(n_atoms, self.n_pairs, -1)
            )
        if self.ga.shape[0]:
            r_u, r_idx, a_u, a_idx = self._factor("ga", vectors)
            eta, rs = r_u.unbind(-1)
            radial = (
                torch.exp(-eta * (0.5 * (dij + dik)[:, None] - rs) ** 2) * pair_fc[:, None]
            )  # [n_trip, n_r]
            zeta, theta_s = a_u.unbind(-1)
            c = 0.95 * cos
            sin = torch.sqrt(1.0 - c * c)  # >= 0.31, smooth
            cos_shift = c[:, None] * torch.cos(theta_s) + sin[:, None] * torch.sin(theta_s)
            angular = 2.0 ** (1.0 - zeta) * (1.0 + cos_shift) ** zeta  # [n_trip, n_theta]
            g = _outer(radial, angular, r_idx, a_idx)  # [n_trip, n_par]
            parts.append(
                vectors.new_zeros((n_rows, g.shape[1]))
                .index_add_(0, slot, g)
                .reshape(n_atoms, self.n_pairs, -1)
            )
        return torch.cat(parts, dim=2).reshape(n_atoms, -1)


def default_acsf_params(
    r_cut: float,
    n_radial: int = 8,
    r_cut_angular: float | None = None,
    n_angular_eta: int = 2,
    angular: str = "g4",
    n_angle_sections: int = 8,
    n_angular_shifts: int = 4,
) -> dict:
    """A general-purpose parameter set.

    G2: ``n_radial`` Gaussians on an even grid from 0.5 Å to ``r_cut``, width = spacing.
    ``angular="g4"``: G4 with ζ ∈ {1, 2, 4, 8, 16}, λ = ±1 at ``n_angular_eta`` widths.
    ``angular="ani"``: GA with ``n_angle_sections`` angle shifts θ_s on (0, π) and
    ``n_angular_shifts`` distance shifts, ζ = 32 (the ANI-1x choice).
    """
    if angular not in ("g4", "ani"):
        raise ValueError(f"angular must be 'g4' or 'ani', got {angular!r}")
    r_min = 0.5
    spacing = (r_cut - r_min) / max(n_radial - 1, 1)
    eta = 1.0 / (2.0 * spacing**2)
    g2 = [(eta, r_min + k * spacing) for k in range(n_radial)]
    ra = r_cut_angular or r_cut
    etas = [1.0 / (2.0 * (ra * f) ** 2) for f in (0.5, 0.25, 0.15)[:n_angular_eta]]
    if angular == "g4":
        g4 = [(e, z, lam) for e in etas for z in (1.0, 2.0, 4.0, 8.0, 16.0) for lam in (-1.0, 1.0)]
        return {"g2_params": g2, "g4_params": g4}
    a_min = 0.8
    a_step = (ra - a_min) / n_angular_shifts
    a_eta = 1.0 / (2.0 * (0.75 * a_step) ** 2)
    shifts = [a_min + (k + 0.5) * a_step for k in range(n_angular_shifts)]
    thetas = [math.pi * (k + 0.5) / n_angle_sections for k in range(n_angle_sections)]
    ga = [(a_eta, 32.0, r_s, t) for r_s in shifts for t in thetas]
    return {"g2_params": g2, "ga_params": ga}
