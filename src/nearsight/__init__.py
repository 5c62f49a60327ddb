"""nearsight: machine-learning interatomic potentials."""

from __future__ import annotations

__version__ = "0.1.0"

from ._malloc import tune_malloc  # noqa: E402

tune_malloc()

__all__ = ["NearsightCalculator", "__version__", "tune_malloc"]


def __getattr__(name: str) -> object:
    """``nearsight.NearsightCalculator`` on first use: ``import nearsight`` (and so
    ``nearsight --help``) does not import torch."""
    if name == "NearsightCalculator":
        from .calculator import NearsightCalculator

        return NearsightCalculator
    raise AttributeError(f"module 'nearsight' has no attribute {name!r}")
