"""nearsight: machine-learning interatomic potentials."""

from __future__ import annotations

__version__ = "0.1.0"

from .calculator import NearsightCalculator  # noqa: E402

__all__ = ["NearsightCalculator", "__version__"]
