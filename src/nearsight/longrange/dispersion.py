"""DFT-D3 dispersion with rational (Becke–Johnson) damping through tad-dftd3.

For atoms i, j with separation r_ij = |R_j − R_i + n·cell| (n running over lattice
translations, only n = 0 without periodicity, j ≠ i at n = 0) the per-atom energies are

    ε_i = −½ Σ'_{j, n} [ s6 C6_ij / (r_ij⁶ + R0_ij⁶) + s8 C8_ij / (r_ij⁸ + R0_ij⁸) ],    E = Σ_i ε_i

with C8_ij = 3 C6_ij √(Q_i Q_j) (Q = s42 √Z ⟨r⁴⟩/⟨r²⟩), the BJ radius R0_ij = a1 √(C8_ij/C6_ij) + a2
(Becke & Johnson, J. Chem. Phys. 123, 154101 (2005); Grimme, Ehrlich & Goerigk, J. Comput. Chem.
32, 1456 (2011)), and C6_ij interpolated between reference values by Gaussian weights of the
coordination numbers

    CN_i = Σ'_{j, n} 1 / (1 + exp(−16 (R_cov,i + R_cov,j) / r_ij + 16))

(Grimme, Antony, Ehrlich & Krieg, J. Chem. Phys. 132, 154104 (2010)).  Only the two-body term is
evaluated (s9 = 0, no Axilrod–Teller–Muto three-body term), as in the 2011 fits of the BJ
parameters.

The reference C6 table, the covalent radii, ⟨r⁴⟩/⟨r²⟩, the Gaussian reference weights, the
C6 interpolation, the counting function and the damping function are tad-dftd3's
(:mod:`tad_dftd3.model`, :func:`tad_dftd3.ncoord.exp_count`,
:func:`tad_dftd3.damping.rational_damping`), which work in atomic units: positions are divided by
``ase.units.Bohr`` (0.52917721 Å) and energies multiplied by ``ase.units.Hartree`` (27.211386 eV).
tad-dftd3's top-level :func:`tad_dftd3.dftd3` only takes Cartesian positions of one cell (dense
all-pairs distances, no lattice), so the pair sums here run over a neighbour list instead: pairs
(i, j, S) within the cutoff found by vesin on detached positions (periodic along the axes where
``pbc`` is True, any cell shape, cells smaller than the cutoff included), with distances recomputed
in torch as |R_j − R_i + S·cell|.  Forces and stress are therefore autograd derivatives through the
strain path of :class:`~nearsight.models.forcefield.ForceField`.

Real-space cutoffs default to s-dftd3's (60 a0 = 31.75 Å for the pair energy, 40 a0 = 21.17 Å for
the coordination numbers).  s-dftd3 and tad-dftd3 cut both sums hard, so in a periodic box the
energy jumps whenever an image pair crosses a cutoff (by ~C6/r⁶ ≈ 1e-10 Eh per pair at 31.75 Å):
enough to put finite-difference forces and stresses 1e-6 eV/Å (eV/Å³) off and to break energy
conservation in MD.  Here each pair's energy and each pair's contribution to CN_i are therefore
multiplied by the quintic switch

    S(r) = 1 − 10x³ + 15x⁴ − 6x⁵,    x = clamp((r − r_on) / w, 0, 1),    r_on = r_c − w,

which is 1 below r_on and 0 from r_c on with continuous first and second derivatives at both
ends, so the energy is C² in the positions and cell.  One width w = ``taper`` (default 2 Å) serves
both cutoffs: the switch's slope and curvature scale as 1/w and 1/w², so one width bounds the
spurious force from either taper alike, and the CN taper hardly matters anyway (a pair's count at
~20 Å is ~1e-7).  The pair taper removes about half its width of the r⁻⁴ shell density of the
pair energy, 3w/(2 r_c) ≈ 9 % of the tail beyond r_c that the hard cutoff already leaves out
(2w/r_c ≈ 13 % for a slab): it raises the energy by 2.4e-5 eV/atom for distorted rock-salt NaCl,
1.5e-6 eV/atom for a water box, and not at all for molecules whose pairs are all shorter than
21.17 − 2 = 19.17 Å (S = 1 exactly there).  ``taper=0`` restores the hard cutoffs, and with them
s-dftd3's numbers exactly.  The interpolated C6 is built as a dense [n_atoms, n_atoms] matrix per
structure (tad-dftd3's :func:`~tad_dftd3.model.atomic_c6`).
"""

from __future__ import annotations

import math

import ase.units
import numpy as np
import torch
import vesin
from tad_dftd3 import data as d3_data
from tad_dftd3 import defaults as d3_defaults
from tad_dftd3 import model as d3_model
from tad_dftd3.damping import rational_damping
from tad_dftd3.ncoord import exp_count
from tad_dftd3.reference import Reference
from tad_mctc.data import radii
from torch import nn

from .. import keys

BOHR = ase.units.Bohr
"""Å per bohr."""
HARTREE = ase.units.Hartree
"""eV per hartree."""

BJ_PARAMETERS: dict[str, dict[str, float]] = {
    # name: {s6, s8, a1, a2}; s-dftd3's parameters.toml as shipped with tad-dftd3 0.7.0
    "pbe": {"s6": 1.0, "s8": 0.7875, "a1": 0.4289, "a2": 4.4407},  # Grimme et al. 2011, 10.1002/jcc.21759
    "pbe0": {"s6": 1.0, "s8": 1.2177, "a1": 0.4145, "a2": 4.8593},  # Grimme et al. 2011
    "b3lyp": {"s6": 1.0, "s8": 1.9889, "a1": 0.3981, "a2": 4.4211},  # Grimme et al. 2011
    "tpss": {"s6": 1.0, "s8": 1.9435, "a1": 0.4535, "a2": 4.4752},  # Grimme et al. 2011
    "hf": {"s6": 1.0, "s8": 0.9171, "a1": 0.3385, "a2": 2.8830},  # Grimme et al. 2011
    # Najibi & Goerigk, J. Chem. Theory Comput. 14, 5725 (2018), 10.1021/acs.jctc.8b00842
    "wb97m": {"s6": 1.0, "s8": 0.3908, "a1": 0.5660, "a2": 3.1280},
    # Ehlert et al., J. Chem. Phys. 154, 061101 (2021), 10.1063/5.0041008
    "r2scan": {"s6": 1.0, "s8": 0.78981345, "a1": 0.49484001, "a2": 5.73083694},
}
"""BJ damping parameters (a2 in bohr) by lower-case functional name without hyphens."""

DAMPINGS = ("bj",)


def _normalise(functional: str) -> str:
    return functional.lower().replace("-", "").replace("ω", "w")


class Dispersion(nn.Module):
    """Per-atom DFT-D3(BJ) two-body dispersion energies ``[n_atoms]`` (eV).

    ``functional`` picks the damping parameters from :data:`BJ_PARAMETERS` (case and hyphens
    ignored, ``ω`` read as ``w``); ``parameters`` overrides any of ``s6``, ``s8``, ``a1``
    (dimensionless) and ``a2`` (bohr, as in the published tables).  ``damping`` must be ``"bj"``:
    tad-dftd3 implements rational damping only.  ``cutoff`` and ``cn_cutoff`` (Å) bound the pair
    energy and the coordination-number sums; ``taper`` (Å) is the width over which both are
    switched smoothly to zero just inside them (quintic switch, see the module docstring), 0 for
    s-dftd3's hard cutoffs.
    """

    def __init__(
        self,
        functional: str = "pbe",
        damping: str = "bj",
        parameters: dict[str, float] | None = None,
        cutoff: float = d3_defaults.D3_DISP2_CUTOFF * BOHR,
        cn_cutoff: float = d3_defaults.D3_CN_CUTOFF * BOHR,
        taper: float = 2.0,
    ) -> None:
        super().__init__()
        if damping != "bj":
            raise ValueError(
                f"damping = {damping!r} is not supported: this D3 term (tad-dftd3) applies rational "
                f"Becke-Johnson damping only; use one of {DAMPINGS}"
            )
        name = _normalise(functional)
        if name not in BJ_PARAMETERS:
            raise ValueError(
                f"functional = {functional!r} has no D3(BJ) parameters here; known: {sorted(BJ_PARAMETERS)} "
                "(or pass parameters={'s6': ..., 's8': ..., 'a1': ..., 'a2': ...})"
            )
        values = dict(BJ_PARAMETERS[name])
        for key, value in (parameters or {}).items():
            if key not in values:
                raise ValueError(f"parameters: unknown key {key!r}; allowed: {sorted(values)}")
            if not math.isfinite(value):
                raise ValueError(f"parameters[{key!r}] = {value!r} must be finite")
            values[key] = float(value)
        for label, value in (("cutoff", cutoff), ("cn_cutoff", cn_cutoff)):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{label} = {value!r} must be a positive finite number (Å)")
        if not (math.isfinite(taper) and 0 <= taper <= min(cutoff, cn_cutoff)):
            raise ValueError(
                f"taper = {taper!r} must be a finite width (Å) between 0 (hard cutoffs) and "
                f"min(cutoff, cn_cutoff) = {min(cutoff, cn_cutoff)!r}"
            )
        self.functional = name
        self.parameters = values
        self.cutoff = float(cutoff)
        self.cn_cutoff = float(cn_cutoff)
        self.taper = float(taper)
        self._references: dict[tuple[torch.dtype, torch.device], Reference] = {}

    def forward(self, graph: dict[str, torch.Tensor]) -> torch.Tensor:
        """ε_i ``[n_atoms]`` (eV), structure by structure."""
        positions = graph[keys.POSITIONS]  # [n_atoms, 3]
        numbers = graph[keys.ATOMIC_NUMBERS].to(torch.int64)  # [n_atoms]
        cell = graph[keys.CELL]  # [n_graphs, 3, 3]
        pbc = graph[keys.PBC]  # [n_graphs, 3]
        batch = graph[keys.BATCH]  # [n_atoms]
        if numbers.numel() and (int(numbers.min()) < 1 or int(numbers.max()) >= d3_defaults.MAX_ELEMENT):
            bad = numbers[(numbers < 1) | (numbers >= d3_defaults.MAX_ELEMENT)]
            raise ValueError(
                f"atomic number {int(bad[0])}: D3 has parameters for Z = 1 to {d3_defaults.MAX_ELEMENT - 1}"
            )
        pieces, order = [], []
        for g in range(cell.shape[0]):
            index = torch.nonzero(batch == g).squeeze(1)  # [n_g]
            if index.numel() == 0:
                continue
            pieces.append(self._structure(numbers[index], positions[index], cell[g], pbc[g], g))
            order.append(index)
        energies = positions.new_zeros(positions.shape[0])
        if not pieces:
            return energies
        return energies.index_copy(0, torch.cat(order), torch.cat(pieces))

    def _reference(self, dtype: torch.dtype, device: torch.device) -> Reference:
        key = (dtype, device)
        if key not in self._references:
            self._references[key] = Reference(dtype=dtype, device=device)
        return self._references[key]

    def _switch(self, r: torch.Tensor, cutoff: float, values: torch.Tensor) -> torch.Tensor:
        """``values`` [n_pairs] times S(r): the quintic taper over [cutoff − taper, cutoff] (bohr),
        or a hard cut at ``cutoff`` for ``taper=0``."""
        if self.taper == 0:
            return torch.where(r <= cutoff, values, torch.zeros_like(values))
        width = self.taper / BOHR
        x = ((r - (cutoff - width)) / width).clamp(0.0, 1.0)  # [n_pairs]
        return values * (1.0 - x**3 * (10.0 + x * (-15.0 + 6.0 * x)))

    def _structure(
        self,
        numbers: torch.Tensor,
        positions: torch.Tensor,
        cell: torch.Tensor,
        pbc: torch.Tensor,
        g: int,
    ) -> torch.Tensor:
        """ε_i ``[n_g]`` (eV) of one structure."""
        dd = {"dtype": positions.dtype, "device": positions.device}
        periodic = [bool(p) for p in pbc]
        box = cell.detach().to(device="cpu", dtype=torch.float64).numpy()
        if any(periodic):
            volume = abs(float(np.linalg.det(box)))
            if not volume > 1e-12:
                raise ValueError(f"structure {g}: periodic cell with volume {volume} Å^3 (singular cell)")
        else:
            box = np.zeros((3, 3))
        i, j, shifts = vesin.NeighborList(cutoff=max(self.cutoff, self.cn_cutoff), full_list=True).compute(
            np.ascontiguousarray(positions.detach().cpu().numpy(), dtype=np.float64),
            np.ascontiguousarray(box),
            periodic,
            quantities="ijS",
        )
        i = torch.as_tensor(i.astype(np.int64), device=positions.device)  # [n_pairs]
        j = torch.as_tensor(j.astype(np.int64), device=positions.device)  # [n_pairs]
        shifts = torch.as_tensor(shifts, **dd)  # [n_pairs, 3]
        vectors = positions[j] - positions[i] + shifts @ cell  # [n_pairs, 3], Å
        r = torch.linalg.norm(vectors, dim=1) / BOHR  # [n_pairs], bohr

        rcov = radii.COV_D3(**dd)[numbers]  # [n_g], bohr
        counts = exp_count(r, rcov[i] + rcov[j])  # [n_pairs]
        counts = self._switch(r, self.cn_cutoff / BOHR, counts)
        cn = torch.zeros_like(rcov).index_add(0, i, counts)  # [n_g]
        reference = self._reference(positions.dtype, positions.device)
        weights = d3_model.weight_references(numbers, cn, reference)  # [n_g, 7]
        c6 = d3_model.atomic_c6(numbers, weights, reference)[i, j]  # [n_pairs], Eh·a0⁶

        r4r2 = d3_data.R4R2(**dd)[numbers]  # [n_g]
        qq = 3.0 * r4r2[i] * r4r2[j]  # [n_pairs], C8/C6
        param = {k: torch.tensor(v, **dd) for k, v in self.parameters.items()}
        pair = param["s6"] * c6 * rational_damping(6, r, qq, param) + param[
            "s8"
        ] * c6 * qq * rational_damping(8, r, qq, param)  # [n_pairs], Eh
        pair = self._switch(r, self.cutoff / BOHR, pair)
        return -0.5 * HARTREE * torch.zeros_like(rcov).index_add(0, i, pair)  # [n_g], eV
