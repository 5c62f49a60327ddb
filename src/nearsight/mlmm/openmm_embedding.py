"""ML/MM in OpenMM: a nearsight region inside a classical force field, mechanical embedding.

    E = E_MM(all) − E_MM(ML region) + E_ML(ML region)

:func:`ml_mm_system` builds the MM ``System`` of the whole topology with an OpenMM force field and
hands it to openmmml 1.8 (``MLPotential("ase").createMixedSystem``, embedding ``"mechanical"``),
which removes every MM bond, angle, torsion, CMAP and 1-4 term (CHARMM's ``CustomBondForce``) with
all its atoms in the ML region, turns every ML–ML pair of the ``NonbondedForce`` into an
exception of zero charge product and ε (and excludes it from any ``CustomNonbondedForce``), removes
the constraints inside the region, and adds an ``openmm.PythonForce`` that calls the ASE calculator
on the ML atoms at every force evaluation.  The ML–MM interaction stays the force field's
(charges and Lennard-Jones).  ``openmm.PythonForce`` (OpenMM ≥ 8.6) runs the Python callback on any
platform, so nothing here needs openmmtorch (whose PyPI wheels do not load on a CPU-only machine).

Units: OpenMM works in kJ/mol and nm, nearsight in eV and Å: the ASE potential converts positions
nm → Å and returns E/(kJ/mol in eV) and F·10/(kJ/mol in eV), with 1 eV = 96.485 kJ/mol;
:func:`evaluate` converts back.

Exactness: without cutoffs (``NoCutoff``, non-periodic) the ML/MM energy is exactly the expression
above with E_MM(ML region) the force field's energy of the ML region alone (tests/test_mlmm.py checks
it to 1e-6 eV).  With PME the ML–ML pairs are removed at the minimum image, while the reciprocal
sum still couples the ML charges to the images of the ML region (openmmml's choice for a model
without long-range terms; for a nearsight model with a Coulomb term ``mlLongRange=True`` subtracts
the MM PME energy of the ML region instead).  The ML region must be whole molecules: a covalent bond
that leaves it (which openmmml would cap with link atoms that change the topology) raises.

Cost: each step OpenMM copies the ML positions into a ``State``, calls Python (holding the GIL),
and the calculator builds the neighbour list and runs the model forward and backward (for a
periodic box the nearsight calculator also takes the stress derivative, which OpenMM does not use).
This is a fixed per-step overhead on top of the MM step, measured by ``benchmarks/mlmm_water.py``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import openmm
from ase import Atoms, units
from ase.calculators.calculator import Calculator
from openmm import app, unit

from .region import check_region, check_species, ml_calculator

if TYPE_CHECKING:
    from torch import nn

DEFAULT_FORCEFIELD = ("amber14-all.xml", "amber14/tip3p.xml")
KJ_PER_MOL_PER_EV = 1.0 / (units.kJ / units.mol)  # 96.485: ASE's value, the one openmmml converts with


@dataclass
class MLMMSystem:
    """An ML/MM system and what runs it.

    ``system``: the ML/MM ``openmm.System``; ``mm_system``: the force field for everything (the MM
    reference); ``topology`` and ``positions`` (nm) of the whole system; ``ml_atoms``: the sorted ML
    atom indices; ``calculator``: the ASE calculator of the ML region.
    """

    system: openmm.System
    mm_system: openmm.System
    topology: app.Topology
    positions: unit.Quantity
    ml_atoms: list[int]
    calculator: Calculator

    def simulation(
        self,
        temperature_K: float = 300.0,
        timestep_fs: float = 1.0,
        friction_per_ps: float = 1.0,
        platform: str = "CPU",
        threads: int | None = None,
        mm_only: bool = False,
        seed: int | None = None,
    ) -> app.Simulation:
        """An ``openmm.app.Simulation`` (Langevin middle integrator) at ``positions``, velocities
        drawn at ``temperature_K``; ``mm_only=True`` runs the MM reference system instead."""
        integrator = openmm.LangevinMiddleIntegrator(
            temperature_K * unit.kelvin, friction_per_ps / unit.picosecond, timestep_fs * unit.femtosecond
        )
        if seed is not None:
            integrator.setRandomNumberSeed(int(seed))
        properties = {"Threads": str(int(threads))} if threads is not None and platform == "CPU" else {}
        simulation = app.Simulation(
            self.topology,
            self.mm_system if mm_only else self.system,
            integrator,
            openmm.Platform.getPlatformByName(platform),
            properties,
        )
        simulation.context.setPositions(self.positions)
        simulation.context.setVelocitiesToTemperature(
            temperature_K * unit.kelvin, *(() if seed is None else (int(seed),))
        )
        return simulation

    def minimize_with_mm(
        self, max_iterations: int = 0, platform: str = "CPU", threads: int | None = None
    ) -> float:
        """Relax ``positions`` with the MM force field alone (``max_iterations`` 0: to convergence) and
        return the MM energy (eV).  A start for ML/MM dynamics that removes the clashes of a freshly
        solvated box; minimising the ML/MM energy instead can drive a model into geometries it never saw."""
        simulation = self.simulation(platform=platform, threads=threads, mm_only=True)
        simulation.minimizeEnergy(maxIterations=max_iterations)
        state = simulation.context.getState(getEnergy=True, getPositions=True)
        self.positions = state.getPositions(asNumpy=True)
        return state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) / KJ_PER_MOL_PER_EV


def ml_mm_system(
    topology: app.Topology,
    positions,
    ml_atoms: Sequence[int] | np.ndarray,
    model_or_calc: nn.Module | str | os.PathLike | Calculator,
    forcefield: str | Sequence[str] | app.ForceField = DEFAULT_FORCEFIELD,
    nonbonded_method=None,
    cutoff_nm: float = 1.0,
    constraints=app.HBonds,
    rigid_water: bool = True,
    charge: int | None = None,
    ml_long_range: bool | None = None,
    dtype: str = "float64",
) -> MLMMSystem:
    """The ML/MM system of ``topology`` with the atoms ``ml_atoms`` described by ``model_or_calc``.

    ``positions``: ``[n, 3]`` with OpenMM units (or plain numbers in nm); ``model_or_calc``: a
    nearsight model (module or model file) or an ASE calculator; ``forcefield``: OpenMM force field
    files (or a ``ForceField``), which must cover every residue, the ML region's too (its charges
    and Lennard-Jones describe the ML–MM interaction).  ``nonbonded_method``: default PME for a
    topology with a periodic box, else NoCutoff; ``cutoff_nm``, ``constraints`` and ``rigid_water``
    go to ``ForceField.createSystem`` (constraints inside the ML region are removed).  ``charge``:
    total charge of the ML region for models that read it (``atoms.info["charge"]``);
    ``ml_long_range``: whether the model's own energy has periodic long-range electrostatics
    (default: a nearsight model with a Coulomb term; only used for periodic systems).
    """
    from openmmml import MLPotential

    n_atoms = topology.getNumAtoms()
    region = check_region(ml_atoms, n_atoms, "the topology")
    xyz = _nanometres(positions, n_atoms)
    atoms = list(topology.atoms())
    if any(atoms[i].element is None for i in region):
        raise ValueError(
            f"ML region: atoms {[int(i) for i in region if atoms[i].element is None]} have no element "
            "(virtual sites and extra particles cannot be ML atoms)"
        )
    _check_whole_molecules(topology, region)
    calc = ml_calculator(model_or_calc, dtype)
    check_species([atoms[i].element.atomic_number for i in region], calc, "ml_mm_system")
    if not isinstance(forcefield, app.ForceField):
        forcefield = app.ForceField(*([forcefield] if isinstance(forcefield, str) else forcefield))
    periodic = topology.getPeriodicBoxVectors() is not None
    if periodic:
        box = np.asarray(topology.getPeriodicBoxVectors().value_in_unit(unit.nanometer))
        if nonbonded_method is not app.NoCutoff and cutoff_nm > 0.5 * float(np.min(np.diag(box))):
            raise ValueError(
                f"cutoff_nm = {cutoff_nm} is more than half the periodic box ({np.diag(box).round(3).tolist()} "
                "nm): use a smaller cutoff or a larger box"
            )
    if nonbonded_method is None:
        nonbonded_method = app.PME if periodic else app.NoCutoff
    mm_system = forcefield.createSystem(
        topology,
        nonbondedMethod=nonbonded_method,
        nonbondedCutoff=cutoff_nm * unit.nanometer,
        constraints=constraints,
        rigidWater=rigid_water,
    )
    options = {"calculator": calc}
    if charge is not None:
        options["info"] = {"charge": int(charge)}
    if periodic:
        options["mlLongRange"] = _has_coulomb(calc) if ml_long_range is None else bool(ml_long_range)
    system = MLPotential("ase").createMixedSystem(
        topology, mm_system, [int(i) for i in region], embedding="mechanical", **options
    )
    return MLMMSystem(system, mm_system, topology, xyz, [int(i) for i in region], calc)


def evaluate(
    system: openmm.System, positions, platform: str = "Reference", box_vectors=None
) -> tuple[float, np.ndarray]:
    """(E eV, F ``[n, 3]`` eV/Å) of ``system`` at ``positions`` (nm, or with units); the Reference
    platform computes in double precision."""
    integrator = openmm.VerletIntegrator(1.0 * unit.femtosecond)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName(platform))
    if box_vectors is not None:
        context.setPeriodicBoxVectors(*box_vectors)
    context.setPositions(_nanometres(positions, system.getNumParticles()))
    state = context.getState(getEnergy=True, getForces=True)
    energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) / KJ_PER_MOL_PER_EV
    forces = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.angstrom)
    del context, integrator
    return float(energy), np.asarray(forces) / KJ_PER_MOL_PER_EV


def topology_from_atoms(atoms: Atoms, residue_name: str = "MOL") -> tuple[app.Topology, unit.Quantity]:
    """An OpenMM topology (one residue, bonds where ASE's natural cutoffs put them) and the positions
    (nm) of a molecule given as ASE atoms: the input a force field's residue templates match by
    elements and bonds (e.g. ethanol against CHARMM36's ``ETOH``)."""
    from ase.neighborlist import NeighborList, natural_cutoffs

    topology = app.Topology()
    residue = topology.addResidue(residue_name, topology.addChain())
    symbols = atoms.get_chemical_symbols()
    added = [
        topology.addAtom(f"{s}{k + 1}", app.Element.getBySymbol(s), residue) for k, s in enumerate(symbols)
    ]
    neighbours = NeighborList(natural_cutoffs(atoms), self_interaction=False, bothways=False)
    neighbours.update(atoms)
    for i in range(len(atoms)):
        for j in neighbours.get_neighbors(i)[0]:
            topology.addBond(added[i], added[int(j)])
    return topology, unit.Quantity(np.asarray(atoms.positions) * 0.1, unit.nanometer)


def _check_whole_molecules(topology: app.Topology, region: np.ndarray) -> None:
    inside = set(region.tolist())
    cut = [
        (b.atom1, b.atom2) for b in topology.bonds() if (b.atom1.index in inside) != (b.atom2.index in inside)
    ]
    if cut:

        def label(atom) -> str:
            return f"{atom.index} ({atom.residue.name}{atom.residue.id}:{atom.name})"

        named = ", ".join(f"{label(a)}–{label(b)}" for a, b in cut[:5])
        raise ValueError(
            f"ML region: {len(cut)} covalent bond(s) leave it ({named}); the region must consist of whole "
            "molecules (link atoms are not supported)"
        )


def _has_coulomb(calc: Calculator) -> bool:
    forcefield = getattr(calc, "forcefield", None)
    return forcefield is not None and getattr(forcefield.model, "coulomb", None) is not None


def _nanometres(positions, n_atoms: int) -> unit.Quantity:
    if unit.is_quantity(positions):
        positions = positions.value_in_unit(unit.nanometer)
    xyz = np.array([[float(c) for c in p] for p in positions]) if len(positions) else np.zeros((0, 3))
    if xyz.shape != (n_atoms, 3) or not np.all(np.isfinite(xyz)):
        raise ValueError(
            f"positions: expected {n_atoms} finite [x, y, z] (nm), got an array of shape {xyz.shape}"
        )
    return unit.Quantity(xyz, unit.nanometer)
