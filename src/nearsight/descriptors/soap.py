"""Smooth Overlap of Atomic Positions: the partial power spectrum, in torch.

Bartók, Kondor & Csányi, Phys. Rev. B 87, 184115 (2013) (with its erratum); element
resolution as in De, Bartók, Csányi & Ceriotti, PCCP 18, 13754 (2016).  Conventions,
radial bases and feature order are DScribe's (Himanen et al., Comput. Phys. Commun.
247, 106949, 2020), so the two compare element by element.

The neighbour density of element Z around atom i is a sum of unnormalised Gaussians,

    ρ_i^Z(r) = Σ_{j ∈ Z} w(r_ij) exp(-|r - r_ij|² / 2σ²),

the centre atom included.  It is expanded in radial functions g_nl and real spherical
harmonics Y_lm over all space, c^Z_nlm = ∫ g_nl(r) Y_lm(r̂) ρ_i^Z(r) d³r, and

    p^{ZZ'}_{nn'l} = π √(8/(2l+1)) Σ_m c^Z_nlm c^Z'_n'lm.

Radial bases:

* ``"gto"``: g_nl(r) = Σ_k β_nkl r^l exp(-α_kl r²), the α decaying to 10⁻³ at n_max
  distances evenly spaced on [1 Å, r_cut], Löwdin-orthonormalised.  The integral is
  analytic: with η = 1/2σ²,

      c_nlm = π^{3/2} Σ_j w_j Σ_k β_nkl η^l/(α_kl+η)^{l+3/2} exp(-α_kl η r_j²/(α_kl+η)) r_j^l Y_lm(r̂_j).

  Atoms are included up to r_cut + σ √(-2 ln 10⁻³) (DScribe's padding).
* ``"polynomial"``: g_n(r) = Σ_k β_nk (r_cut - r)^{k+2} on [0, r_cut], orthonormalised,
  integrated radially on DScribe's 100-point Gauss-Legendre grid with its recurrence for
  the modified spherical Bessel functions (including its truncations), so values match.

Optional weighting of each neighbour's Gaussian (DScribe's ``weighting`` dict, :mod:`.weighting`):
``{"function": "poly", "r0", "c", "m"}``: w = c (1 + 2x³ - 3x²)^m for x = r/r0 <= 1, else 0,
which makes the descriptor (and a potential built on it) smooth at r0;
``"pow"``: w = c / (d + (r/r0)^m); ``"exp"``: w = c / (d + exp(-r/r0)); ``"w0"``: the
weight of the centre atom.

Optionally (``bispectrum={"n_max": n, "l_max": l}``) the four-body bispectrum of a second, coarser
expansion of the same density is appended to the power spectrum (:mod:`.bispectrum`); with
``n_max`` equal to the power spectrum's it reuses that expansion's l <= ``l_max`` coefficients.

Everything is differentiable; forces and stress of a model on SOAP come from autograd.
Work and memory are linear in the number of atoms: per-edge terms are accumulated in
chunks, so no ``[n_edges, n_max, (l_max+1)²]`` array ever exists at once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .. import keys
from ..nn import buffer_value, is_tracing
from .base import Descriptor, atomic_numbers_of
from .bispectrum import Bispectrum, checked_spec
from .radial_basis import DECAY, gto_basis, polynomial_basis
from .solid_harmonics import real_solid_harmonics, solid_harmonics_lm_first
from .weighting import centre_weight, check_weighting, inferred_r_cut, neighbour_weights

# Per-edge working set of one chunk, in scalars.  Kept well below glibc's largest mmap
# threshold (32 MiB): larger blocks are mapped and unmapped on every allocation, and the
# page faults cost more than the arithmetic.
_CHUNK_ELEMENTS = 1 << 20
# Above this much per-edge work in all (scalars), chunks are checkpointed under autograd
# (recomputed in the backward pass) so memory stays bounded; below it, kept.
_CHECKPOINT_ELEMENTS = 1 << 25


class SOAP(Descriptor):
    """SOAP partial power spectrum with DScribe's arguments and feature order.

    Args:
        species: elements resolved (atomic numbers or symbols; sorted by Z internally).
        r_cut: cutoff (Å); may be left ``None`` with a weighting function, as in DScribe.
        n_max: number of radial basis functions.
        l_max: largest angular momentum.
        sigma: Gaussian width σ of the atomic density (Å).
        rbf: ``"gto"`` or ``"polynomial"``.
        weighting: DScribe's weighting dict (see the module docstring) or ``None``.
        periodic: whether ``compute(atoms)`` uses the cell; ``forward`` uses the graph it is given.
        bispectrum: ``{"n_max": n, "l_max": l}`` appends the bispectrum of an expansion with n
            radial functions (default 4) and l <= l (default 3) after the power spectrum.
    """

    def __init__(
        self,
        species: Sequence[int | str],
        r_cut: float | None = None,
        n_max: int = 8,
        l_max: int = 6,
        sigma: float = 1.0,
        rbf: str = "gto",
        weighting: dict | None = None,
        periodic: bool = False,
        bispectrum: dict | None = None,
    ) -> None:
        super().__init__()
        self.species = atomic_numbers_of(species)
        if rbf not in ("gto", "polynomial"):
            raise ValueError(f"rbf must be 'gto' or 'polynomial', got {rbf!r}")
        if int(n_max) != n_max or n_max < 1:
            raise ValueError(f"n_max must be a positive integer, got {n_max!r}")
        if int(l_max) != l_max or not 0 <= l_max <= 20:
            raise ValueError(f"l_max must be an integer in [0, 20], got {l_max!r}")
        if not sigma > 0:
            raise ValueError(f"sigma must be > 0, got {sigma!r}")
        self.weighting = check_weighting(weighting)
        if r_cut is None:
            r_cut = inferred_r_cut(self.weighting)
        if not r_cut or r_cut <= 0:
            raise ValueError(f"r_cut must be > 0 (or given through a weighting function), got {r_cut!r}")
        if rbf == "gto" and r_cut <= 1.0:
            raise ValueError(f"the GTO basis needs r_cut > 1 Å, got {r_cut}")
        self.r_cut, self.n_max, self.l_max = float(r_cut), int(n_max), int(l_max)
        self.sigma, self.rbf, self.periodic = float(sigma), rbf, bool(periodic)
        self.eta = 1.0 / (2.0 * self.sigma**2)
        self.padding = self.sigma * math.sqrt(-2.0 * math.log(DECAY))
        n_lm = (self.l_max + 1) ** 2
        lm_to_l = torch.tensor([l for l in range(self.l_max + 1) for _ in range(2 * l + 1)])
        self.register_buffer("lm_to_l", lm_to_l, persistent=False)
        if rbf == "gto":
            alphas, betas = gto_basis(self.r_cut, self.n_max, self.l_max)
            alphas, betas = torch.as_tensor(alphas), torch.as_tensor(betas)
            scaled = alphas / (1.0 + alphas / self.eta)  # α η / (α + η)
            ls = torch.arange(self.l_max + 1, dtype=torch.float64)[:, None]
            mix = (
                betas * (self.eta**-1.5 * (1.0 + alphas / self.eta) ** -(ls + 1.5))[:, None, :] * math.pi**1.5
            )
            # kept in float64 (plain attributes, untouched by module.to(dtype)): see _chunk_coefficients
            self._decay64, self._mix64 = scaled, mix  # [L, K], [L, N, K]
            self_term = mix[0].sum(-1) / math.sqrt(4 * math.pi)  # r = 0: only l = 0
        else:
            nodes, weights, values = polynomial_basis(self.r_cut, self.n_max)
            nodes, weights, values = (torch.as_tensor(a) for a in (nodes, weights, values))
            project = values * (nodes**2 * weights)[None, :]  # [N, W]
            self.register_buffer("nodes", nodes, persistent=False)
            self.register_buffer("project", project, persistent=False)
            self_term = 0.5 / math.sqrt(math.pi) * (project * torch.exp(-self.eta * nodes**2)).sum(-1)
        self.register_buffer("self_term", self_term, persistent=False)  # [N or K]
        prefactor = torch.tensor(
            [math.pi * math.sqrt(8.0 / (2 * l + 1)) for l in range(self.l_max + 1)], dtype=torch.float64
        )
        if rbf == "polynomial":
            prefactor = prefactor * (2.0 * math.pi * self.r_cut) ** 2
        self._set_feature_index(prefactor)
        n = len(self.species)
        z_to_index = torch.full((119,), -1, dtype=torch.int64)
        z_to_index[torch.tensor(self.species)] = torch.arange(n)
        self.register_buffer("z_to_index", z_to_index, persistent=False)
        self._n_lm = n_lm
        self._set_bispectrum(bispectrum)

    # -- configuration ---------------------------------------------------------------------

    @property
    def neighbour_cutoff(self) -> float:
        """r_cut plus the Gaussian padding; the weighting radius where it has compact support."""
        full = self.r_cut + self.padding
        if self.weighting.get("function") == "poly":
            return min(full, self.weighting["r0"])
        return full

    def _set_bispectrum(self, spec: dict | None) -> None:
        self.bispectrum_spec, self.bispectrum, self.bispectrum_density = None, None, None
        if spec is None:
            return
        self.bispectrum_spec = checked_spec(spec, self.n_max, self.l_max)
        n_b, l_b = self.bispectrum_spec["n_max"], self.bispectrum_spec["l_max"]
        if n_b != self.n_max:  # a second expansion of the same density, n_b radial functions
            args = (self.r_cut, n_b, l_b, self.sigma, self.rbf, self.weighting or None, self.periodic)
            self.bispectrum_density = SOAP(self.species, *args)
        # in the units of the power spectrum: coefficients scaled by the square root of its l = 0 prefactor
        scale = float(self.feature_prefactor[0]) ** 1.5
        self.bispectrum = Bispectrum(len(self.species), n_b, l_b, m_order=self.rbf != "gto", scale=scale)

    @property
    def n_features(self) -> int:
        sn = len(self.species) * self.n_max
        extra = self.bispectrum.n_features if self.bispectrum is not None else 0
        return sn * (sn + 1) // 2 * (self.l_max + 1) + extra

    def get_config(self) -> dict:
        return {
            "species": self.species,
            "r_cut": self.r_cut,
            "n_max": self.n_max,
            "l_max": self.l_max,
            "sigma": self.sigma,
            "rbf": self.rbf,
            "weighting": {k: v for k, v in self.weighting.items()} or None,
            "periodic": self.periodic,
            "bispectrum": self.bispectrum_spec,
        }

    def get_location(self, pair: tuple[int | str, int | str]) -> slice:
        """Columns of the element pair ``(Z1, Z2)`` in the output (DScribe's ``get_location``)."""
        z1, z2 = (atomic_numbers_of([p])[0] for p in pair)
        if z1 not in self.species or z2 not in self.species:
            raise ValueError(f"pair {pair!r} not in the descriptor's species {self.species}")
        a, b = sorted((self.species.index(z1), self.species.index(z2)))
        return self._pair_slices[(a, b)]

    def _set_feature_index(self, prefactor: torch.Tensor) -> None:
        """Flat indices into ``[L, S·N, S·N]`` of each feature, in DScribe's order."""
        n_el, n = len(self.species), self.n_max
        sn = n_el * n
        flat, pref = [], []
        self._pair_slices = {}
        for a in range(n_el):
            for b in range(a, n_el):
                start = len(flat)
                for l in range(self.l_max + 1):
                    for i in range(n):
                        for j in range(i if a == b else 0, n):
                            flat.append((l * sn + a * n + i) * sn + b * n + j)
                            pref.append(float(prefactor[l]))
                self._pair_slices[(a, b)] = slice(start, len(flat))
        self.register_buffer("feature_index", torch.tensor(flat), persistent=False)
        self.register_buffer("feature_prefactor", torch.tensor(pref, dtype=torch.float64), persistent=False)

    # -- computation -----------------------------------------------------------------------

    def _weights(self, r: torch.Tensor) -> torch.Tensor | None:
        return neighbour_weights(self.weighting, r)

    def _centre_weight(self) -> float:
        return centre_weight(self.weighting)

    def _radial_polynomial(self, r2: torch.Tensor) -> torch.Tensor:
        """Projected radial terms ``[e, L, N]`` by DScribe's radial quadrature."""
        out = r2.new_empty((r2.shape[0], self.l_max + 1, self.n_max))
        step = 1024  # keeps the [e, L, 100] work arrays in cache
        for start in range(0, r2.shape[0], step):
            out[start : start + step] = self._radial_polynomial_block(r2[start : start + step])
        return out

    def _radial_polynomial_block(self, r2: torch.Tensor) -> torch.Tensor:
        ri = torch.sqrt(r2)
        rw = self.nodes.to(r2.dtype)  # [W]
        eta = self.eta
        inv_4ar = (0.25 * (1.0 / eta) * (1.0 / ri))[:, None] * (1.0 / rw)[None, :]  # [e, W]
        diff = rw[None, :] - ri[:, None]
        total = rw[None, :] + ri[:, None]
        # DScribe drops these Gaussians beyond 5 Å (absolute); reproduced for equality
        minus = torch.where(diff > 5.0, torch.zeros_like(diff), torch.exp(-eta * diff * diff))
        plus = torch.where(total > 5.0, torch.zeros_like(total), torch.exp(-eta * total * total))
        # exp(-η(r² + r_i²)) i_l(2η r r_i) by the upward recurrence, negatives clipped, as in DScribe
        f = [inv_4ar * (minus - plus)]
        if self.l_max > 0:
            f.append(inv_4ar * (minus + plus - 2.0 * f[0]))
        for l in range(2, self.l_max + 1):
            f.append((f[l - 2] - inv_4ar * (4 * l - 2) * f[l - 1]).clamp(min=0.0))
        return torch.stack(f, dim=1) @ self.project.to(r2.dtype).T  # [e, L, N]

    def _chunk_coefficients(
        self,
        vec: torch.Tensor,
        r2: torch.Tensor,
        row: torch.Tensor,
        pos: torch.Tensor,
        n_rows: int,
        width: int,
    ) -> torch.Tensor:
        """Σ over each row's edges of radial ⊗ angular, ``[n_rows, LM, N]``.

        A row is one (centre, neighbour element) pair; its edges are laid out
        ``[row, slot]``, zero padded to ``width``, and each l is one batched matrix product,
        so no per-edge ``[LM, N]`` array is formed.
        """
        if self.rbf == "gto":
            return self._chunk_gto(vec, row, pos, n_rows, width)
        n_l = self.l_max + 1
        weights = self._weights(torch.sqrt(r2)) if self.weighting.get("function") else None
        radial = vec.new_zeros((n_l, n_rows, width, self.n_max))
        radial[:, row, pos] = self._radial_polynomial(r2).transpose(0, 1)
        ri = torch.sqrt(r2)
        powers = torch.stack([ri**l for l in range(n_l)], dim=-1)[:, self.lm_to_l]
        angular = real_solid_harmonics(vec, self.l_max) / powers
        if weights is not None:
            angular = angular * weights[:, None]
        ap = vec.new_zeros((n_rows, self._n_lm, width))
        ap[row, :, pos] = angular
        blocks = [torch.bmm(a, r) for a, r in zip(ap.split([2 * l + 1 for l in range(n_l)], dim=1), radial)]
        return torch.cat(blocks, dim=1)

    def _chunk_gto(
        self, vec: torch.Tensor, row: torch.Tensor, pos: torch.Tensor, n_rows: int, width: int
    ) -> torch.Tensor:
        """The GTO case of ``_chunk_coefficients``.

        The primitive Gaussians exp(-α'_kl r²) are summed over neighbours first and combined
        into the orthonormal radial functions per row afterwards (``mix``), which takes the
        K x N mixing off the edges.  The primitives are far from orthogonal and their
        combinations cancel strongly, so this part runs in float64 whatever the working dtype.
        """
        n_l, n_k = self.l_max + 1, self._decay64.shape[1]
        vec64 = vec.double()
        padded = vec64.new_zeros((n_rows, width, 3)).index_put((row, pos), vec64)
        # empty slots get r² = 10⁶ Å², where every primitive is exactly 0
        r2p = vec64.new_full((n_rows, width), 1e6).index_put((row, pos), (vec64 * vec64).sum(-1))
        decay, mix = self._decay64.to(vec.device), self._mix64.to(vec.device)
        # one product and one exp over [rows·W, L·K]
        prim = torch.exp(r2p.reshape(-1, 1) * decay.neg().reshape(1, -1)).reshape(n_rows, width, n_l, n_k)
        ap = solid_harmonics_lm_first(padded.reshape(-1, 3).T, self.l_max, m_order=False)
        ap = ap.reshape(-1, n_rows, width).transpose(0, 1)  # [rows, LM, W], a view
        if self.weighting.get("function"):
            ap = ap * vec64.new_zeros((n_rows, 1, width)).index_put(
                (row, torch.zeros_like(row), pos), self._weights(torch.sqrt(r2p[row, pos]))
            )
        # split/unbind rather than slices: their backward assembles one gradient, not one per l
        per_l = zip(ap.split([2 * l + 1 for l in range(n_l)], dim=1), prim.unbind(2), mix)
        blocks = [torch.bmm(a, p) @ m.T for a, p, m in per_l]  # [rows, 2l+1, K] -> [rows, 2l+1, N]
        return torch.cat(blocks, dim=1).to(vec.dtype)  # [rows, LM, N]

    def _accumulate(
        self, vec: torch.Tensor, r2: torch.Tensor, slot: torch.Tensor, n_rows: int
    ) -> torch.Tensor:
        """Coefficients ``[n_rows, LM, N]`` of the rows ``slot`` (centre · n_species + element),
        in chunks of whole rows; under autograd each chunk is checkpointed (linear memory)."""
        # rows in order of decreasing edge count, so each chunk pads to a width close to its rows' own
        counts = torch.bincount(slot, minlength=n_rows)
        by_count = torch.argsort(counts, descending=True, stable=True)
        rank = torch.empty_like(by_count).index_put_((by_count,), torch.arange(n_rows, device=vec.device))
        slot = rank[slot]
        order = torch.argsort(slot, stable=True)
        vec, r2, slot = vec[order], r2[order], slot[order]
        counts = counts[by_count]
        starts = torch.cumsum(counts, 0) - counts
        pos = torch.arange(slot.shape[0], device=vec.device) - starts[slot]
        per_edge = 4 + self._n_lm * 2 + (self.l_max + 1) * self.n_max * 2
        # chunks of whole rows, each about _CHUNK_ELEMENTS scalars of per-edge work when padded
        widths = counts.clamp(min=1).tolist()
        chunks, a0 = [], 0
        while a0 < n_rows:
            rows_fit = max(1, _CHUNK_ELEMENTS // (widths[a0] * per_edge))
            chunks.append((a0, min(n_rows, a0 + rows_fit)))
            a0 = chunks[-1][1]
        ends = torch.cumsum(counts, 0).tolist()
        grad = torch.is_grad_enabled() and vec.requires_grad
        n_work = sum(widths[a0] * (a1 - a0) for a0, a1 in chunks) * per_edge
        sizes = [ends[a1 - 1] - (ends[a0 - 1] if a0 else 0) for a0, a1 in chunks]
        # split, not slices: the backward of a slice fills a gradient of the whole tensor,
        # which over all chunks costs O(chunks x edges); split's backward concatenates once
        pieces = zip(vec.split(sizes), r2.split(sizes), slot.split(sizes), pos.split(sizes))
        parts = []
        for (a0, a1), (v, r, sl, ps) in zip(chunks, pieces):
            args = (v, r, sl - a0, ps, a1 - a0, widths[a0])
            if grad and len(chunks) > 1 and n_work > _CHECKPOINT_ELEMENTS:
                from torch.utils.checkpoint import checkpoint  # memory: one chunk at a time

                parts.append(checkpoint(self._chunk_coefficients, *args, use_reentrant=False))
            else:
                parts.append(self._chunk_coefficients(*args))
        return (parts[0] if len(parts) == 1 else torch.cat(parts))[rank]

    def _edge_coefficients(
        self, vec: torch.Tensor, r2: torch.Tensor, slot: torch.Tensor, n_rows: int, keep: torch.Tensor
    ) -> torch.Tensor:
        """Coefficients ``[n_rows, LM, N]`` as a sum of per-edge terms onto their rows: the
        shape-static form of :meth:`_accumulate` that ``torch.export`` traces (edges with ``keep``
        false add exact zeros)."""
        # edges that do not count get a harmless geometry, so no 0/0 enters their (zeroed) terms
        vec = torch.where(keep[:, None], vec, torch.ones_like(vec))
        r2 = torch.where(keep, r2, torch.full_like(r2, 3.0))
        on = keep.to(vec.dtype)
        n_l = self.l_max + 1
        if self.rbf == "gto":
            vec64, r2_64 = vec.double(), r2.double()
            prim = torch.exp(r2_64[:, None, None] * self._decay64.to(vec.device).neg())  # [e, L, K]
            ap = solid_harmonics_lm_first(vec64.T, self.l_max, m_order=False).T * on.double()[:, None]
            if self.weighting.get("function"):
                ap = ap * self._weights(torch.sqrt(r2_64))[:, None]
            blocks = []
            for l, (a, m) in enumerate(zip(ap.split([2 * k + 1 for k in range(n_l)], dim=1), self._mix64)):
                term = a[:, :, None] * prim[:, l, None, :]  # [e, 2l+1, K]
                summed = term.new_zeros(n_rows, 2 * l + 1, term.shape[2]).index_add(0, slot, term)
                blocks.append(summed @ m.to(vec.device).T)  # [rows, 2l+1, N]
            return torch.cat(blocks, dim=1).to(vec.dtype)
        radial = self._radial_polynomial_block(r2)  # [e, L, N]
        ri = torch.sqrt(r2)
        powers = torch.stack([ri**l for l in range(n_l)], dim=-1)[:, self.lm_to_l]
        angular = real_solid_harmonics(vec, self.l_max) / powers * on[:, None]  # [e, LM]
        if self.weighting.get("function"):
            angular = angular * self._weights(ri)[:, None]
        term = angular[:, :, None] * radial[:, self.lm_to_l]  # [e, LM, N]
        return term.new_zeros(n_rows, term.shape[1], term.shape[2]).index_add(0, slot, term)

    def coefficients(self, graph: dict[str, torch.Tensor]) -> torch.Tensor:
        """Expansion coefficients ``[n_atoms, n_species, (l_max+1)², n_max]``."""
        vec = graph[keys.EDGE_VECTORS]
        centres, neighbours = graph[keys.EDGE_INDEX][0], graph[keys.EDGE_INDEX][1]
        numbers = graph[keys.ATOMIC_NUMBERS]
        n_atoms, n_el = numbers.shape[0], len(self.species)
        element = self.z_to_index[numbers]
        traced = is_tracing()  # export: shape-static, per-edge terms summed onto their rows
        if not traced and bool((element < 0).any()):
            raise ValueError(
                f"atomic numbers {sorted(set(numbers[element < 0].tolist()))} not in species {self.species}"
            )
        r2 = (vec * vec).sum(-1)
        keep = r2 <= self.neighbour_cutoff**2
        if self.rbf == "polynomial":  # DScribe treats atoms on the centre as the centre
            keep &= r2 > 1e-12
        slot = centres * n_el + element[neighbours]
        if traced:
            acc = self._edge_coefficients(vec, r2, slot, n_atoms * n_el, keep)
        else:
            if not bool(keep.all()):  # the usual graph is built at this cutoff: nothing to drop
                vec, r2, slot = vec[keep], r2[keep], slot[keep]
            acc = self._accumulate(vec, r2, slot, n_atoms * n_el)
        # the centre atom's own Gaussian (only l = 0)
        centre_slot = torch.arange(n_atoms, device=vec.device) * n_el + element
        own = (buffer_value(self._centre_weight) * self.self_term.to(vec.dtype)).expand(n_atoms, -1)
        acc = acc.index_put((centre_slot, torch.zeros_like(centre_slot)), own, accumulate=True)
        return acc.reshape(n_atoms, n_el, self._n_lm, -1)

    def power_spectrum(self, coeff: torch.Tensor) -> torch.Tensor:
        """``[n_atoms, n_features]`` from coefficients, in DScribe's order."""
        n_atoms, n_el = coeff.shape[0], coeff.shape[1]
        sn = n_el * self.n_max
        blocks = []
        for l in range(self.l_max + 1):
            c = coeff[:, :, l * l : (l + 1) * (l + 1), :].permute(0, 1, 3, 2).reshape(n_atoms, sn, 2 * l + 1)
            blocks.append(torch.bmm(c, c.transpose(1, 2)).reshape(n_atoms, sn * sn))
        full = torch.cat(blocks, dim=1)  # [n_atoms, L·S·N·S·N]
        return full[:, self.feature_index] * self.feature_prefactor.to(coeff.dtype)

    def feature_blocks(self, graph: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        """The power spectrum and, if set, the bispectrum, ``[[n_atoms, F_k]]``: separate autograd
        branches, so the descriptor cache differentiates each without the other."""
        coeff = self.coefficients(graph)
        n_atoms = coeff.shape[0]
        sn = len(self.species) * self.n_max
        per_atom = (self.l_max + 1) * sn * sn
        step = max(1, _CHUNK_ELEMENTS // per_atom)
        if is_tracing() or n_atoms <= step:
            blocks = [self.power_spectrum(coeff)]
        else:
            blocks = [torch.cat([self.power_spectrum(c) for c in coeff.split(step)])]
        if self.bispectrum is None:
            return blocks
        if self.bispectrum_density is None:  # the same radial functions: l <= l_b of this expansion
            coeff_b = coeff[:, :, : (self.bispectrum_spec["l_max"] + 1) ** 2]
        else:
            coeff_b = self.bispectrum_density.coefficients(graph)
        return [*blocks, self.bispectrum(coeff_b)]

    def forward(self, graph: dict[str, torch.Tensor]) -> torch.Tensor:
        """SOAP ``[n_atoms, n_features]`` from ``graph[keys.EDGE_VECTORS]``."""
        blocks = self.feature_blocks(graph)
        return blocks[0] if len(blocks) == 1 else torch.cat(blocks, dim=1)
