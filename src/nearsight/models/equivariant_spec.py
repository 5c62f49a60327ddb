"""The ``model.equivariant`` mapping of a config: presets (MACE's small, medium and large at
matched size), the checked constructor arguments of
:class:`~nearsight.models.equivariant.EquivariantPotential` and the checks of their values.
"""

from __future__ import annotations

PRESETS: dict[str, dict] = {
    # MACE "small" at matched size: 32x0e + 32x1o, max_L 1, correlation 3, 2 layers, r_max 5
    "small": {"channels": 32, "l_max": 1, "sh_l_max": 3, "correlation": 3, "num_layers": 2},
    # MACE "medium": 128x0e + 128x1o
    "medium": {"channels": 128, "l_max": 1, "sh_l_max": 3, "correlation": 3, "num_layers": 2},
    # MACE "large": 128x0e + 128x1o + 128x2e
    "large": {"channels": 128, "l_max": 2, "sh_l_max": 3, "correlation": 3, "num_layers": 2},
}


_SPEC_KEYS = {
    "preset": str,
    "channels": int,
    "l_max": int,
    "sh_l_max": int,
    "correlation": int,
    "num_layers": int,
    "n_radial": int,
    "envelope_p": int,
    "radial_hidden": list,
    "readout_hidden": int,
    "parity": str,
    "gate": bool,
    "element_mix": bool,
    "charges": bool,
}


def equivariant_arguments(spec: dict | None) -> dict:
    """Constructor arguments from a config's ``model.equivariant`` mapping (``preset`` plus overrides).

    Raises ``ValueError`` naming the bad key; the preset defaults to ``medium``.
    """
    spec = dict(spec or {})
    unknown = sorted(set(spec) - set(_SPEC_KEYS))
    if unknown:
        raise ValueError(f"unknown key(s) {unknown}; allowed: {sorted(_SPEC_KEYS)}")
    for key, value in spec.items():
        kind = _SPEC_KEYS[key]
        if (isinstance(value, bool) and kind is not bool) or not isinstance(value, kind):
            raise ValueError(f"{key} = {value!r}: expected {kind.__name__}")
    preset = spec.pop("preset", "medium")
    if preset not in PRESETS:
        raise ValueError(f"preset = {preset!r}: choose from {sorted(PRESETS)}")
    hidden = spec.get("radial_hidden")
    if hidden is not None and not all(
        isinstance(h, int) and not isinstance(h, bool) and h > 0 for h in hidden
    ):
        raise ValueError(f"radial_hidden = {hidden!r}: must be a list of positive ints")
    return {**PRESETS[preset], **spec}


_LOWEST = {"channels": 1, "num_layers": 1, "correlation": 1, "n_radial": 1, "readout_hidden": 1,
           "envelope_p": 2, "l_max": 0, "sh_l_max": 0}  # fmt: skip


def check_arguments(species, cutoff: float, parity: str, **sizes: int) -> None:
    """Raise ``ValueError`` naming the first bad constructor argument of the equivariant model;
    ``sizes``: the integer sizes of ``_LOWEST``."""
    for name, value in sizes.items():
        low = _LOWEST[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"equivariant model: {name} = {value!r} must be an integer >= {low}")
    if sizes["correlation"] > 3:
        raise ValueError(f"equivariant model: correlation = {sizes['correlation']} > 3 is not supported")
    if sizes["l_max"] > sizes["sh_l_max"]:
        raise ValueError(
            f"equivariant model: l_max = {sizes['l_max']} must be <= sh_l_max = {sizes['sh_l_max']}"
        )
    if parity not in ("natural", "both"):
        raise ValueError(f"equivariant model: parity = {parity!r} must be 'natural' or 'both'")
    if not float(cutoff) > 0:
        raise ValueError(f"equivariant model: cutoff = {cutoff!r} must be positive")
    if not species:
        raise ValueError("equivariant model: species must not be empty")
