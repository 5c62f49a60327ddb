"""Reusable physics assertions for any nearsight model.

Each ``check_<name>(model, atoms, *, tol=..., rng=None, ...)`` returns a
:class:`CheckResult`; call ``.assert_ok()`` on it in a test.  ``model`` is a
per-atom energy module (with ``cutoff`` and ``species``), a ForceField, a
model file, a NearsightCalculator or any ASE calculator.  Models are
evaluated on a float64 copy; the caller's model is left untouched.

    from nearsight.testing import run_all_checks, format_report
    print(format_report(run_all_checks(model, molecule=mol, periodic=crystal)))
"""

from ._common import SCALE_FLOOR, CheckResult, Evaluation, Evaluator
from .derivatives import check_forces, check_stress
from .dynamics import check_nve, nve_energies
from .locality import check_additivity, check_isolated_atom, check_supercell, check_wrapped
from .longrange import check_long_range_additivity, long_range_terms
from .report import format_report, run_all_checks
from .smoothness import check_smoothness
from .symmetry import check_permutation, check_reflection, check_rotation, check_translation

__all__ = [
    "SCALE_FLOOR",
    "CheckResult",
    "Evaluation",
    "Evaluator",
    "check_additivity",
    "check_forces",
    "check_isolated_atom",
    "check_long_range_additivity",
    "check_nve",
    "check_permutation",
    "check_reflection",
    "check_rotation",
    "check_smoothness",
    "check_stress",
    "check_supercell",
    "check_translation",
    "check_wrapped",
    "format_report",
    "long_range_terms",
    "nve_energies",
    "run_all_checks",
]
