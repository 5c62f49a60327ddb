"""ML/MM with ASE's QM/MM calculators: a nearsight region in an MM region (TIP3P water, or any
ASE MM calculator).

Mechanical embedding, :func:`simple_qmmm` (:class:`ase.calculators.qmmm.SimpleQMMM`, subtractive):

    E = E_MM(all) − E_MM(ML region) + E_ML(ML region)

the MM calculator describes everything, including the ML–MM interaction (its charges and
Lennard-Jones), and the ML region's own MM energy is replaced by the model's.

Electrostatic embedding, :func:`eiqmmm` (:class:`ase.calculators.qmmm.EIQMMM`, additive):

    E = E_ML(ML) + Σ_i q_i V_i^MM + E_MM(MM region) + E_LJ(ML, MM)

the model's own charges q_i (:mod:`nearsight.mlmm.point_charges`) interact with the MM point
charges instead of the force-field charges of the ML atoms, and ``interaction`` (by default
:class:`TIP3PLennardJones`) gives the van der Waals ML–MM term.  With the same Lennard-Jones term
and MM charges the two differ by exactly the Coulomb energy of the model's charges with the MM
charges minus that of the force-field charges of the ML atoms.

Both calculators check the ML region against the atoms at their first calculation
(:func:`~nearsight.mlmm.region.check_region`); with :class:`~ase.calculators.tip3p.TIP3P` as the MM
calculator the MM region must be whole waters in the order O, H, H.  ASE's TIP3P is rigid
(intermolecular terms only, constraints such as :class:`ase.constraints.FixBondLengths` keep the
waters' geometry in MD), and both its Coulomb and Lennard-Jones terms are switched off between
``rc − width`` and ``rc`` (default 4 to 5 Å) of the O–O distance; ``TIP3P(rc=...)`` sets that.
The ML region is evaluated without periodic boundaries (ASE's QM/MM convention), so it must not be
split across the cell boundary.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
from ase.calculators.calculator import Calculator
from ase.calculators.qmmm import EIQMMM, Embedding, LJInteractionsGeneral, SimpleQMMM
from ase.calculators.tip3p import TIP3P, epsilon0, sigma0
from ase.data import atomic_numbers, chemical_symbols

from .region import check_region, check_species, ml_calculator

if TYPE_CHECKING:
    from torch import nn

TIP3P_LJ = {"O": (sigma0, epsilon0), "H": (0.0, 0.0)}  # (σ Å, ε eV) of TIP3P's oxygen and hydrogen


class MechanicalEmbedding(SimpleQMMM):
    """:class:`~ase.calculators.qmmm.SimpleQMMM` that checks the ML region at its first calculation."""

    def initialize_qm(self, atoms) -> None:
        self.selection = check_region(self.selection, len(atoms), "the atoms")
        check_species(atoms.numbers[self.selection], self.qmcalc, "simple_qmmm")
        super().initialize_qm(atoms)


class ElectrostaticEmbedding(EIQMMM):
    """:class:`~ase.calculators.qmmm.EIQMMM` that checks the ML region and the MM waters first."""

    def initialize(self, atoms) -> None:
        self.selection = check_region(self.selection, len(atoms), "the atoms")
        check_species(atoms.numbers[self.selection], self.qmcalc, "eiqmmm")
        if isinstance(self.mmcalc, TIP3P):
            check_waters(atoms, self.selection)
        super().initialize(atoms)


def simple_qmmm(
    ml_atoms: Sequence[int] | np.ndarray,
    model_or_calc: nn.Module | str | os.PathLike | Calculator,
    mm_calc: Calculator,
    mm_calc_ml: Calculator | None = None,
    dtype: str = "float64",
) -> MechanicalEmbedding:
    """Mechanical embedding E = E_MM(all) − E_MM(ML) + E_ML of the atoms ``ml_atoms``.

    ``model_or_calc``: a nearsight model (module or file) or an ASE calculator for the ML region;
    ``mm_calc``: the MM calculator of the whole system; ``mm_calc_ml``: the one evaluated on the ML
    region alone (default: ``mm_calc`` itself, which then computes twice per step).
    """
    calc = ml_calculator(model_or_calc, dtype)
    return MechanicalEmbedding(list(ml_atoms), calc, mm_calc_ml or mm_calc, mm_calc)


def eiqmmm(
    ml_atoms: Sequence[int] | np.ndarray,
    model_or_calc: nn.Module | str | os.PathLike | Calculator,
    mm_calc: Calculator,
    interaction: object | None = None,
    ml_lj: Mapping[str | int, tuple[float, float]] | None = None,
    dtype: str = "float64",
    output: str | None = None,
) -> ElectrostaticEmbedding:
    """Electrostatic embedding of the model's charges in the MM charges (module docstring).

    ``model_or_calc``: a nearsight model that predicts charges, or an ASE calculator with ASE's
    ``embed`` method; ``mm_calc``: the MM calculator of the MM region (it must give
    ``get_virtual_charges``, as ASE's TIP3P/TIP4P do); ``interaction``: the ML–MM van der Waals term
    (ASE's interaction protocol), by default :class:`TIP3PLennardJones` with ``ml_lj`` (with a TIP3P
    ``mm_calc`` only).  ``output``: EIQMMM's log of the energy terms (None: none).
    """
    from .point_charges import EmbeddedNearsightCalculator

    if isinstance(model_or_calc, Calculator):
        calc = _embeddable(model_or_calc)
    else:
        calc = EmbeddedNearsightCalculator(model_or_calc, dtype=dtype)
    if interaction is None:
        if not isinstance(mm_calc, TIP3P):
            raise ValueError(
                f"eiqmmm: give interaction= (the ML–MM van der Waals term) for an MM calculator other "
                f"than TIP3P ({type(mm_calc).__name__})"
            )
        interaction = TIP3PLennardJones(ml_lj)
    elif ml_lj is not None:
        raise ValueError("eiqmmm: ml_lj sets the default TIP3P interaction; it cannot go with interaction=")
    return ElectrostaticEmbedding(
        list(ml_atoms), calc, mm_calc, interaction, embedding=Embedding(), output=output
    )


class TIP3PLennardJones:
    """Lennard-Jones between the ML atoms and TIP3P waters, Lorentz–Berthelot combined:

        E = Σ_i Σ_O 4 ε_iO [(σ_iO/r)¹² − (σ_iO/r)⁶],   σ_iO = (σ_i + σ_O)/2,   ε_iO = √(ε_i ε_O)

    (TIP3P's hydrogens carry no Lennard-Jones).  ``ml_lj`` maps elements (symbols or atomic
    numbers) of the ML region to (σ Å, ε eV); the default is TIP3P's own O and H, which describes
    an ML water as TIP3P would.  ``rc``/``width``: a switch on the distance between the first ML
    atom and each water's O as in ASE's ``LJInteractionsGeneral`` (default: none).
    """

    name = "LJ-TIP3P"

    def __init__(
        self,
        ml_lj: Mapping[str | int, tuple[float, float]] | None = None,
        rc: float = np.inf,
        width: float = 1.0,
    ) -> None:
        self.parameters: dict[int, tuple[float, float]] = {}
        for element, value in (TIP3P_LJ if ml_lj is None else ml_lj).items():
            z = atomic_numbers[element] if isinstance(element, str) else int(element)
            sigma, epsilon = (float(v) for v in value)
            if not (np.isfinite(sigma) and sigma >= 0 and np.isfinite(epsilon) and epsilon >= 0):
                raise ValueError(f"ml_lj[{element!r}] = {value!r}: σ (Å) and ε (eV) must be finite and ≥ 0")
            self.parameters[z] = (sigma, epsilon)
        self.rc, self.width = rc, width
        self._general: LJInteractionsGeneral | None = None
        self._numbers: np.ndarray | None = None

    def calculate(self, qmatoms, mmatoms, shift):
        """(energy eV, forces on the ML atoms, forces on the MM atoms), ASE's interaction protocol."""
        if self._numbers is None or not np.array_equal(self._numbers, qmatoms.numbers):
            missing = sorted(set(qmatoms.numbers.tolist()) - set(self.parameters))
            if missing:
                raise ValueError(
                    f"TIP3PLennardJones: no (σ, ε) for ML element(s) {[chemical_symbols[z] for z in missing]}; "
                    "give ml_lj={symbol: (σ Å, ε eV), ...} for every element of the ML region"
                )
            sigma = np.array([self.parameters[z][0] for z in qmatoms.numbers])
            epsilon = np.array([self.parameters[z][1] for z in qmatoms.numbers])
            self._general = LJInteractionsGeneral(
                sigma, epsilon, np.array([sigma0, 0.0, 0.0]), np.array([epsilon0, 0.0, 0.0]),
                len(qmatoms), 3, rc=self.rc, width=self.width,
            )  # fmt: skip
            self._numbers = qmatoms.numbers.copy()
        return self._general.calculate(qmatoms, mmatoms, shift)


def check_waters(atoms, ml_atoms: np.ndarray) -> None:
    """``ValueError`` unless the atoms outside the ML region are whole waters ordered O, H, H."""
    mm = np.setdiff1d(np.arange(len(atoms)), ml_atoms)
    numbers = atoms.numbers[mm]
    expected = np.tile([8, 1, 1], len(mm) // 3 + 1)[: len(mm)]
    wrong = np.flatnonzero(numbers != expected)
    if len(mm) % 3 or wrong.size:
        first = mm[wrong[0]] if wrong.size else mm[-1]
        raise ValueError(
            f"TIP3P describes the MM region as whole waters in the order O, H, H; the {len(mm)} atoms "
            f"outside the ML region are not (first mismatch at atom {first}, "
            f"{chemical_symbols[atoms.numbers[first]]})"
        )


def _embeddable(calc: Calculator) -> Calculator:
    """An ML calculator with ``embed``: a plain NearsightCalculator becomes an embedded one of its
    model (same dtype, device, head, baseline); another calculator must have ``embed`` itself."""
    from ..calculator import NearsightCalculator
    from .point_charges import EmbeddedNearsightCalculator

    if isinstance(calc, NearsightCalculator) and not isinstance(calc, EmbeddedNearsightCalculator):
        model = calc.forcefield.model
        heads = list(getattr(model, "heads", []) or [])
        return EmbeddedNearsightCalculator(
            model,
            dtype=str(calc.dtype).removeprefix("torch."),
            device=str(calc.device),
            baseline=calc.baseline,
            head=None if calc.head is None else heads[calc.head],
            min_distance=calc.min_distance,
        )
    if not callable(getattr(calc, "embed", None)):
        raise ValueError(
            "electrostatic embedding needs an ML calculator with an embed(charges) method (ASE's "
            f"point-charge protocol); {type(calc).__name__} has none"
        )
    return calc
