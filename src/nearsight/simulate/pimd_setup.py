"""Setting up a PIMD run directory: the calculator, the cell i-PI needs, and the input files.

i-PI keeps the cell as an upper-triangular matrix h (lattice vectors as columns), i.e. ASE's
lower-triangular form; a periodic structure in another orientation is rotated rigidly
(:meth:`ase.cell.Cell.standard_form`) before the run, so positions, trajectories and forces are
in that rotated frame.  A molecule keeps its coordinates; i-PI still wants a volume, so it gets a
cubic box 20 Å wider than the molecule that the forces never see (no wrapping, no images).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from ase import Atoms
from ase.calculators.calculator import BaseCalculator

from .._files import atomic_write
from .ipi_driver import write_driver_config
from .ipi_input import PREFIX, PIMDSettings, check_estimators, pimd_input_xml

if TYPE_CHECKING:
    import torch

INPUT_FILE = "input.xml"
SETTINGS_FILE = "pimd.json"
MOLECULE_MARGIN_A = 20.0


def resolve_calculator(
    calc_or_model: str | os.PathLike | torch.nn.Module | BaseCalculator,
    *,
    dtype: str = "float64",
    device: str = "cpu",
) -> tuple[BaseCalculator, Path | None, str]:
    """(ASE calculator, model file or None, a name for messages) of a model file, model or calculator."""
    if isinstance(calc_or_model, (str, os.PathLike)):
        path = Path(calc_or_model)
        if not path.is_file():
            raise ValueError(f"model file {str(path)!r} does not exist")
        from ..calculator import NearsightCalculator

        return NearsightCalculator(path, dtype=dtype, device=device), path, str(path)
    import torch

    if isinstance(calc_or_model, torch.nn.Module):
        from ..calculator import NearsightCalculator

        name = f"{type(calc_or_model).__name__} (in memory)"
        return NearsightCalculator(calc_or_model, dtype=dtype, device=device), None, name
    if callable(getattr(calc_or_model, "get_property", None)):
        return calc_or_model, None, type(calc_or_model).__name__
    raise TypeError(
        f"calc_or_model must be a model file, a model or an ASE calculator, got {type(calc_or_model).__name__}"
    )


def standard_cell(atoms: Atoms, where: str = "structure") -> tuple[Atoms, np.ndarray]:
    """(a copy of ``atoms`` in i-PI's orientation, the 3×3 box i-PI gets, rows = vectors in Å)."""
    atoms = atoms.copy()
    positions = atoms.get_positions()
    if len(atoms) == 0 or not np.isfinite(positions).all():
        raise ValueError(f"{where}: needs at least one atom and finite positions")
    if not atoms.pbc.any():
        side = float(np.ptp(positions, axis=0).max()) + MOLECULE_MARGIN_A
        return atoms, np.eye(3) * side
    cell = atoms.cell.array
    volume = float(np.linalg.det(cell))
    if abs(volume) < 1e-6:
        raise ValueError(f"{where}: pbc={atoms.pbc.tolist()} but the cell {cell.tolist()} has no volume")
    if volume < 0:
        raise ValueError(f"{where}: the cell is left-handed (det < 0); swap two lattice vectors")
    if np.abs(cell[np.triu_indices(3, 1)]).max() > 1e-10:
        rcell, rotation = atoms.cell.standard_form()
        atoms.positions = positions @ rotation.T
        atoms.set_cell(rcell, scale_atoms=False)
    return atoms, atoms.cell.array.copy()


def _clear(directory: Path, overwrite: bool) -> None:
    """Refuse a directory that holds a run unless ``overwrite``; then remove that run's files."""
    old = [directory / n for n in ("RESTART", INPUT_FILE, SETTINGS_FILE) if (directory / n).exists()]
    old += sorted(directory.glob(f"{PREFIX}.*"))
    if not old:
        return
    if not overwrite:
        raise ValueError(
            f"{directory} holds a PIMD run ({old[0].name}): resume=True continues it, overwrite=True "
            "starts afresh (removing its files)"
        )
    backups = list(directory.glob("#*#"))  # i-PI's backups of files it would overwrite
    for path in old + backups + [directory / "ipi.log"]:
        if path.is_file():
            path.unlink()


def prepare_pimd(
    atoms: Atoms,
    calculator: BaseCalculator,
    directory: Path,
    settings: PIMDSettings,
    *,
    model_path: Path | None,
    model_name: str,
    overwrite: bool = False,
    dtype: str = "float64",
    device: str = "cpu",
) -> Path:
    """Check what the run asks of the model, then write the run's files; returns ``input.xml``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    _clear(directory, overwrite)
    atoms, box = standard_cell(atoms)
    properties, extras, needs_virial = check_estimators(settings.estimators, atoms, calculator, model_name)
    probe = atoms.copy()
    probe.calc = calculator
    try:
        energy, forces = probe.get_potential_energy(), probe.get_forces()
    except (ValueError, KeyError, RuntimeError) as exc:
        raise ValueError(f"model {model_name} cannot evaluate the start structure: {exc}") from exc
    if not (np.isfinite(energy) and np.isfinite(forces).all()):
        raise ValueError(f"model {model_name}: non-finite energy or forces on the start structure")
    write_driver_config(
        directory,
        atoms,
        model=model_path,
        dtype=dtype,
        device=device,
        virial=needs_virial,
        extras=tuple(extras),
    )
    xml = pimd_input_xml(atoms, settings, properties, extras, box)
    meta = {
        "settings": asdict(settings),
        "species_counts": dict(Counter(atoms.get_chemical_symbols())),
        "pbc": [bool(p) for p in atoms.pbc],
        "model": model_name,
        "extras": extras,
        "start_energy_eV": float(energy),
    }
    atomic_write(directory / SETTINGS_FILE, lambda fh: json.dump(meta, fh, indent=1))
    return atomic_write(directory / INPUT_FILE, lambda fh: fh.write(xml))
