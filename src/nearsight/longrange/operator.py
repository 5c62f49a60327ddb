"""The electrostatic potential of one structure as a linear operator on its charges.

For charges q_i (e) with Gaussian densities q_i (2πσ_i²)^(-3/2) exp(−|r − R_i|²/2σ_i²) (σ_i = 0: point
charges) the potential at atom i is

    V_i = Σ'_{j,n} k_e q_j φ_ij(r_ijn) + k_e q_i / (σ_i √π),    E = ½ Σ_i q_i V_i
    φ_ij(r) = (1 − f(r)) erf(r/γ_ij) / r,    γ_ij = √(2(σ_i² + σ_j²))

(k_e in eV·Å/e², r_ijn = |R_j − R_i + n·cell|, n over lattice translations of periodic cells,
the prime dropping j = i at n = 0).  erf(r/γ_ij)/r is the interaction of two Gaussian charges,
k_e q_i²/(2σ_i√π) the electrostatic energy of one Gaussian with itself, which the diagonal term
puts into E (the 4G-HDNNP convention, Ko et al., Nat. Commun. 12, 398 (2021)); it diverges as
σ_i → 0, where E minus the self energies tends to the point-charge energy.
f(r) = 1 − ((1 − cos πr/r_ex)/2)^d for r < r_ex and 0 beyond (torch-pme's ``f_cutoff``, exponent
d = ``exclusion_degree``) switches the interaction smoothly off inside the exclusion radius
r_ex, where a short-range model already describes the atoms; without r_ex, f = 0.

The point-charge part Σ' k_e q_j / r is torch-pme's (direct sum, Ewald or PME, see
:mod:`~nearsight.longrange.coulomb`); the rest is a real-space correction over pairs within
r_corr = max(6 γ_max, r_ex) (erfc(6) = 2e-17):

    ΔV_i = −Σ_{j,n: r < r_corr} k_e q_j [erfc(r/γ_ij) + f(r) erf(r/γ_ij)] / r

found by vesin on detached positions (all pairs of a non-periodic structure) with the distances
recomputed in torch, so forces and the strain derivative (stress) stay exact.

torch-pme's own ``exclusion_radius`` is used only as the definition of f: in its range-separated
(Ewald/PME) calculators the exclusion replaces the whole real-space part, so the pair interaction
beyond r_ex becomes erf(r/√2 s)/r with the splitting width s, which the accuracy tuning chooses
per cell, instead of 1/r.  Here the exclusion acts on the full interaction in every case, the
same function for molecules and crystals.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torchpme
import vesin

GAUSSIAN_RANGE = 6.0
"""The real-space correction keeps pairs up to this many γ_max (erfc(6) = 2e-17)."""


class CoulombOperator:
    """V = potential(q) ``[n, c]`` for charges ``[n, c]`` (c charge vectors at once) of one structure.

    ``positions`` ``[n, 3]`` (Å) and ``cell`` ``[3, 3]`` carry the autograd graph; ``widths``
    ``[n]`` (Å) are the Gaussian widths σ_i (None: point charges); ``ewald`` is the
    :class:`~nearsight.longrange.coulomb.EwaldParameters` of a periodic cell (None: direct sum).
    """

    def __init__(
        self,
        positions: torch.Tensor,
        cell: torch.Tensor,
        widths: torch.Tensor | None,
        ewald,
        prefactor: float,
        exclusion_radius: float | None = None,
        exclusion_degree: int = 1,
    ) -> None:
        self.positions, self.cell, self.widths, self.ewald = positions, cell, widths, ewald
        self.prefactor = float(prefactor)
        self.exclusion_radius = exclusion_radius
        self.exclusion_degree = int(exclusion_degree)
        dtype, device = positions.dtype, positions.device
        n = positions.shape[0]
        if ewald is None:
            pairs = torch.triu_indices(n, n, offset=1, device=device).T  # [n_pairs, 2], i < j
            self._pme_pairs = pairs
            self._pme_distances = torch.linalg.norm(positions[pairs[:, 1]] - positions[pairs[:, 0]], dim=1)
            potential = torchpme.CoulombPotential(smearing=None, prefactor=self.prefactor)
            self._calculator = torchpme.Calculator(potential)
            self._cell = torch.zeros((3, 3), dtype=dtype, device=device)
            # the correction uses the same pairs, both directions
            self._corr_pairs = torch.cat([pairs, pairs.flip(1)]) if self._needs_correction() else None
            self._corr_vectors = None
        else:
            self._pme_pairs, shifts = _pairs(positions, cell, ewald.cutoff, full=False)
            vectors = positions[self._pme_pairs[:, 1]] - positions[self._pme_pairs[:, 0]] + shifts @ cell
            self._pme_distances = torch.linalg.norm(vectors, dim=1)
            potential = torchpme.CoulombPotential(smearing=ewald.smearing, prefactor=self.prefactor)
            if ewald.method == "ewald":
                self._calculator = torchpme.EwaldCalculator(potential, lr_wavelength=ewald.lr_wavelength)
            else:
                self._calculator = torchpme.PMECalculator(
                    potential, mesh_spacing=ewald.mesh_spacing, interpolation_nodes=ewald.interpolation_nodes
                )
            self._cell = cell
            self._corr_pairs = None
            if self._needs_correction():
                self._corr_pairs, shifts = _pairs(positions, cell, self.correction_cutoff(), full=True)
                self._corr_vectors = shifts @ cell  # [n_pairs, 3]
        self._calculator = self._calculator.to(dtype=dtype, device=device)
        self._cutoff_function = torchpme.CoulombPotential(
            exclusion_radius=exclusion_radius, exclusion_degree=self.exclusion_degree
        ).to(dtype=dtype, device=device)
        self._corr_distances = None
        if self._corr_pairs is not None:
            i, j = self._corr_pairs[:, 0], self._corr_pairs[:, 1]
            vectors = positions[j] - positions[i]
            if self._corr_vectors is not None:
                vectors = vectors + self._corr_vectors
            self._corr_distances = torch.linalg.norm(vectors, dim=1)  # [n_pairs]
            self._corr_kernel = self._correction_kernel()  # [n_pairs]

    def _needs_correction(self) -> bool:
        return self.widths is not None or self.exclusion_radius is not None

    def correction_cutoff(self) -> float:
        """r_corr (Å): the real-space correction's pair cutoff."""
        reach = 0.0
        if self.widths is not None and self.widths.numel():
            reach = GAUSSIAN_RANGE * 2.0 * float(self.widths.detach().max())  # γ_max = 2 σ_max
        return max(reach, self.exclusion_radius or 0.0, 1e-3)

    def _correction_kernel(self) -> torch.Tensor:
        """−[erfc(r/γ_ij) + f(r) erf(r/γ_ij)] / r for each correction pair ``[n_pairs]``."""
        r = self._corr_distances
        i, j = self._corr_pairs[:, 0], self._corr_pairs[:, 1]
        if self.widths is None:
            screened, unscreened = torch.zeros_like(r), torch.ones_like(r)
        else:
            gamma = torch.sqrt(2.0 * (self.widths[i] ** 2 + self.widths[j] ** 2))  # [n_pairs]
            screened, unscreened = torch.erfc(r / gamma), torch.erf(r / gamma)
        if self.exclusion_radius is not None:
            screened = screened + self._cutoff_function.f_cutoff(r) * unscreened
        return -screened / r

    def potential(self, charges: torch.Tensor) -> torch.Tensor:
        """V_i ``[n, c]`` (V = eV/e) of the charge vectors ``[n, c]`` (e)."""
        half = self._calculator(  # [n, c], torch-pme returns ½ V_i of the point charges
            charges=charges,
            cell=self._cell,
            positions=self.positions,
            neighbor_indices=self._pme_pairs,
            neighbor_distances=self._pme_distances,
        )
        potential = 2.0 * half
        if self._corr_pairs is not None:  # directed pairs (i, j, n): both directions are listed
            i, j = self._corr_pairs[:, 0], self._corr_pairs[:, 1]
            contribution = self.prefactor * self._corr_kernel[:, None] * charges[j]  # [n_pairs, c]
            potential = potential + torch.zeros_like(potential).index_add(0, i, contribution)
        if self.widths is not None:
            potential = potential + self.prefactor * charges / (self.widths[:, None] * math.sqrt(math.pi))
        return potential

    def matrix(self) -> torch.Tensor:
        """The symmetric matrix ``[n, n]`` (eV/e²) with V = matrix @ q: the potential of unit charges."""
        n = self.positions.shape[0]
        eye = torch.eye(n, dtype=self.positions.dtype, device=self.positions.device)
        matrix = self.potential(eye)
        return 0.5 * (matrix + matrix.T)


def _pairs(
    positions: torch.Tensor, cell: torch.Tensor, cutoff: float, full: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Periodic pairs within ``cutoff`` from vesin: indices ``[n_pairs, 2]`` and shifts ``[n_pairs, 3]``."""
    i, j, shifts = vesin.NeighborList(cutoff=float(cutoff), full_list=full).compute(
        np.ascontiguousarray(positions.detach().cpu().numpy(), dtype=np.float64),
        np.ascontiguousarray(cell.detach().cpu().numpy(), dtype=np.float64),
        True,
        quantities="ijS",
    )
    pairs = torch.as_tensor(np.stack([i, j], axis=1).astype(np.int64), device=positions.device)
    return pairs, torch.as_tensor(shifts, dtype=positions.dtype, device=positions.device)
