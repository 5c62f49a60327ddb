"""The in-memory record of one labelled structure.

Every reader returns a list of :class:`Frame`.  A frame keeps where it came
from (``source`` and ``index``) so that every later error can name the file
and frame.  Labels are optional: a missing label is ``None`` and is masked
in the loss.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from ase import Atoms

from .. import keys


@dataclass
class Frame:
    """One structure with optional labels, in eV, Å and eV/Å³.

    ``stress`` follows ASE's sign convention, σ = (1/V) ∂E/∂ε, as a 3×3 array.
    """

    numbers: np.ndarray  # [n_atoms] int64
    positions: np.ndarray  # [n_atoms, 3] float64, Å
    cell: np.ndarray  # [3, 3] float64, Å, rows are lattice vectors
    pbc: np.ndarray  # [3] bool
    energy: float | None = None  # eV, total
    forces: np.ndarray | None = None  # [n_atoms, 3] eV/Å
    stress: np.ndarray | None = None  # [3, 3] eV/Å³, ASE sign
    weight: float = 1.0
    total_charge: float = 0.0  # e, the structure's net charge (an input of charge-aware models)
    spin_multiplicity: float = 1.0  # M = 2S + 1 (1 singlet, 2 doublet, ...; an input of charge-aware models)
    # which of "total_charge" and "spin_multiplicity" the file stated (the others are defaults)
    inputs_given: tuple[str, ...] = ()
    config_type: str = "default"
    source: str = "<memory>"
    index: int = 0
    info: dict = field(default_factory=dict)
    # labels beyond energy, forces and stress, keyed by the declared output field they label
    # (nearsight.keys: e.g. "charges" [n_atoms] e, "dipole" [3] e·Å), in that field's unit
    labels: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.numbers = np.asarray(self.numbers, dtype=np.int64).reshape(-1)
        self.positions = np.asarray(self.positions, dtype=np.float64)
        self.cell = np.asarray(self.cell, dtype=np.float64).reshape(3, 3)
        self.pbc = np.broadcast_to(np.asarray(self.pbc, dtype=bool), (3,)).copy()
        if self.forces is not None:
            self.forces = np.asarray(self.forces, dtype=np.float64)
        if self.stress is not None:
            self.stress = np.asarray(self.stress, dtype=np.float64)
        if self.energy is not None:
            self.energy = float(self.energy)
        self.labels = {name: np.asarray(value, dtype=np.float64) for name, value in self.labels.items()}
        self.inputs_given = tuple(self.inputs_given)

    @property
    def n_atoms(self) -> int:
        return int(self.numbers.shape[0])

    @property
    def where(self) -> str:
        """``'file.xyz', frame 12`` for error messages."""
        return f"{self.source!r}, frame {self.index}"

    def to_atoms(self) -> Atoms:
        """An ``ase.Atoms`` with the labels attached as a SinglePointCalculator."""
        from ase.calculators.singlepoint import SinglePointCalculator

        atoms = Atoms(numbers=self.numbers, positions=self.positions, cell=self.cell, pbc=self.pbc)
        results = {}
        if self.energy is not None:
            results["energy"] = self.energy
        if self.forces is not None:
            results["forces"] = self.forces.copy()
        if self.stress is not None:
            results["stress"] = self.stress.copy()
        if results:
            atoms.calc = SinglePointCalculator(atoms, **results)
        for name, value in self.labels.items():  # per-atom labels as arrays, per-structure as info
            if value.ndim and value.shape[0] == self.n_atoms and keys.field(name).per == "atom":
                atoms.arrays[name] = value.copy()
            else:
                atoms.info[name] = value.copy()
        atoms.info["config_type"] = self.config_type
        if self.total_charge or "total_charge" in self.inputs_given:
            atoms.info["charge"] = self.total_charge
        if self.spin_multiplicity != 1 or "spin_multiplicity" in self.inputs_given:
            atoms.info["multiplicity"] = self.spin_multiplicity
        return atoms

    @classmethod
    def from_atoms(
        cls,
        atoms: Atoms,
        *,
        energy: float | None = None,
        forces: np.ndarray | None = None,
        stress: np.ndarray | None = None,
        source: str = "<memory>",
        index: int = 0,
        config_type: str | None = None,
        weight: float = 1.0,
        labels: dict[str, np.ndarray] | None = None,
        total_charge: float = 0.0,
        spin_multiplicity: float = 1.0,
        inputs_given: tuple[str, ...] = (),
    ) -> Frame:
        """Geometry from ``atoms``; labels as given (readers extract them)."""
        if stress is not None:
            stress = np.asarray(stress, dtype=np.float64)
            if stress.shape == (6,):
                from ase.constraints import voigt_6_to_full_3x3_stress

                stress = voigt_6_to_full_3x3_stress(stress)
        return cls(
            numbers=atoms.numbers.copy(),
            positions=atoms.positions.copy(),
            cell=np.asarray(atoms.cell.array, dtype=np.float64).copy(),
            pbc=atoms.pbc.copy(),
            energy=energy,
            forces=forces,
            stress=stress,
            weight=weight,
            config_type=config_type or str(atoms.info.get("config_type", "default")),
            source=source,
            index=index,
            labels=dict(labels or {}),
            total_charge=total_charge,
            spin_multiplicity=spin_multiplicity,
            inputs_given=inputs_given,
        )


def select(items: list[Any], index: int | str | slice) -> list[Any]:
    """Items picked by an ASE-style index (``":"``, ``"-1"``, ``"::2"``, 3, slice)."""
    if isinstance(index, str):
        from ase.io.formats import string2index

        index = string2index(index)
    if isinstance(index, slice):
        return items[index]
    try:
        return [items[int(index)]]
    except IndexError:
        raise ValueError(f"index {index} out of range for {len(items)} frames") from None
