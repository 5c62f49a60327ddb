"""ML/MM (nearsight.mlmm): a nearsight region inside TIP3P water through ASE's SimpleQMMM and EIQMMM and
inside an OpenMM force field through openmmml's MLPotential("ase").  Each energy is checked against its
pieces computed independently here: E = E_MM(all) − E_MM(ML region) + E_ML to 1e-6 eV (mechanical), and
electrostatic minus mechanical = the Coulomb energy of the model's charges minus that of the force-field
charges of the ML atoms with the MM charges."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule
from ase.calculators.emt import EMT
from ase.calculators.tip3p import TIP3P, qH
from scipy.spatial.transform import Rotation

from nearsight import NearsightCalculator
from nearsight.mlmm import eiqmmm, simple_qmmm
from nearsight.mlmm.point_charges import K_E
from nearsight.testing import check_forces
from nearsight.training.config import validate_config
from nearsight.training.model_setup import build_model

pytestmark = pytest.mark.usefixtures("one_thread")

ML_WATERS = [3, 4, 5, 6, 7, 8]  # the second and third of four waters
WIDTHS = {"H": 0.8, "O": 1.0}  # Gaussian charges wide enough that erf(r/√2σ) differs from 1


def _model(species: list[int], longrange: dict | None = None):
    section = {"cutoff": 3.5, "n_radial": 4, "n_angular_eta": 1, "hidden": [8]}
    if longrange is not None:
        section["longrange"] = longrange
    cfg = validate_config({"data": {"train": "x"}, "model": section})
    torch.manual_seed(0)
    model = build_model(cfg["model"], species).double().eval()
    if longrange is not None:  # charges of a few tenths of e, not the near-zero ones of a fresh head
        with torch.no_grad():
            for p in model.short.charge_nets.parameters():
                p.mul_(3.0)
    return model


def _waters(centres: np.ndarray, seed: int = 1) -> Atoms:
    rng = np.random.default_rng(seed)
    atoms = Atoms()
    for c in centres:
        w = molecule("H2O")  # O, H, H
        rotation = Rotation.random(random_state=int(rng.integers(1 << 30)))
        w.positions = rotation.apply(w.positions - w.positions[0]) + c
        atoms += w
    return atoms


def _cluster() -> Atoms:
    return _waters(np.array([[0.0, 0.0, 0.0], [2.8, 0.0, 0.0], [0.0, 2.8, 0.3], [1.4, 1.4, 2.4]]))


def _mm_charges(n_atoms: int) -> np.ndarray:
    return np.tile([-2 * qH, qH, qH], n_atoms // 3)


def _coulomb(q, r_ml, big_q, r_mm, widths=None) -> float:
    """k_e Σ_i Σ_J q_i Q_J φ_i(r), φ = 1/r or erf(r/√2σ_i)/r, pair by pair."""
    total = 0.0
    for i in range(len(q)):
        for j in range(len(big_q)):
            r = float(np.linalg.norm(r_ml[i] - r_mm[j]))
            phi = 1.0 / r if widths is None else math.erf(r / (math.sqrt(2.0) * widths[i])) / r
            total += K_E * q[i] * big_q[j] * phi
    return total


def _energy_forces(atoms: Atoms, calc) -> tuple[float, np.ndarray]:
    atoms = atoms.copy()
    atoms.calc = calc
    return atoms.get_potential_energy(), atoms.get_forces()


# ----------------------------------------------------------------- ASE, mechanical
def test_simple_qmmm_is_mm_of_all_minus_mm_of_region_plus_ml():
    """Two of four waters described by the model: E and F are the three pieces computed separately to
    1e-6, the pieces are not negligible, and the forces are −dE/dR by finite differences (1e-6 eV/Å)."""
    model = _model([1, 8])
    atoms = _cluster()
    atoms.calc = simple_qmmm(ML_WATERS, model, TIP3P(), TIP3P())
    energy, forces = atoms.get_potential_energy(), atoms.get_forces()
    e_all, f_all = _energy_forces(atoms, TIP3P())
    e_region, f_region = _energy_forces(atoms[ML_WATERS], TIP3P())
    e_ml, f_ml = _energy_forces(atoms[ML_WATERS], NearsightCalculator(model))
    assert abs(e_region) > 1e-2 and abs(e_ml - e_region) > 1e-2  # the subtraction matters
    assert abs(energy - (e_all - e_region + e_ml)) < 1e-6
    expected = f_all.copy()
    expected[ML_WATERS] += f_ml - f_region
    assert np.abs(forces - expected).max() < 1e-6
    result = check_forces(atoms.calc, atoms, tol=1e-6, max_components=36)
    assert result.passed, result


# ----------------------------------------------------------------- ASE, electrostatic
@pytest.mark.parametrize("widths", [None, WIDTHS], ids=["point", "gaussian"])
def test_eiqmmm_differs_from_mechanical_by_the_coulomb_of_the_model_charges(widths):
    """E_EI − E_ME = C(q_model, Q_MM) − C(q_TIP3P, Q_MM) to 1e-6 eV (Lennard-Jones the same, TIP3P
    without switching), the embedding energy is C(q_model, Q_MM), and the EIQMMM forces (ML atoms with
    the charges' response, and MM atoms) are −dE/dR by finite differences."""
    coulomb = {"accuracy": 1e-8, **({"widths": widths} if widths else {})}
    model = _model([1, 8], {"coulomb": coulomb})
    atoms = _cluster()
    mechanical = atoms.copy()
    mechanical.calc = simple_qmmm(ML_WATERS, model, TIP3P(rc=20.0), TIP3P(rc=20.0))
    electrostatic = atoms.copy()
    electrostatic.calc = eiqmmm(ML_WATERS, model, TIP3P(rc=20.0))
    difference = electrostatic.get_potential_energy() - mechanical.get_potential_energy()

    mm = [i for i in range(len(atoms)) if i not in ML_WATERS]
    q_model = NearsightCalculator(model).get_charges(atoms[ML_WATERS])
    q_ff = _mm_charges(len(ML_WATERS))
    sigma = None if widths is None else [widths[s] for s in atoms[ML_WATERS].get_chemical_symbols()]
    r_ml, r_mm, big_q = atoms.positions[ML_WATERS], atoms.positions[mm], _mm_charges(len(mm))
    c_model = _coulomb(q_model, r_ml, big_q, r_mm, sigma)
    c_ff = _coulomb(q_ff, r_ml, big_q, r_mm)
    assert abs(c_model - c_ff) > 1e-2  # the two embeddings differ measurably
    assert abs(difference - (c_model - c_ff)) < 1e-6
    assert abs(electrostatic.calc.qmcalc.results["embedding_energy"] - c_model) < 1e-9
    result = check_forces(electrostatic.calc, electrostatic, tol=1e-6, max_components=36)
    assert result.passed, result


def test_eiqmmm_needs_a_model_with_charges_and_a_calculator_that_embeds():
    plain = _model([1, 8])
    for given in (plain, NearsightCalculator(plain)):
        with pytest.raises(ValueError, match=r"predicts charges \(keys.CHARGES\).*no charge head"):
            eiqmmm(ML_WATERS, given, TIP3P())
    with pytest.raises(ValueError, match="embed"):
        eiqmmm(ML_WATERS, EMT(), TIP3P())
    charged = _model([1, 8], {"coulomb": {"accuracy": 1e-6}})
    with pytest.raises(ValueError, match=r"interaction="):
        eiqmmm(ML_WATERS, charged, EMT())
    atoms = _cluster()
    atoms.calc = eiqmmm(ML_WATERS, charged, TIP3P(), ml_lj={"O": (3.15, 0.006)})  # no H parameters
    with pytest.raises(ValueError, match=r"no \(σ, ε\) for ML element\(s\) \['H'\]"):
        atoms.get_potential_energy()


# ----------------------------------------------------------------- OpenMM, mechanical
CHARMM = ("charmm36.xml", "charmm36/water.xml")  # CHARMM36 has ethanol (ETOH) and its TIP3P water


def _ethanol_in_waters(n_waters: int = 3, seed: int = 0) -> Atoms:
    """Ethanol (atoms 0-8) with waters 3.4 Å from its centre, no two molecules closer than 2 Å."""
    rng = np.random.default_rng(seed)
    atoms = molecule("CH3CH2OH")
    atoms.positions -= atoms.positions.mean(0)
    while len(atoms) < 9 + 3 * n_waters:
        w = molecule("H2O")
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        rotation = Rotation.random(random_state=int(rng.integers(1 << 30)))
        w.positions = rotation.apply(w.positions - w.positions[0]) + 3.4 * direction
        if np.linalg.norm(atoms.positions[:, None] - w.positions[None], axis=-1).min() > 2.0:
            atoms += w
    return atoms


def _openmm_topology(atoms: Atoms):
    """Ethanol (matched to CHARMM's ETOH by elements and bonds) plus HOH residues, positions in nm."""
    from openmm import app, unit

    from nearsight.mlmm import topology_from_atoms

    topology, positions = topology_from_atoms(atoms[:9], "ETOH")
    modeller = app.Modeller(topology, positions)
    waters = app.Topology()
    chain = waters.addChain()
    for _ in range((len(atoms) - 9) // 3):
        residue = waters.addResidue("HOH", chain)
        o = waters.addAtom("O", app.element.oxygen, residue)
        for name in ("H1", "H2"):
            waters.addBond(o, waters.addAtom(name, app.element.hydrogen, residue))
    modeller.add(waters, unit.Quantity(atoms.positions[9:] * 0.1, unit.nanometer))
    return modeller.topology, modeller.positions


@pytest.fixture(scope="module")
def openmm_system():
    from nearsight.mlmm import ml_mm_system

    atoms = _ethanol_in_waters()
    topology, positions = _openmm_topology(atoms)
    model = _model([1, 6, 8])
    return atoms, model, ml_mm_system(topology, positions, range(9), model, forcefield=CHARMM)


def test_openmm_ml_mm_energy_and_forces_are_the_pieces(openmm_system):
    """OpenMM's ML/MM energy (Reference platform, kJ/mol → eV) = E_MM(all) − E_MM(ethanol alone) + E_ML
    to 1e-6 eV, forces to 1e-6 eV/Å, and the forces are −dE/dR by finite differences of OpenMM's energy."""
    import openmm
    from openmm import app, unit

    from nearsight.mlmm import evaluate, topology_from_atoms
    from nearsight.mlmm.openmm_embedding import KJ_PER_MOL_PER_EV

    atoms, model, mlmm = openmm_system
    energy, forces = evaluate(mlmm.system, mlmm.positions)
    e_all, f_all = evaluate(mlmm.mm_system, mlmm.positions)
    topology, positions = topology_from_atoms(atoms[:9], "ETOH")  # the ML region alone, same settings
    region = app.ForceField(*CHARMM).createSystem(
        topology, nonbondedMethod=app.NoCutoff, constraints=app.HBonds
    )
    e_region, f_region = evaluate(region, positions)
    e_ml, f_ml = _energy_forces(atoms[:9], NearsightCalculator(model))
    assert abs(e_region) > 0.05 and abs(e_all - e_region) > 0.05  # intramolecular and ML–MM terms
    assert abs(energy - (e_all - e_region + e_ml)) < 1e-6
    expected = f_all.copy()
    expected[:9] += f_ml - f_region
    assert np.abs(forces - expected).max() < 1e-6

    context = openmm.Context(
        mlmm.system, openmm.VerletIntegrator(1.0), openmm.Platform.getPlatformByName("Reference")
    )
    base = atoms.positions * 0.1  # nm
    h = 1e-5  # nm
    for i, a in ((0, 0), (2, 1), (7, 2), (9, 0), (11, 2)):  # ethanol C, O, H; a water O and H
        e = []
        for step in (-h, h):
            moved = base.copy()
            moved[i, a] += step
            context.setPositions(moved)
            e.append(
                context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
            )
        fd = -(e[1] - e[0]) / (2 * h * 10) / KJ_PER_MOL_PER_EV  # eV/Å
        assert abs(fd - forces[i, a]) < 1e-5, (i, a, fd, forces[i, a])


def test_openmm_ml_mm_md_conserves_energy_and_keeps_mm_constraints(openmm_system):
    """The ML region's constraints are removed (ethanol's 6 X–H), the waters' kept (3 each); 200 NVE steps
    of 0.25 fs conserve the total energy to 2e-3 eV (forces 10 % off in the ML region drift 4e-2 eV)."""
    import openmm
    from openmm import unit

    _, _, mlmm = openmm_system
    assert mlmm.mm_system.getNumConstraints() == 6 + 9 and mlmm.system.getNumConstraints() == 9
    integrator = openmm.VerletIntegrator(0.25 * unit.femtosecond)
    context = openmm.Context(mlmm.system, integrator, openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(mlmm.positions)
    context.setVelocitiesToTemperature(300 * unit.kelvin, 1)
    context.applyConstraints(1e-10)
    total = []
    for _ in range(40):
        integrator.step(5)
        state = context.getState(getEnergy=True)
        total.append(
            (state.getPotentialEnergy() + state.getKineticEnergy()).value_in_unit(unit.kilojoule_per_mole)
        )
    drift = np.ptp(total) / 96.485
    assert drift < 2e-3
    moved = context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    assert np.abs(moved[:9] - np.asarray(mlmm.positions.value_in_unit(unit.nanometer))[:9]).max() > 1e-4


def test_openmm_ml_mm_runs_in_a_periodic_water_box():
    """Ethanol solvated by Modeller.addSolvent (PME, 1.6 nm box): the PythonForce's energy is the model's
    energy of the molecule (1e-6 eV), also with its atoms wrapped into the box apart; a short
    Langevin run of MLMMSystem.simulation on the CPU platform moves the atoms and keeps that identity."""
    import openmm
    from openmm import app, unit

    from nearsight.mlmm import ml_mm_system, topology_from_atoms
    from nearsight.mlmm.openmm_embedding import KJ_PER_MOL_PER_EV

    ethanol = _ethanol_in_waters(0)[:9]
    topology, positions = topology_from_atoms(ethanol, "ETOH")
    modeller = app.Modeller(topology, positions)
    box = openmm.Vec3(1.6, 1.6, 1.6) * unit.nanometer
    modeller.addSolvent(app.ForceField(*CHARMM), model="tip3p", boxSize=box)
    model = _model([1, 6, 8])
    mlmm = ml_mm_system(
        modeller.topology, modeller.positions, range(9), model, forcefield=CHARMM, cutoff_nm=0.7
    )
    (ml_force,) = [f for f in mlmm.system.getForces() if isinstance(f, openmm.PythonForce)]
    ml_force.setForceGroup(31)
    calc = NearsightCalculator(model)

    def ml_energy(context) -> tuple[float, np.ndarray]:
        state = context.getState(getEnergy=True, getPositions=True, groups={31})
        xyz = state.getPositions(asNumpy=True).value_in_unit(unit.angstrom)[:9]
        return state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) / KJ_PER_MOL_PER_EV, xyz

    simulation = mlmm.simulation(timestep_fs=0.5, threads=1, seed=1)
    e0, xyz0 = ml_energy(simulation.context)
    assert abs(e0 - _energy_forces(ethanol, calc)[0]) < 1e-6
    xyz = np.asarray(mlmm.positions.value_in_unit(unit.nanometer))
    xyz = (xyz - xyz[0] + np.array([1.59, 0.8, 0.8])) % 1.6  # ethanol split by the box face x = L
    assert np.ptp(xyz[:9, 0]) > 1.0
    simulation.context.setPositions(xyz)
    assert abs(ml_energy(simulation.context)[0] - e0) < 1e-6
    simulation.context.setPositions(mlmm.positions)
    simulation.step(10)
    e1, xyz1 = ml_energy(simulation.context)
    moved = ethanol.copy()
    moved.positions = xyz1
    assert np.abs(xyz1 - xyz0).max() > 1e-3 and abs(e1 - e0) > 1e-6
    assert abs(e1 - _energy_forces(moved, calc)[0]) < 1e-6


# ----------------------------------------------------------------- errors
def test_ml_atoms_out_of_range_or_repeated_are_named():
    model = _model([1, 8])
    for region, message in (
        ([3, 4, 40, -1], r"indices \[40, -1\] are out of range for the atoms of 12 atoms"),
        ([3, 4, 4], r"indices \[4\] are given more than once"),
        ([], "non-empty"),
    ):
        atoms = _cluster()
        atoms.calc = simple_qmmm(region, model, TIP3P())
        with pytest.raises(ValueError, match=message):
            atoms.get_potential_energy()
    atoms = _cluster()
    atoms.calc = eiqmmm([0, 1, 2, 12], _model([1, 8], {"coulomb": {"accuracy": 1e-6}}), TIP3P())
    with pytest.raises(ValueError, match=r"\[12\] are out of range"):
        atoms.get_potential_energy()
    atoms = _cluster()
    atoms.calc = eiqmmm([0, 1, 5], _model([1, 8], {"coulomb": {"accuracy": 1e-6}}), TIP3P())
    with pytest.raises(ValueError, match="whole waters in the order O, H, H"):
        atoms.get_potential_energy()


def test_ml_mm_system_names_bad_regions(openmm_system):
    import openmm
    from openmm import app, unit

    from nearsight.mlmm import ml_mm_system

    atoms, model, mlmm = openmm_system
    topology, positions = mlmm.topology, mlmm.positions
    for region, message in (
        ([0, 1, 99, -3], r"indices \[99, -3\] are out of range for the topology of 18 atoms"),
        ([0, 1, 2, 3, 4, 5, 6, 7, 8, 8], r"\[8\] are given more than once"),
        ([0, 1, 2, 3, 4, 5, 6, 7], r"1 covalent bond\(s\) leave it \(0 \(ETOH1:C1\)–8 \(ETOH1:H9\)\)"),
    ):
        with pytest.raises(ValueError, match=message):
            ml_mm_system(topology, positions, region, model, forcefield=CHARMM)
    with pytest.raises(
        ValueError, match=r"element\(s\) \['C'\] are not among the model's species \['H', 'O'\]"
    ):
        ml_mm_system(topology, positions, range(9), _model([1, 8]), forcefield=CHARMM)
    with pytest.raises(ValueError, match="expected 18 finite"):
        ml_mm_system(topology, positions[:17], range(9), model, forcefield=CHARMM)
    modeller = app.Modeller(topology, positions)
    modeller.topology.setPeriodicBoxVectors([openmm.Vec3(*row) for row in np.eye(3) * 1.5] * unit.nanometer)
    with pytest.raises(
        ValueError, match=r"cutoff_nm = 1.0 is more than half the periodic box \(\[1.5, 1.5, 1.5\] nm\)"
    ):
        ml_mm_system(modeller.topology, modeller.positions, range(9), model, forcefield=CHARMM)


def test_mlmm_command_solvates_a_molecule_and_runs(tmp_path):
    """``nearsight mlmm ethanol.xyz MODEL``: the molecule becomes the ML region in a TIP3P box, the run
        minimised with MM first writes a log with one row per report at a sane temperature (an unminimised box
    heats to > 1000 K in 50 steps) and a final PDB with every atom; bad selections are refused."""
    import argparse

    from ase.io import write

    from nearsight.cli.mlmm import add_mlmm_parser, parse_atom_list
    from nearsight.models.io import save_model

    parser = argparse.ArgumentParser()
    add_mlmm_parser(parser.add_subparsers())
    save_model(_model([1, 6, 8]), tmp_path / "model.pt")
    write(tmp_path / "ethanol.xyz", _ethanol_in_waters(0)[:9])
    out = tmp_path / "run"
    argv = ["mlmm", str(tmp_path / "ethanol.xyz"), str(tmp_path / "model.pt"), "--residue-name", "ETOH"]
    options = ["--solvate-padding-nm", "0.7", "--cutoff-nm", "0.6", "--steps", "6", "--report-every", "3"]
    args = parser.parse_args(
        [*argv, *options, "--minimize", "100", "--threads", "1", "--seed", "3", "--output-dir", str(out)]
    )
    assert args.func(args) == 0
    rows = (out / "log.csv").read_text().splitlines()
    assert len(rows) == 3 and rows[0].startswith('#"Step"') and "Temperature" in rows[0]
    temperatures = [float(row.split(",")[4]) for row in rows[1:]]
    assert all(100 < t < 600 for t in temperatures)  # a minimised start: no clash heats the box
    atoms = [
        line for line in (out / "final.pdb").read_text().splitlines() if line.startswith(("ATOM", "HETATM"))
    ]
    assert len(atoms) > 9 and (len(atoms) - 9) % 3 == 0
    assert parse_atom_list("0-3,7") == [0, 1, 2, 3, 7]
    with pytest.raises(ValueError, match="expected indices and ranges"):
        parse_atom_list("0-x")
    for selection, message in (
        (["--ml-atoms", "0-8", "--ml-residues", "ETOH"], r"either --ml-atoms or --ml-residues"),
        (["--ml-residues", "LIG"], r"--ml-residues 'LIG': no such residue .* \['ETOH', 'HOH'\]"),
    ):
        args = parser.parse_args([*argv, *options, *selection, "--output-dir", str(out)])
        with pytest.raises(ValueError, match=message):
            args.func(args)
