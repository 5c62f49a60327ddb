"""Reusable physics assertions for any nearsight model.

Each ``check_<name>(model, atoms, *, tol=..., rng=None, ...)`` returns a
:class:`CheckResult`; call ``.assert_ok()`` on it in a test.  ``model`` is a
per-atom energy module (with ``cutoff`` and ``species``), a ForceField, a
model file, a NearsightCalculator or any ASE calculator.  Models are
evaluated on a float64 copy; the caller's model is left untouched.

    from nearsight.testing import run_all_checks, format_report
    print(format_report(run_all_checks(model, molecule=mol, periodic=crystal)))
"""

import importlib

# name -> submodule: imported on first use (PEP 562), so that ``nearsight.testing.model_check``'s
# constants reach the command line without importing torch
_WHERE = {
    "SCALE_FLOOR": "_common", "CheckResult": "_common", "Evaluation": "_common", "Evaluator": "_common",
    "check_forces": "derivatives", "check_stress": "derivatives",
    "check_nve": "dynamics", "nve_energies": "dynamics",
    "check_additivity": "locality", "check_isolated_atom": "locality", "check_supercell": "locality",
    "check_wrapped": "locality",
    "check_long_range_additivity": "longrange", "long_range_terms": "longrange",
    "format_report": "report", "run_all_checks": "report",
    "check_smoothness": "smoothness",
    "check_permutation": "symmetry", "check_reflection": "symmetry", "check_rotation": "symmetry",
    "check_translation": "symmetry",
    "ModelCheck": "model_check", "check_model": "model_check",
}  # fmt: skip


def __getattr__(name: str):
    if name in _WHERE:
        value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))


__all__ = [
    "SCALE_FLOOR",
    "ModelCheck",
    "check_model",
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
