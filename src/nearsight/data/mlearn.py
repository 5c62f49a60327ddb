"""The mlearn benchmark's JSON files (Zuo et al., J. Phys. Chem. A 124, 731, 2020) as frames:
VASP stress in kbar (order xx, yy, zz, xy, yz, zx, compressive positive) to eV/Å³ with ASE's sign."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from ase.data import atomic_numbers as _SYMBOL_TO_Z

from nearsight import units
from nearsight.data.frame import Frame, select
from nearsight.data.label_keys import VASP_ORDER, six_to_3x3


def read_mlearn(path: str | Path, *, index: int | str | slice = ":") -> list[Frame]:
    """Frames from an mlearn JSON file (pymatgen structures + VASP outputs).

    ``outputs.virial_stress`` is VASP's stress in kbar (positive = compressive),
    ordered xx, yy, zz, xy, yz, zx; it becomes σ_ASE = -s · kbar.  ``group``
    becomes the config type.
    """
    source = str(path)
    try:
        with open(path) as fh:
            records = json.load(fh)
    except json.JSONDecodeError as err:
        raise ValueError(f"{source!r}: not valid JSON ({err})") from None
    if isinstance(records, dict):
        records = [records]
    frames = []
    for i, rec in select(list(enumerate(records)), index):
        where = f"{source!r}, frame {i}"
        try:
            structure = rec["structure"]
            lattice = np.asarray(structure["lattice"]["matrix"], dtype=np.float64)
            sites = structure["sites"]
        except (KeyError, TypeError):
            raise ValueError(f"{where}: record has no pymatgen 'structure'") from None
        numbers, positions = [], []
        for site in sites:
            species = max(site["species"], key=lambda s: s.get("occu", 1.0))
            symbol = species["element"]
            if symbol not in _SYMBOL_TO_Z:
                raise ValueError(f"{where}: unknown element {symbol!r}")
            numbers.append(_SYMBOL_TO_Z[symbol])
            xyz = site.get("xyz")
            positions.append(xyz if xyz is not None else np.asarray(site["abc"]) @ lattice)
        outputs = rec.get("outputs") or {}
        stress = None
        if outputs.get("virial_stress") is not None:
            s = np.asarray(outputs["virial_stress"], dtype=np.float64).reshape(-1)
            if s.size != 6:
                raise ValueError(f"{where}: virial_stress has {s.size} values, expected 6")
            stress = -six_to_3x3(s, VASP_ORDER) * units.KBAR
        forces = outputs.get("forces")
        info = {k: rec[k] for k in ("group", "description", "tag") if k in rec}
        frames.append(
            Frame(
                numbers=np.asarray(numbers, dtype=np.int64),
                positions=np.asarray(positions, dtype=np.float64).reshape(len(numbers), 3),
                cell=lattice,
                pbc=np.asarray(structure["lattice"].get("pbc", (True, True, True)), dtype=bool),
                energy=outputs.get("energy"),
                forces=None if forces is None else np.asarray(forces, dtype=np.float64),
                stress=stress,
                config_type=str(rec.get("group") or "default"),
                source=source,
                index=i,
                info=info,
            )
        )
    return frames
