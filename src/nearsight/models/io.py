"""Model files: safe to load (``torch.load(weights_only=True)``), self-describing.

A model file is a dict of plain Python values and tensors::

    {"format": "nearsight-model", "format_version": 1, "nearsight_version": ...,
     "model_type": "bpnn", "config": {...}, "state_dict": {...},
     "units": {"energy": "eV", "length": "Å", ...}, "cutoff": 5.0,
     "species": [1, 6, 8], "dtype": "float64", "metadata": {...}}

Writes go to a temporary file in the same directory and are moved into place
with ``os.replace``, so a kill never leaves a truncated model.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from .. import __version__
from .._files import atomic_write
from ..units import UNITS
from .bpnn import BehlerParrinello
from .equivariant import EquivariantPotential

FORMAT = "nearsight-model"
FORMAT_VERSION = 2  # 2: ACSF with G1 and DScribe pair order; descriptor type recorded
MODEL_TYPES: dict[str, type[nn.Module]] = {"bpnn": BehlerParrinello, "equivariant": EquivariantPotential}
# model types whose module is imported when a file of that type is read (heavy dependencies)
LAZY_MODEL_TYPES = {"longrange": ("nearsight.longrange.model", "LongRangePotential")}


def model_class(kind: str | None) -> type[nn.Module] | None:
    """The class of a model type name (importing a lazily registered one), None if unknown."""
    if kind in LAZY_MODEL_TYPES and kind not in MODEL_TYPES:
        import importlib

        module, name = LAZY_MODEL_TYPES[kind]
        MODEL_TYPES[kind] = getattr(importlib.import_module(module), name)
    return MODEL_TYPES.get(kind)


def atomic_torch_save(obj: object, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary sibling, fsync, then rename over ``path``."""
    return atomic_write(path, lambda fh: torch.save(obj, fh), "wb")


def model_to_dict(model: nn.Module, metadata: dict | None = None) -> dict:
    dtype = next(model.parameters()).dtype
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "nearsight_version": __version__,
        "model_type": model.model_type,
        "config": model.get_config(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "units": dict(UNITS),
        "cutoff": float(model.cutoff),
        "species": list(model.species),
        "dtype": str(dtype).replace("torch.", ""),
        "metadata": metadata or {},
    }


def save_model(model: nn.Module, path: str | os.PathLike, metadata: dict | None = None) -> Path:
    """Write ``model`` atomically to ``path``."""
    return atomic_torch_save(model_to_dict(model, metadata), path)


def model_from_dict(data: dict, source: str = "<dict>") -> nn.Module:
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"{source}: not a nearsight model file")
    if data.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(
            f"{source}: model format {data['format_version']} is newer than this nearsight "
            f"({__version__}) reads ({FORMAT_VERSION}); upgrade nearsight"
        )
    if data.get("format_version", 0) < FORMAT_VERSION:
        raise ValueError(
            f"{source}: model format {data.get('format_version')} predates the descriptor layout this "
            f"nearsight ({__version__}) uses (format {FORMAT_VERSION}); retrain the model"
        )
    if data.get("units") != UNITS:
        raise ValueError(f"{source}: model units {data.get('units')} differ from nearsight's {UNITS}")
    kind = data.get("model_type")
    if model_class(kind) is None:
        known = sorted({*MODEL_TYPES, *LAZY_MODEL_TYPES})
        raise ValueError(f"{source}: unknown model type {kind!r}; known: {known}")
    try:
        model = MODEL_TYPES[kind].from_config(data["config"])
        model.to(getattr(torch, data.get("dtype", "float64")))
        missing, unexpected = model.load_state_dict(data["state_dict"], strict=False)
        # buffers added after a file was written keep their defaults (the behaviour of that time)
        missing = sorted(set(missing) - set(getattr(model, "OPTIONAL_BUFFERS", ())))
        if missing or unexpected:
            raise RuntimeError(f"missing keys {missing}, unexpected keys {sorted(unexpected)}")
    except (TypeError, KeyError, RuntimeError) as exc:
        raise ValueError(f"{source}: model config and weights do not fit together ({exc})") from exc
    if abs(float(model.cutoff) - float(data["cutoff"])) > 1e-12 or list(model.species) != list(
        data["species"]
    ):
        raise ValueError(f"{source}: cutoff/species in the header do not match the model config")
    model.metadata = dict(data.get("metadata", {}))
    return model


def read_weights_only(path: Path, what: str, error: type[Exception] = ValueError) -> object:
    """``torch.load(weights_only=True)`` on CPU; an unreadable file raises ``error`` naming it."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - re-raised with the file name
        raise error(f"{str(path)!r}: cannot read {what} ({exc})") from exc


def load_model(path: str | os.PathLike, dtype: torch.dtype | str | None = None) -> nn.Module:
    """Load a model file without unpickling arbitrary objects."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file {str(path)!r} does not exist")
    data = read_weights_only(path, "model file")
    model = model_from_dict(data, source=repr(str(path)))
    if dtype is not None:
        model.to(getattr(torch, dtype) if isinstance(dtype, str) else dtype)
    return model.eval()
