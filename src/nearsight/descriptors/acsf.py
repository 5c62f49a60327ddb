"""Atom-centred symmetry functions (Behler, J. Chem. Phys. 134, 074106, 2011), in torch,
with DScribe's conventions and feature order.

Radial, resolved by the neighbour's element (f_c(r) = ½ [cos(π r / r_c) + 1] for r < r_c):

    G1_i = Σ_j f_c(r_ij)
    G2_i = Σ_j exp(-η (r_ij - r_s)²) f_c(r_ij)
    G3_i = Σ_j cos(κ r_ij) f_c(r_ij)

Angular, resolved by the unordered element pair of the two neighbours, each
unordered neighbour pair counted once:

    G4_i = 2^(1-ζ) Σ_{j<k} (1 + λ cos θ_ijk)^ζ exp(-η (r_ij² + r_ik² + r_jk²)) f_c(r_ij) f_c(r_ik) f_c(r_jk)
    G5_i = 2^(1-ζ) Σ_{j<k} (1 + λ cos θ_ijk)^ζ exp(-η (r_ij² + r_ik²)) f_c(r_ij) f_c(r_ik)

(2^(1-ζ) (1 + λ cos θ)^ζ is DScribe's 2 [½ (1 + λ cos θ)]^ζ), and, as an extension beyond
DScribe, the angle- and distance-shifted angular function of ANI (Smith, Isayev &
Roitberg, Chem. Sci. 8, 3192, 2017), which resolves angles and distances finer:

    GA_i = 2^(1-ζ) Σ_{j<k} (1 + cos(θ'_ijk - θ_s))^ζ exp(-η ((r_ij + r_ik)/2 - r_s)²) f_c(r_ij) f_c(r_ik)

with θ' = arccos(0.95 cos θ) keeping the derivative finite at θ = 0 and π.

Feature order (DScribe's): for each neighbour element (ascending Z) the block
``[G1, G2 × n_g2, G3 × n_g3]``; then for each unordered element pair the block
``[G4 × n_g4, G5 × n_g5, GA × n_ga]``, pairs ordered as DScribe does: species
indices (a, b) with a >= b at position a (a + 1) / 2 + b, i.e. (0,0), (1,0), (1,1),
(2,0), (2,1), (2,2), ...  Without GA parameters and with ``r_cut_angular = r_cut``
the output equals ``dscribe.descriptors.ACSF(...).create(atoms)``.

Everything is differentiable, so forces and stress of a model built on these features
come from autograd without dense descriptor-derivative arrays.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from .. import keys
from ..nn import cosine_cutoff, is_tracing
from .base import Descriptor, atomic_numbers_of
from .triplets import unordered_edge_pairs

_TRIPLETS_PER_CHUNK = 16384  # per-triplet work arrays of one chunk stay in cache
_CHECKPOINT_TRIPLETS = 1 << 21  # above this many triplets, chunks are recomputed in the backward pass

# Column names of each parameter table, and the checks on them.
_COLUMNS = {
    "g2_params": ("eta", "r_s"),
    "g4_params": ("eta", "zeta", "lambda"),
    "g5_params": ("eta", "zeta", "lambda"),
    "ga_params": ("eta", "zeta", "r_s", "theta_s"),
}


def _as_array(values, name: str, what: str) -> np.ndarray:
    try:
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be {what}, got {values!r}") from err


def _params(values: Sequence[Sequence[float]] | None, name: str) -> torch.Tensor:
    """A validated ``[n, width]`` float64 table of one family's parameters (``[0, width]`` if none)."""
    columns = _COLUMNS[name]
    width = len(columns)
    what = f"a list of ({', '.join(columns)}) rows"
    if values is None:
        return torch.zeros((0, width), dtype=torch.float64)
    t = _as_array(values, name, what)
    if t.size == 0:
        return torch.zeros((0, width), dtype=torch.float64)
    if t.ndim != 2 or t.shape[1] != width:
        raise ValueError(f"{name} must be {what}, got shape {t.shape}: {values!r}")
    if not np.isfinite(t).all():
        raise ValueError(f"{name} must be finite, got {values!r}")
    if (t[:, 0] < 0).any():
        raise ValueError(f"{name}: eta must be >= 0, got {t[:, 0].tolist()}")
    if name != "g2_params" and (t[:, 1] < 1).any():
        raise ValueError(f"{name}: zeta must be >= 1 (finite forces at θ = 0, π), got {t[:, 1].tolist()}")
    if "lambda" in columns and (np.abs(t[:, 2]) > 1).any():
        raise ValueError(f"{name}: lambda must be in [-1, 1] (usually ±1), got {t[:, 2].tolist()}")
    return torch.as_tensor(t)


def _kappas(values: Sequence[float] | None) -> torch.Tensor:
    """The validated 1-D table of G3 wave numbers κ."""
    if values is None:
        return torch.zeros(0, dtype=torch.float64)
    t = _as_array(values, "g3_params", "a 1-D list of kappa values")
    if t.size == 0:
        return torch.zeros(0, dtype=torch.float64)
    if t.ndim != 1:
        raise ValueError(f"g3_params must be a 1-D list of kappa values, got shape {t.shape}: {values!r}")
    if not np.isfinite(t).all():
        raise ValueError(f"g3_params must be finite, got {values!r}")
    return torch.as_tensor(t)


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


def _on_grid(r_idx: torch.Tensor, a_idx: torch.Tensor, n_r: int, n_a: int) -> bool:
    """Whether the functions lie on a radial-major grid of their unique radial and angular rows."""
    return r_idx.shape[0] == n_r * n_a and bool(
        (r_idx == torch.arange(n_r).repeat_interleave(n_a)).all()
        and (a_idx == torch.arange(n_a).repeat(n_r)).all()
    )


def _outer(
    radial: torch.Tensor, angular: torch.Tensor, r_idx: torch.Tensor, a_idx: torch.Tensor, grid: bool
) -> torch.Tensor:
    """Columns ``radial[:, r_idx[p]] * angular[:, a_idx[p]]``; for parameters on a radial-major
    ``grid`` (the default sets) one product per radial column, concatenated (a broadcast outer
    product over two short inner axes is several times slower), a gather otherwise."""
    if grid:
        return torch.cat([col[:, None] * angular for col in radial.unbind(1)], dim=1)
    return radial[:, r_idx] * angular[:, a_idx]


def _int_pow(x: torch.Tensor, n: int) -> torch.Tensor:
    """``x ** n`` for an integer n >= 1 by repeated squaring (a few multiplications instead of
    ``exp(n log x)``; exact derivatives at x = 0)."""
    out, square = None, x
    while True:
        if n & 1:
            out = square if out is None else out * square
        n >>= 1
        if not n:
            return out
        square = square * square


def _power(x: torch.Tensor, zeta: torch.Tensor, z: list[float]) -> torch.Tensor:
    """``x ** zeta`` column by column (``x [n, k]``, ``zeta [k]``, the same exponents as the list
    ``z``), by repeated squaring where the exponents are integers up to 64 (the usual ζ = 1, 2, 4,
    8, 16, 32)."""
    if not all(float(v).is_integer() and 1 <= v <= 64 for v in z):
        return x**zeta
    if len(set(z)) == 1:
        return _int_pow(x, int(z[0]))
    return torch.stack([_int_pow(col, int(v)) for col, v in zip(x.unbind(1), z)], dim=1)


class ACSF(Descriptor):
    """Element-resolved G1-G5 symmetry functions (DScribe's ACSF), plus ANI-style GA.

    Args:
        species: the elements the descriptor resolves, atomic numbers or chemical symbols
            (sorted by atomic number internally).
        r_cut: cutoff (Å) of G1-G3, and of G4/G5/GA unless ``r_cut_angular`` is given.
        g2_params: ``[(eta, r_s), ...]`` (Å⁻², Å).
        g3_params: ``[kappa, ...]`` (Å⁻¹).
        g4_params: ``[(eta, zeta, lambda), ...]`` (Å⁻², -, -).
        g5_params: ``[(eta, zeta, lambda), ...]``.
        ga_params: ``[(eta, zeta, r_s, theta_s), ...]`` (Å⁻², -, Å, rad), ANI-style (our extension).
        r_cut_angular: cutoff of all angular terms, f_c(r_jk) of G4 included (our extension;
            defaults to ``r_cut``, DScribe's setting).
        periodic: whether :meth:`compute` honours the cell and pbc of the ``Atoms`` (DScribe's
            ``periodic``); ``forward(graph)`` uses whatever neighbour graph it is given.

    G1 is always computed (DScribe always outputs it), so
    ``n_features = (1 + n_g2 + n_g3) n_elements + (n_g4 + n_g5 + n_ga) n_pairs``.
    """

    def __init__(
        self,
        species: Sequence[int | str],
        r_cut: float,
        g2_params: Sequence[Sequence[float]] | None = None,
        g3_params: Sequence[float] | None = None,
        g4_params: Sequence[Sequence[float]] | None = None,
        g5_params: Sequence[Sequence[float]] | None = None,
        *,
        ga_params: Sequence[Sequence[float]] | None = None,
        r_cut_angular: float | None = None,
        periodic: bool = False,
    ) -> None:
        super().__init__()
        self.species = atomic_numbers_of(species)
        self.r_cut = float(r_cut)
        if not (math.isfinite(self.r_cut) and self.r_cut > 0):
            raise ValueError(f"r_cut must be a positive number, got {r_cut!r}")
        self.r_cut_angular = float(r_cut_angular) if r_cut_angular is not None else self.r_cut
        if not 0 < self.r_cut_angular <= self.r_cut:
            raise ValueError(f"r_cut_angular must be in (0, r_cut], got {self.r_cut_angular}")
        self.periodic = bool(periodic)
        self.register_buffer("g2", _params(g2_params, "g2_params"))
        self.register_buffer("g3", _kappas(g3_params))
        self.register_buffer("g4", _params(g4_params, "g4_params"))
        self.register_buffer("g5", _params(g5_params, "g5_params"))
        self.register_buffer("ga", _params(ga_params, "ga_params"))
        # radial columns and angular columns of each angular family
        self._factors = {
            name: _factorise(getattr(self, name), radial, angular)
            for name, radial, angular in (("g4", [0], [1, 2]), ("g5", [0], [1, 2]), ("ga", [0, 2], [1, 3]))
        }
        # per family, as Python values (no tensor reads in forward): the exponents ζ and the grid layout
        self._zetas = {name: f[2][:, 0].tolist() for name, f in self._factors.items()}
        self._grids = {
            name: _on_grid(f[1], f[3], f[0].shape[0], f[2].shape[0]) for name, f in self._factors.items()
        }
        n = len(self.species)
        z_to_index = torch.full((119,), -1, dtype=torch.int64)
        z_to_index[torch.tensor(self.species)] = torch.arange(n)
        self.register_buffer("z_to_index", z_to_index, persistent=False)
        # DScribe's pair order: (a, b), a >= b, at a (a + 1) / 2 + b
        pair = torch.full((n, n), -1, dtype=torch.int64)
        for a in range(n):
            for b in range(a + 1):
                pair[a, b] = pair[b, a] = a * (a + 1) // 2 + b
        self.register_buffer("pair_index", pair, persistent=False)
        self.n_pairs = n * (n + 1) // 2

    @property
    def n_radial_per_element(self) -> int:
        """Features per neighbour element: G1, the G2s and the G3s."""
        return 1 + self.g2.shape[0] + self.g3.shape[0]

    @property
    def n_angular_per_pair(self) -> int:
        """Features per element pair: the G4s, G5s and GAs."""
        return self.g4.shape[0] + self.g5.shape[0] + self.ga.shape[0]

    @property
    def n_features(self) -> int:
        return len(self.species) * self.n_radial_per_element + self.n_pairs * self.n_angular_per_pair

    def get_config(self) -> dict:
        return {
            "species": list(self.species),
            "r_cut": self.r_cut,
            "g2_params": self.g2.tolist(),
            "g3_params": self.g3.tolist(),
            "g4_params": self.g4.tolist(),
            "g5_params": self.g5.tolist(),
            "ga_params": self.ga.tolist(),
            "r_cut_angular": self.r_cut_angular,
            "periodic": self.periodic,
        }

    def extra_repr(self) -> str:
        return (
            f"species={self.species}, r_cut={self.r_cut}, r_cut_angular={self.r_cut_angular}, "
            f"n_g2={self.g2.shape[0]}, n_g3={self.g3.shape[0]}, n_g4={self.g4.shape[0]}, "
            f"n_g5={self.g5.shape[0]}, n_ga={self.ga.shape[0]}, periodic={self.periodic}"
        )

    def forward(self, graph: dict[str, torch.Tensor]) -> torch.Tensor:
        """Descriptors ``[n_atoms, n_features]`` from ``graph[keys.EDGE_VECTORS]``.

        The graph may have been built with any cutoff >= ``r_cut``; edges beyond it add nothing.
        """
        vectors = graph[keys.EDGE_VECTORS]  # [n_edges, 3]
        centres = graph[keys.EDGE_INDEX][0]
        neighbours = graph[keys.EDGE_INDEX][1]
        n_atoms = graph[keys.POSITIONS].shape[0]
        element = self.z_to_index[graph[keys.ATOMIC_NUMBERS]]  # [n_atoms]
        dtype = vectors.dtype
        n_el = len(self.species)
        r = torch.linalg.vector_norm(vectors, dim=-1)  # [n_edges]
        fc = cosine_cutoff(r, self.r_cut)[:, None]  # [n_edges, 1]
        columns = [fc]  # G1
        if self.g2.shape[0]:
            eta, rs = self.g2.to(dtype).unbind(-1)
            columns.append(torch.exp(-eta * (r[:, None] - rs) ** 2) * fc)
        if self.g3.shape[0]:
            columns.append(torch.cos(r[:, None] * self.g3.to(dtype)) * fc)
        radial = torch.cat(columns, dim=1) if len(columns) > 1 else fc  # [n_edges, n_radial]
        slot = centres * n_el + element[neighbours]  # [n_edges]
        out = vectors.new_zeros((n_atoms * n_el, radial.shape[1])).index_add_(0, slot, radial)
        blocks = [out.reshape(n_atoms, -1)]
        if self.n_angular_per_pair:
            blocks.append(self._angular(vectors, r, centres, neighbours, element, n_atoms))
        return torch.cat(blocks, dim=1) if len(blocks) > 1 else blocks[0]

    def _factor(self, name: str, like: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The factor tables of one family on ``like``'s device and dtype."""
        r_u, r_idx, a_u, a_idx = self._factors[name]
        device, dtype = like.device, like.dtype
        return r_u.to(device, dtype), r_idx.to(device), a_u.to(device, dtype), a_idx.to(device)

    def _angular(self, vectors, r, centres, neighbours, element, n_atoms) -> torch.Tensor:
        """Angular features ``[n_atoms, n_pairs · n_angular_per_pair]``, in chunks of whole centres.

        Each chunk holds about ``_TRIPLETS_PER_CHUNK`` triplets, so the per-triplet work arrays
        stay in cache, and under autograd large graphs checkpoint their chunks (memory linear
        in the number of atoms with a small constant, not in the number of triplets).
        """
        keep = torch.nonzero(r < self.r_cut_angular).squeeze(-1)  # edges inside the angular cutoff
        vectors, r, centres, neighbours = vectors[keep], r[keep], centres[keep], neighbours[keep]
        if is_tracing():  # export: one chunk (the kept edges' count is a size the package reads at run time)
            return self._angular_chunk(vectors, r, centres, element[neighbours], n_atoms)
        counts = torch.bincount(centres, minlength=n_atoms)
        triplets = (counts * (counts - 1) // 2).tolist()
        ends = torch.cumsum(counts, 0).tolist()
        grad = torch.is_grad_enabled() and vectors.requires_grad
        checkpointed = grad and sum(triplets) > _CHECKPOINT_TRIPLETS
        chunks, a0 = [], 0
        while a0 < n_atoms:
            a1, n_trip = a0, 0
            while a1 < n_atoms and (a1 == a0 or n_trip + triplets[a1] <= _TRIPLETS_PER_CHUNK):
                n_trip += triplets[a1]
                a1 += 1
            chunks.append((a0, a1))
            a0 = a1
        sizes = [ends[a1 - 1] - (ends[a0 - 1] if a0 else 0) for a0, a1 in chunks]
        # split, not slices: a slice's backward fills a gradient of the whole tensor per chunk
        pieces = zip(
            vectors.split(sizes), r.split(sizes), centres.split(sizes), element[neighbours].split(sizes)
        )
        parts = []
        for (a0, a1), (v, d, c, kind) in zip(chunks, pieces):
            args = (v, d, c - a0, kind, a1 - a0)
            if checkpointed:
                from torch.utils.checkpoint import checkpoint

                parts.append(checkpoint(self._angular_chunk, *args, use_reentrant=False))
            else:
                parts.append(self._angular_chunk(*args))
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def _angular_chunk(self, vectors, r, centres, kind, n_atoms) -> torch.Tensor:
        """Angular features of ``n_atoms`` centres from their edges (centres local, sorted)."""
        a, b = unordered_edge_pairs(centres, n_atoms)
        xyz = vectors.T  # [3, n_edges]: gathers and sums over the coordinates run on long rows
        rij, rik = xyz[:, a], xyz[:, b]  # [3, n_trip]
        dij, dik = r[a], r[b]
        cos = (rij * rik).sum(0) / (dij * dik)  # [n_trip]
        rjk_vec = rik - rij
        djk2 = (rjk_vec * rjk_vec).sum(0)
        fc = cosine_cutoff(r, self.r_cut_angular)
        fc_ij, fc_ik = fc[a], fc[b]
        slot = centres[a] * self.n_pairs + self.pair_index[kind[a], kind[b]]
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
            angular = 2.0 ** (1.0 - zeta) * _power(
                (1.0 + lam * cos[:, None]).clamp(min=0.0), zeta, self._zetas[name]
            )
            g = _outer(radial, angular, r_idx, a_idx, self._grids[name])  # [n_trip, n_par]
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
            angular = 2.0 ** (1.0 - zeta) * _power(
                1.0 + cos_shift, zeta, self._zetas["ga"]
            )  # [n_trip, n_theta]
            g = _outer(radial, angular, r_idx, a_idx, self._grids["ga"])  # [n_trip, n_par]
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
