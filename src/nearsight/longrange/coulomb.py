"""Electrostatic energy of point charges through torch-pme: direct sum, Ewald or PME.

For charges q_i (e) at positions R_i the per-atom energies are

    ε_i = ½ q_i V_i,    V_i = k_e Σ'_{j, n} q_j / |R_j − R_i + n·cell|,    E = Σ_i ε_i

with k_e = ``torchpme.prefactors.eV_A`` = 14.399645 eV·Å/e², n running over lattice
translations (only n = 0 without periodicity) and the prime excluding j = i at n = 0.

* Non-periodic structures (``pbc`` all False): the sum over all pairs i < j, evaluated by
  torch-pme's base :class:`torchpme.Calculator` with ``CoulombPotential(smearing=None)`` and
  an all-pairs list built in torch (O(N²) memory: meant for molecules and clusters).
* Fully periodic structures: Ewald summation (Ewald, Ann. Phys. 369, 253 (1921);
  :class:`torchpme.EwaldCalculator`, O(N²)) or smooth particle-mesh Ewald (Essmann et al.,
  J. Chem. Phys. 103, 8577 (1995); :class:`torchpme.PMECalculator`, O(N log N)).  The
  Gaussian splitting 1/r = erfc(r/√2σ)/r + erf(r/√2σ)/r puts the first term in real space
  (pairs within ``real_space_cutoff``, found by vesin on detached positions) and the second
  in reciprocal space.  A cell with net charge Q = Σ q_i is neutralised by a uniform
  background of charge −Q (torch-pme's ``background_correction``: each atom's potential
  is shifted by −k_e π σ² Q / V, which makes E independent of σ); E is then the energy of
  the charges plus that background (Hub et al., J. Chem. Theory Comput. 10, 381 (2014)).
* Mixed periodicity (slabs, wires) raises a ``ValueError``.

Forces and stress are autograd derivatives: the pair distances are recomputed in torch
as |R_j − R_i + S_ij·cell| from integer shifts S_ij, and the reciprocal-space part is a
torch function of positions and cell, so the strain path of
:class:`~nearsight.models.forcefield.ForceField` gives the exact stress.

Accuracy parameters, when not given explicitly, follow the Kolafa–Perram error bounds
(Kolafa & Perram, Mol. Simul. 9, 351 (1992)) as implemented in :mod:`torchpme.tuning`
(``EwaldErrorBounds``, ``PMEErrorBounds``): for the real-space cutoff r_c the smearing σ is the
largest for which the real-space error is ≤ accuracy/√2, then the longest wavelength
λ = 2π/k_max (Ewald) or ``mesh_spacing`` (PME) for which the reciprocal-space error is
≤ accuracy/√2.  torch-pme 0.5.0's ``EwaldCalculator`` keeps the reciprocal vectors
k = Σ_i m_i b_i with |m_i| ≤ ⌈|a_i|/lr_wavelength⌉/2, i.e. wavelengths ≥ 2·``lr_wavelength``
rather than the ≥ ``lr_wavelength`` its docs and error bound assume, so λ/2 is passed on
(with λ itself the NaCl Madelung energy is off by 7e-7 relative at accuracy 1e-6 eV/Å and by
2e-5 at 1e-8, worse as the accuracy is tightened; with λ/2 it is off by 4e-8 and 2e-10).  An explicit ``lr_wavelength``
is passed on unchanged, with torch-pme's meaning.
These bounds estimate the RMS force error, so ``accuracy`` is in eV/Å.  The bounds are
solved by bisection instead of torch-pme's ``tune_ewald``/``tune_pme`` grid searches,
which pick among candidates by timing runs: that choice would be slow inside every
forward call and would make energies depend on the machine's load.

Gaussian charges and an exclusion radius: with ``widths`` (σ_Z in Å per element) each charge is
a Gaussian of that width, pairs interact through k_e q_i q_j erf(r/γ_ij)/r with
γ_ij = √(2(σ_i² + σ_j²)) and every atom carries its self energy k_e q_i²/(2σ_i√π); with
``exclusion_radius`` r_ex the interaction is switched off smoothly inside r_ex (for a short-range
model that already describes those pairs).  Both are a real-space correction to the point-charge
energy, :class:`~nearsight.longrange.operator.CoulombOperator` gives the equations.

A periodic cell with a net charge gets the neutralising background described above: the energy
is that of the charges plus a uniform background of charge −Q, which ``Coulomb`` says once per
instance in a ``UserWarning`` (``warn_net_charge=False`` silences it).  Energies of cells with
different net charges are not comparable without further corrections.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
import torchpme
from torch import nn
from torchpme.tuning.ewald import EwaldErrorBounds
from torchpme.tuning.pme import PMEErrorBounds

from .. import keys
from .operator import CoulombOperator

METHODS = ("auto", "ewald", "pme")
AUTO_PME_ATOMS = 1000
"""With ``method="auto"``, structures with at least this many atoms use PME, smaller ones Ewald."""


@dataclass(frozen=True)
class EwaldParameters:
    """Numerical parameters of one periodic evaluation (lengths in Å)."""

    method: str  # "ewald" | "pme"
    smearing: float  # σ of the Gaussian splitting
    cutoff: float  # real-space cutoff r_c
    lr_wavelength: float | None = None  # Ewald: shortest wavelength kept in reciprocal space
    mesh_spacing: float | None = None  # PME: target mesh spacing
    interpolation_nodes: int = 6  # PME: Lagrange interpolation nodes per axis


class Coulomb(nn.Module):
    """Per-atom electrostatic energies ``[n_atoms]`` (eV) of point charges ``[n_atoms]`` (e).

        ``method`` chooses the periodic solver: ``"ewald"``, ``"pme"`` or ``"auto"`` (Ewald below
        :data:`AUTO_PME_ATOMS` atoms per structure, PME from there on).  ``accuracy`` (eV/Å,
        target RMS force error) sets every parameter not given explicitly: ``smearing`` (Å),
        ``lr_wavelength`` (Å, Ewald), ``mesh_spacing`` (Å, PME).  ``real_space_cutoff`` (Å) bounds
        the real-space pair list.  ``interpolation_nodes`` (PME, 3 to 7) trades interpolation
    work per atom for mesh size: the default 6 needs a ~3× coarser mesh per axis than 4 at
    accuracy 1e-6 eV/Å.  ``prefactor`` is k_e in eV·Å/e².  ``widths`` (``{element: σ}``, Å; element
    symbols or atomic numbers) makes the charges Gaussians, ``exclusion_radius`` (Å) and
    ``exclusion_degree`` switch the interaction off inside r_ex (module docstring).
    """

    def __init__(
        self,
        method: str = "auto",
        accuracy: float = 1e-6,
        real_space_cutoff: float = 8.0,
        smearing: float | None = None,
        lr_wavelength: float | None = None,
        mesh_spacing: float | None = None,
        interpolation_nodes: int = 6,
        prefactor: float = torchpme.prefactors.eV_A,
        widths: Mapping[int | str, float] | None = None,
        exclusion_radius: float | None = None,
        exclusion_degree: int = 1,
        warn_net_charge: bool = True,
    ) -> None:
        super().__init__()
        if method not in METHODS:
            raise ValueError(f"method = {method!r} must be one of {METHODS}")
        for name, value in (
            ("accuracy", accuracy),
            ("real_space_cutoff", real_space_cutoff),
            ("smearing", smearing),
            ("lr_wavelength", lr_wavelength),
            ("mesh_spacing", mesh_spacing),
            ("prefactor", prefactor),
            ("exclusion_radius", exclusion_radius),
        ):
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} = {value!r} must be a positive finite number")
        if interpolation_nodes not in range(3, 8):
            raise ValueError(f"interpolation_nodes = {interpolation_nodes!r} must be 3, 4, 5, 6 or 7")
        self.method = method
        self.accuracy = float(accuracy)
        self.real_space_cutoff = float(real_space_cutoff)
        self.smearing = smearing
        self.lr_wavelength = lr_wavelength
        self.mesh_spacing = mesh_spacing
        self.interpolation_nodes = int(interpolation_nodes)
        self.prefactor = float(prefactor)
        if not (isinstance(exclusion_degree, int) and exclusion_degree >= 1):
            raise ValueError(f"exclusion_degree = {exclusion_degree!r} must be a whole number >= 1")
        self.widths = element_values(widths, "widths") if widths is not None else None
        self.exclusion_radius = None if exclusion_radius is None else float(exclusion_radius)
        self.exclusion_degree = exclusion_degree
        self.warn_net_charge = bool(warn_net_charge)
        self._warned = False

    def atom_widths(self, graph: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """σ_i ``[n_atoms]`` (Å) from ``widths``, None for point charges."""
        if self.widths is None:
            return None
        numbers = graph[keys.ATOMIC_NUMBERS].tolist()
        missing = sorted(set(numbers) - set(self.widths))
        if missing:
            raise ValueError(f"Coulomb: no Gaussian width for element(s) {missing}; widths = {self.widths}")
        positions = graph[keys.POSITIONS]
        return torch.tensor([self.widths[z] for z in numbers], dtype=positions.dtype, device=positions.device)

    def operator(
        self,
        positions: torch.Tensor,
        cell: torch.Tensor,
        periodic: torch.Tensor,
        widths: torch.Tensor | None,
        tuning_charges: torch.Tensor,
        g: int = 0,
    ) -> CoulombOperator:
        """The potential operator of one structure (``positions`` ``[n, 3]``, ``cell`` ``[3, 3]``,
        ``periodic`` ``[3]`` bool, ``widths`` ``[n]`` or None); Ewald/PME parameters are tuned for
        ``tuning_charges`` ``[n]`` (e).  ``g`` names the structure in errors."""
        ewald = None
        if bool(periodic.all()):
            volume = float(torch.linalg.det(cell.detach()).abs())
            if not volume > 1e-12:
                raise ValueError(f"structure {g}: periodic cell with volume {volume} Å^3 (singular cell)")
            ewald = self.ewald_parameters(tuning_charges, cell)
        elif bool(periodic.any()):
            raise ValueError(
                f"structure {g}: pbc = {periodic.tolist()}; Coulomb handles fully periodic or "
                "non-periodic structures only, not mixed periodicity"
            )
        return CoulombOperator(
            positions, cell, widths, ewald, self.prefactor, self.exclusion_radius, self.exclusion_degree
        )

    def check_net_charge(self, charges: torch.Tensor, periodic: torch.Tensor, g: int) -> None:
        """Warn once per instance about a periodic structure with a net charge (background)."""
        if not (self.warn_net_charge and not self._warned and bool(periodic.all())):
            return
        total = float(charges.detach().sum())
        if abs(total) > 1e-6:
            self._warned = True
            warnings.warn(
                f"structure {g}: periodic cell with net charge {total:.6g} e; its Coulomb energy includes a "
                "uniform neutralising background of charge −Q (the Ewald/PME convention; said once per "
                "model, Coulomb(warn_net_charge=False) silences it)",
                UserWarning,
                stacklevel=3,
            )

    def forward(
        self,
        graph: dict[str, torch.Tensor],
        charges: torch.Tensor | None = None,
        widths: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """ε_i = ½ q_i V_i ``[n_atoms]`` (eV), structure by structure; ``charges`` default to
        ``graph[keys.CHARGES]``, the Gaussian ``widths`` ``[n_atoms]`` (Å) to the configured ones."""
        positions = graph[keys.POSITIONS]  # [n_atoms, 3]
        cell = graph[keys.CELL]  # [n_graphs, 3, 3]
        pbc = graph[keys.PBC]  # [n_graphs, 3]
        batch = graph[keys.BATCH]  # [n_atoms]
        if widths is None:
            widths = self.atom_widths(graph)
        if charges is None:
            if keys.CHARGES not in graph:
                raise ValueError(f"no charges given and the graph has no {keys.CHARGES!r} field")
            charges = graph[keys.CHARGES]
        n_atoms = positions.shape[0]
        if tuple(charges.shape) != (n_atoms,):
            raise ValueError(
                f"charges must have shape [n_atoms] = [{n_atoms}], got shape {list(charges.shape)}"
            )
        charges = charges.to(dtype=positions.dtype)
        pieces, order = [], []
        for g in range(cell.shape[0]):
            index = torch.nonzero(batch == g).squeeze(1)  # [n_g]
            if index.numel() == 0:
                continue
            q = charges[index]
            self.check_net_charge(q, pbc[g], g)
            op = self.operator(
                positions[index], cell[g], pbc[g], None if widths is None else widths[index], q, g
            )
            energy = 0.5 * q * op.potential(q[:, None])[:, 0]
            pieces.append(energy)
            order.append(index)
        if not pieces:
            return charges * 0.0
        return torch.zeros_like(charges).index_copy(0, torch.cat(order), torch.cat(pieces))

    def ewald_parameters(self, charges: torch.Tensor, cell: torch.Tensor) -> EwaldParameters:
        """Parameters for one periodic structure: the explicit ones, the rest from ``accuracy``.

        The bounds are evaluated for unit charges on every atom (``charges`` gives only their
        number): the parameters then depend on the cell and the atom count alone, so they stay
        fixed along an MD trajectory and over training.  Tuned for the predicted charges, σ and
        k_max would change at every step (each change a small jump of the energy, and forces that
        leave out ∂E/∂σ); for |q_i| ≤ 1 e unit charges make the bound conservative, and for larger
        charges the error grows as Σq²/N.
        """
        n_atoms = charges.shape[0]
        method = self.method
        if method == "auto":
            method = "pme" if n_atoms >= AUTO_PME_ATOMS else "ewald"
        cutoff = self.real_space_cutoff
        q = torch.ones((n_atoms, 1), dtype=torch.float64)  # unit charges: see the docstring
        box = cell.detach().to(device="cpu", dtype=torch.float64)
        points = torch.zeros((n_atoms, 3), dtype=torch.float64)  # the bounds use only their number
        target = self.accuracy / self.prefactor / math.sqrt(2.0)  # per part, unit prefactor
        bounds_class = EwaldErrorBounds if method == "ewald" else PMEErrorBounds
        bounds = bounds_class(charges=q.cpu(), cell=box, positions=points)
        r_c = torch.tensor(cutoff, dtype=torch.float64)
        smearing = self.smearing
        if smearing is None:
            smearing = _largest_below(
                lambda s: float(bounds.err_rspace(torch.tensor(s, dtype=torch.float64), r_c)),
                target,
                1e-3 * cutoff,
                cutoff / 3.0,
                "smearing",
            )
        sigma = torch.tensor(smearing, dtype=torch.float64)
        if method == "ewald":
            wavelength = self.lr_wavelength
            if wavelength is None:
                wavelength = _largest_below(
                    lambda w: float(bounds.err_kspace(sigma, torch.tensor(w, dtype=torch.float64))),
                    target,
                    1e-2 * smearing,
                    20.0 * smearing,
                    "lr_wavelength",
                )
                # the bound takes λ = 2π/k_max, but EwaldCalculator keeps |m_i| ≤ ns_i/2 with
                # ns_i = ⌈|a_i|/lr_wavelength⌉, i.e. k_max ≈ π/lr_wavelength: pass λ/2
                wavelength = 0.5 * wavelength
            return EwaldParameters("ewald", smearing, cutoff, lr_wavelength=wavelength)
        nodes = torch.tensor(self.interpolation_nodes)  # int: torch-pme indexes a table with it
        spacing = self.mesh_spacing
        if spacing is None:
            spacing = _largest_below(
                lambda h: float(bounds.err_kspace(sigma, torch.tensor(h, dtype=torch.float64), nodes)),
                target,
                1e-2 * smearing,
                20.0 * smearing,
                "mesh_spacing",
            )
        return EwaldParameters(
            "pme", smearing, cutoff, mesh_spacing=spacing, interpolation_nodes=self.interpolation_nodes
        )


def _largest_below(f: Callable[[float], float], target: float, lo: float, hi: float, name: str) -> float:
    """Largest x in [lo, hi] with f(x) ≤ target, for f increasing in x (bisection in log x)."""
    if f(hi) <= target:
        return hi
    if f(lo) > target:
        raise ValueError(f"accuracy cannot be reached: {name} would have to be below {lo:.3g} Å")
    for _ in range(60):
        mid = math.sqrt(lo * hi)
        if f(mid) <= target:
            lo = mid
        else:
            hi = mid
    return lo


def element_values(
    values: Mapping[int | str, float], name: str, unit: str = "Å", positive: bool = True
) -> dict[int, float]:
    """``{atomic number: value}`` (positive unless ``positive=False``) from a mapping keyed by
    element symbols or numbers."""
    from ase.data import atomic_numbers

    if not isinstance(values, Mapping):
        raise ValueError(f"{name} = {values!r} must be a mapping {{element: value}}")
    out: dict[int, float] = {}
    for key, value in values.items():
        z = atomic_numbers.get(key) if isinstance(key, str) else key
        if isinstance(key, str) and key.isdigit():
            z = int(key)
        if not isinstance(z, int) or isinstance(z, bool) or not 0 < z < 119:
            raise ValueError(f"{name}: {key!r} is not an element symbol or atomic number")
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not (math.isfinite(value) and (value > 0 or not positive))
        ):
            kind = "a positive finite" if positive else "a finite"
            raise ValueError(f"{name}[{key!r}] = {value!r} must be {kind} number ({unit})")
        out[z] = float(value)
    return out
