"""Where labels sit in files and what they mean: the keys of energy, forces, stress and virial
(given, or detected among the conventions of common codes), extra labels named by declared
fields, and the stress/virial conventions (Voigt orders, σ = −W/V) converted to nearsight's
3×3 stress in eV/Å³ with ASE's sign.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from nearsight import keys as nskeys

# VASP orders the six stress components xx, yy, zz, xy, yz, zx (checked against
# finite-strain energy differences of the mlearn silicon "Elastic" set).
VASP_ORDER = ((0, 0), (1, 1), (2, 2), (0, 1), (1, 2), (2, 0))
# ASE's Voigt order: xx, yy, zz, yz, xz, xy.
ASE_ORDER = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))


def six_to_3x3(values: np.ndarray, order: tuple[tuple[int, int], ...]) -> np.ndarray:
    out = np.zeros((3, 3))
    for value, (i, j) in zip(values, order, strict=True):
        out[i, j] = out[j, i] = value
    return out


def stress_to_3x3(value: Any, where: str) -> np.ndarray:
    """A 6-Voigt (ASE order), 9-element or 3×3 stress as a 3×3 array."""
    arr = np.asarray(value, dtype=np.float64)
    if arr.size == 6:
        return six_to_3x3(arr.reshape(6), ASE_ORDER)
    if arr.size == 9:
        return arr.reshape(3, 3).copy()
    raise ValueError(f"{where}: stress has shape {arr.shape}; expected 6 (Voigt), 9 or 3x3 values")


def virial_to_stress(virial: Any, cell: np.ndarray, where: str) -> np.ndarray:
    """ASE stress (eV/Å³) from a virial in eV: σ = -W / V."""
    w = stress_to_3x3(virial, where)
    volume = abs(float(np.linalg.det(np.asarray(cell, dtype=np.float64).reshape(3, 3))))
    if volume < 1e-12:
        raise ValueError(f"{where}: a virial needs a cell with non-zero volume, got volume {volume}")
    return -w / volume


# The keys under which files of common codes store the labels, tried when no key is given
# (``read_frames(..., energy_key=None)``, ``nearsight evaluate`` by default): ASE's own, MACE's
# ``REF_*``, and the ``DFT_*`` / ``dft_*`` (QUIP/GAP) and ``ref_*`` conventions.
LABEL_KEY_CANDIDATES: dict[str, tuple[str, ...]] = {
    "energy": ("energy", "REF_energy", "DFT_energy", "dft_energy", "ref_energy"),
    "forces": ("forces", "REF_forces", "DFT_forces", "dft_forces", "dft_force", "ref_forces"),
    "stress": ("stress", "REF_stress", "DFT_stress", "dft_stress", "ref_stress"),
    "virial": ("virial", "virials", "REF_virials", "REF_virial", "DFT_virial", "dft_virial", "ref_virial"),
}


@dataclass(frozen=True)
class LabelKeys:
    """Where labels sit in ``atoms.info`` / ``atoms.arrays`` (or a database row).

    A label key of ``None`` reads no such label (:func:`read_frames` first replaces a ``None``
    it was given by the key :func:`detect_label_keys` finds in the file).
    """

    energy: str | None = "energy"
    forces: str | None = "forces"
    stress: str | None = "stress"
    virial: str | None = "virial"
    config_type: str = "config_type"
    weight: str = "weight"
    # labels beyond energy/forces/stress: (declared output field, key in the file), e.g.
    # (("charges", "mulliken"), ("dipole", "dipole")); per-atom fields are looked up in
    # atoms.arrays first, per-structure fields in atoms.info
    extra: tuple[tuple[str, str], ...] = ()
    total_charge: str = "charge"  # info key of the structure's net charge (e; 0 where absent)
    # info key of the spin multiplicity M = 2S + 1 (1 where absent); PySCF's and nearsight.qm's
    # "spin" is 2S, OMol25's "spin" is M: name the key of such files (data.multiplicity_key)
    spin_multiplicity: str = "multiplicity"


def electronic_inputs(
    info: Mapping[str, Any], keys: LabelKeys, where: str
) -> tuple[float, float, tuple[str, ...]]:
    """Total charge Q (e; 0 where absent) and spin multiplicity M (1 where absent) of a structure
    from its ``info``, and which of ``"total_charge"``, ``"spin_multiplicity"`` it stated.  A value
    that is not a single number raises naming ``where`` and the key (whole numbers, M ≥ 1 and the
    parity of the electron count are checked by :func:`nearsight.data.validate.validate_frame`)."""
    values, given = [], []
    for name, key, default in (
        ("total_charge", keys.total_charge, 0.0),
        ("spin_multiplicity", keys.spin_multiplicity, 1.0),
    ):
        value = info.get(key)
        if value is None:
            values.append(default)
            continue
        try:
            values.append(float(np.asarray(value, dtype=np.float64).reshape(())))
        except (TypeError, ValueError):
            label = "total charge" if name == "total_charge" else "spin multiplicity"
            raise ValueError(f"{where}: {label} {key!r} = {value!r} is not a number") from None
        given.append(name)
    return values[0], values[1], tuple(given)


def extra_label_keys(extra: Mapping[str, str] | None) -> tuple[tuple[str, str], ...]:
    """Checked ``(field, file key)`` pairs of ``extra`` (``{field: key in the file}``).

    A field must be declared in :mod:`nearsight.keys` as a per-atom or per-structure float
    output other than energy, forces and stress (those have their own keys).
    """
    pairs = []
    for name, key in (extra or {}).items():
        declared = nskeys.FIELDS.get(name)
        if name in (nskeys.ENERGY, nskeys.FORCES, nskeys.STRESS):
            raise ValueError(f"extra label {name!r}: use the reader's {name}_key for {name}")
        if declared is None or declared.dtype != "float" or declared.per == "edge":
            allowed = sorted(
                n for n, f in nskeys.FIELDS.items()
                if f.dtype == "float" and f.per != "edge" and n not in (nskeys.ENERGY, nskeys.FORCES, nskeys.STRESS)
            )  # fmt: skip
            raise ValueError(f"extra label {name!r} is not a declared output field; declared: {allowed}")
        if not isinstance(key, str) or not key:
            raise ValueError(
                f"extra label {name!r}: the key in the file must be a non-empty string, got {key!r}"
            )
        pairs.append((str(name), key))
    return tuple(pairs)


def lookup(key: str | None, *sources: Mapping[str, Any] | None) -> Any:
    if key is None:
        return None
    for source in sources:
        if source is not None and key in source and source[key] is not None:
            return source[key]
    return None


def detect_label_keys(
    present: Iterable[str], given: Mapping[str, str | None], source: str = "<data>"
) -> dict[str, str | None]:
    """The key of each label (energy, forces, stress, virial): ``given[label]`` where not None,
    else the one of :data:`LABEL_KEY_CANDIDATES` among the keys ``present`` in the file (None
    if there is none).  Two candidates present for one label are an error: choose with its key.
    """
    present = set(present)
    out: dict[str, str | None] = {}
    for label, candidates in LABEL_KEY_CANDIDATES.items():
        if given.get(label) is not None:
            out[label] = given[label]
            continue
        found = [key for key in candidates if key in present]
        if len(found) > 1:
            raise ValueError(
                f"{source}: {label} labels under several keys {found}: choose one with "
                f"{label}_key (nearsight evaluate --{label}-key)"
            )
        out[label] = found[0] if found else None
    return out


def no_labels_error(source: str, present: dict[str, set[str]], keys: dict[str, str | None]) -> ValueError:
    tried = {label: [key] if key else list(LABEL_KEY_CANDIDATES[label]) for label, key in keys.items()}
    listing = "; ".join(f"{part} keys {sorted(names)}" for part, names in present.items() if names)
    return ValueError(
        f"{source}: no frame has an energy, forces or stress label (looked for {tried}); the file has "
        f"{listing or 'no info or arrays keys'}: name the labels with energy_key, forces_key, stress_key "
        "(nearsight evaluate --energy-key ...)"
    )
