"""nearsight: machine-learning interatomic potentials."""

from __future__ import annotations

__version__ = "0.1.0"

from ._malloc import tune_malloc  # noqa: E402

tune_malloc()

from .calculator import NearsightCalculator  # noqa: E402

__all__ = ["NearsightCalculator", "__version__", "tune_malloc"]
