"""Local atomic-environment descriptors: torch modules, graph in, ``[n_atoms, n_features]`` out."""

from .acsf import ACSF, default_acsf_params
from .base import Descriptor
from .soap import SOAP

DESCRIPTORS: dict[str, type[Descriptor]] = {"acsf": ACSF, "soap": SOAP}


def build_descriptor(config: dict, species) -> Descriptor:
    """A descriptor from ``{"type": "acsf" | "soap", **arguments}`` (``type`` defaults to acsf)."""
    args = {k: v for k, v in config.items() if k not in ("type", "species")}
    kind = config.get("type", "acsf")
    if kind not in DESCRIPTORS:
        raise ValueError(f"unknown descriptor type {kind!r}; choose from {sorted(DESCRIPTORS)}")
    return DESCRIPTORS[kind](species, **args)


__all__ = ["ACSF", "DESCRIPTORS", "SOAP", "Descriptor", "build_descriptor", "default_acsf_params"]
