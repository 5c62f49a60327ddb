"""Electrostatic embedding of a nearsight model with charges in the point charges of an MM region.

The ML region's energy gains the Coulomb energy of the model's charges q_i (e) in the potential of
the MM point charges Q_J at P_J:

    E = E_ML(R) + Σ_i q_i(R) V_i,    V_i = k_e Σ_J Q_J φ_i(|R_i − P_J|)

with k_e = Hartree·Bohr = 14.3996 eV·Å/e² (ASE's value, the one its TIP3P uses) and
φ_i(r) = 1/r for point charges, φ_i(r) = erf(r/(√2 σ_i))/r for a model whose charges are
Gaussians of width σ_i (its Coulomb ``widths`` or its QEq widths): the interaction of such a
Gaussian with a point charge.  The charges are the model's charges of the ML region alone (no
re-equilibration in the MM potential: the ML region is not polarised by the MM charges), so the
term is exactly the Coulomb energy of two sets of fixed charges at each geometry; its forces on the
ML atoms include the charges' response, −Σ_i (∂q_i/∂R_k) V_i, through the one autograd of
:class:`~nearsight.models.forcefield.ForceField`, and the forces on the MM charges are
F_J = −∂E/∂P_J at fixed q.

:class:`EmbeddedNearsightCalculator` implements ASE's ``embed`` protocol (what
:class:`ase.calculators.qmmm.EIQMMM` calls through its ``Embedding``): ``embed(charges)`` returns a
:class:`PointChargePotential` whose ``set_positions`` places the MM charges and whose ``get_forces``
returns the forces on them.  ``results`` also hold ``embedding_energy`` (eV) and ``mm_forces``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from ase import units
from ase.calculators.calculator import all_changes
from torch import nn

from .. import keys
from ..calculator import NearsightCalculator
from .region import predicts_charges

K_E = units.Hartree * units.Bohr  # eV·Å/e², Coulomb's constant as ASE (and its TIP3P) has it
EMBEDDING_ENERGIES = keys.declare("embedding_energies", "atom", (), "eV", sum_to="embedding_energy")
keys.declare("embedding_energy", "graph", (), "eV")  # Σ_i q_i V_i
MIN_DISTANCE = 0.1  # Å, closest approach of an ML atom and an MM charge that is evaluated


def external_potential(
    positions: torch.Tensor,
    charge_positions: torch.Tensor,
    charges: torch.Tensor,
    widths: torch.Tensor | None,
) -> torch.Tensor:
    """V_i = k_e Σ_J Q_J φ_i(|R_i − P_J|) ``[n]`` (eV/e) at ``positions`` ``[n, 3]`` of the charges
    ``[m]`` at ``charge_positions`` ``[m, 3]``; φ_i = 1/r, or erf(r/(√2 σ_i))/r with ``widths`` ``[n]``."""
    r = torch.linalg.norm(positions[:, None, :] - charge_positions[None, :, :], dim=-1)  # [n, m]
    kernel = 1.0 / r
    if widths is not None:
        kernel = torch.erf(r / (math.sqrt(2.0) * widths[:, None])) * kernel
    return K_E * (kernel * charges[None, :]).sum(1)


class PointChargePotential:
    """MM point charges for :class:`EmbeddedNearsightCalculator` (ASE's ``pcpot`` protocol).

    ``charges`` ``[m]`` (e) are fixed; ``set_positions`` (Å, ``[m, 3]``) moves them and makes the
    calculator compute again; ``get_forces`` gives the forces on them (eV/Å) of the last calculation.
    """

    def __init__(self, calc: EmbeddedNearsightCalculator, charges) -> None:
        self.calc = calc
        self.charges = np.asarray(charges, dtype=np.float64).reshape(-1)
        if not np.all(np.isfinite(self.charges)):
            raise ValueError(f"point charges must be finite numbers, got {self.charges}")
        self.positions: np.ndarray | None = None
        self.forces: np.ndarray | None = None

    def set_positions(self, positions, com_pv=None) -> None:
        """Place the charges (``com_pv``, a cutoff helper of GPAW's embedding, is not used)."""
        positions = np.array(positions, dtype=np.float64)
        if positions.shape != (len(self.charges), 3):
            raise ValueError(
                f"point-charge positions: expected shape ({len(self.charges)}, 3) for "
                f"{len(self.charges)} charges, got {positions.shape}"
            )
        if self.positions is None or not np.array_equal(positions, self.positions):
            self.positions = positions
            self.forces = None
            self.calc.reset()

    def get_forces(self, calc=None) -> np.ndarray:
        """Forces ``[m, 3]`` (eV/Å) of the ML region's charges on the MM charges."""
        if self.forces is None:
            raise RuntimeError("no energy has been computed since the point charges were placed")
        return self.forces.copy()


class EmbeddedNearsightCalculator(NearsightCalculator):
    """A :class:`~nearsight.NearsightCalculator` whose model's charges feel MM point charges.

    Takes the arguments of :class:`~nearsight.NearsightCalculator`; the model must predict charges
    (a charge head), and a single electronic state.  Until :meth:`embed` and
    ``PointChargePotential.set_positions`` have placed charges it is the plain model.
    """

    def __init__(self, model, *args, **kwargs) -> None:
        super().__init__(model, *args, **kwargs)
        inner = self.forcefield.model
        if not predicts_charges(inner):
            raise ValueError(
                "electrostatic embedding needs a model that predicts charges (keys.CHARGES); this "
                f"{getattr(inner, 'model_type', type(inner).__name__)} model has no charge head: train one "
                "with model.longrange.coulomb (or charges: true), or use mechanical embedding "
                "(simple_qmmm, ml_mm_system)"
            )
        if self.n_states > 1:
            raise ValueError(
                "electrostatic embedding of a model with several electronic states is not supported"
            )
        self.pcpot: PointChargePotential | None = None
        self.forcefield.model = _PointChargeTerm(inner, self)

    def embed(self, charges, **parameters) -> PointChargePotential:
        """Embed the ML region in point charges ``[m]`` (e); returns their :class:`PointChargePotential`."""
        if parameters:
            raise TypeError(f"embed: unknown options {sorted(parameters)}")
        self.pcpot = PointChargePotential(self, charges)
        self.reset()
        return self.pcpot

    def charge_tensors(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(P ``[m, 3]``, Q ``[m]``) of the placed point charges, or None."""
        if self.pcpot is None or self.pcpot.positions is None:
            return None
        return (
            torch.as_tensor(self.pcpot.positions, dtype=dtype, device=self.device),
            torch.as_tensor(self.pcpot.charges, dtype=dtype, device=self.device),
        )

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes) -> None:
        self._check_approach(atoms if atoms is not None else self.atoms)
        super().calculate(atoms, properties, system_changes)
        placed = self.charge_tensors(torch.float64)
        if placed is None:
            self.results["embedding_energy"] = 0.0
            return
        inner = self.forcefield.model.inner
        numbers = torch.as_tensor(self.atoms.numbers)
        widths = gaussian_widths(inner, numbers, torch.float64)
        where, charges = placed
        where = where.cpu().requires_grad_(True)
        q = torch.as_tensor(self.results["charges"], dtype=torch.float64)
        positions = torch.as_tensor(self.atoms.positions, dtype=torch.float64)
        energy = (q * external_potential(positions, where, charges.cpu(), widths)).sum()
        (grad,) = torch.autograd.grad(energy, [where])
        self.pcpot.forces = -grad.numpy()
        self.results["embedding_energy"] = float(energy.detach())
        self.results["mm_forces"] = self.pcpot.forces.copy()

    def _check_approach(self, atoms) -> None:
        """``ValueError`` for a periodic ML region in placed charges (the point-charge sum has no
        images) or for an ML atom and an MM charge closer than :data:`MIN_DISTANCE`."""
        if atoms is None or self.pcpot is None or self.pcpot.positions is None:
            return
        if np.any(atoms.pbc):
            raise ValueError(
                f"electrostatic embedding: the ML region must be non-periodic (pbc = {atoms.pbc.tolist()}); "
                "ASE's EIQMMM evaluates it so and places the MM charges at their nearest images"
            )
        d = np.linalg.norm(atoms.positions[:, None, :] - self.pcpot.positions[None, :, :], axis=-1)
        i, j = np.unravel_index(np.argmin(d), d.shape)
        if d[i, j] < MIN_DISTANCE:
            raise ValueError(
                f"electrostatic embedding: ML atom {i} ({atoms.get_chemical_symbols()[i]}) is "
                f"{d[i, j]:.3g} Å from MM point charge {j} (closer than {MIN_DISTANCE} Å)"
            )


def gaussian_widths(model: nn.Module, numbers: torch.Tensor, dtype: torch.dtype) -> torch.Tensor | None:
    """σ_i ``[n]`` (Å) of a model whose charges are Gaussians (QEq widths, or the Coulomb term's
    ``widths``), None for point charges."""
    qeq = getattr(model, "qeq", None)
    if qeq is not None:
        index = {int(z): k for k, z in enumerate(qeq.species)}
        kind = torch.tensor([index[int(z)] for z in numbers])
        return qeq.widths().detach().to(dtype).cpu()[kind]
    coulomb = getattr(model, "coulomb", None)
    if coulomb is not None and coulomb.widths is not None:
        return torch.tensor([coulomb.widths[int(z)] for z in numbers], dtype=dtype)
    return None


class _PointChargeTerm(nn.Module):
    """The model plus ε_i = q_i V_i of the placed point charges (``EMBEDDING_ENERGIES``)."""

    def __init__(self, inner: nn.Module, calc: EmbeddedNearsightCalculator) -> None:
        super().__init__()
        self.inner = inner
        self._calc = [calc]  # a list: not a submodule, no reference cycle through _modules

    @property
    def cutoff(self) -> float:
        return float(self.inner.cutoff)

    @property
    def species(self) -> list[int]:
        return list(self.inner.species)

    def forward(self, graph: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = dict(self.inner(graph))
        positions = graph[keys.POSITIONS]  # [n, 3], differentiable (ForceField)
        placed = self._calc[0].charge_tensors(positions.dtype)
        if placed is None:
            return out
        where, charges = placed
        widths = gaussian_widths(self.inner, graph[keys.ATOMIC_NUMBERS], positions.dtype)
        widths = None if widths is None else widths.to(positions.device)
        potential = external_potential(positions, where, charges, widths)  # [n]
        out[EMBEDDING_ENERGIES] = out[keys.CHARGES] * potential
        out[keys.ATOMIC_ENERGIES] = out[keys.ATOMIC_ENERGIES] + out[EMBEDDING_ENERGIES]
        return out
