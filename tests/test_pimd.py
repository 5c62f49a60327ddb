"""Path-integral MD with i-PI (issue: sampling): nearsight or any ASE calculator as i-PI's in-process
force provider, the centroid-virial kinetic energy against the exact quantum harmonic oscillator,
unit pass-through, g(r), the errors for estimators a model cannot give, resuming, the CLI."""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import threading
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, molecule
from ase.calculators.calculator import Calculator, all_changes
from ase.io import read, write
from scipy.spatial.transform import Rotation

from aoti_models import water_model
from nearsight import NearsightCalculator
from nearsight.cli.pimd import add_pimd_parser
from nearsight.models.io import save_model
from nearsight.simulate.ipi_driver import IPIDriver
from nearsight.simulate.pimd import (
    IPI_DEFAULT_TOTAL_STEPS,
    _restart_steps,
    block_average,
    latest_restart,
    read_pimd,
    run_pimd,
)
from nearsight.simulate.rdf import radial_distribution
from structures import water_box

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
    pytest.mark.filterwarnings("ignore:currentThread:DeprecationWarning"),  # i-PI 3.3.1's softexit
]

# our own constants (CODATA 2018), not ASE's or i-PI's, so that a unit slip in either shows
HBAR_EV_S, KB_EV = 6.582119569e-16, 8.617333262e-5  # ħ (eV s), k_B (eV/K)
E_CHARGE, AMU = 1.602176634e-19, 1.66053906660e-27  # C, kg
HARTREE_EV, BOHR_A = 27.211386245988, 0.529177210903


class Harmonic(Calculator):
    """E = ½ k Σ_i |r_i − r0_i|² (eV, k in eV/Å²): independent 3-D oscillators, no stress."""

    implemented_properties = ["energy", "forces"]

    def __init__(self, k: float, r0: np.ndarray, **kwargs) -> None:
        super().__init__(**kwargs)
        self.k, self.r0 = float(k), np.array(r0, dtype=np.float64)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        d = self.atoms.positions - self.r0
        self.results = {"energy": 0.5 * self.k * float((d**2).sum()), "forces": -self.k * d}


def oscillators(
    n: int, temperature_K: float, hw_over_kt: float, seed: int = 0
) -> tuple[Atoms, Harmonic, float]:
    """``n`` H atoms on independent springs with ħω = hw_over_kt·k_B T; (atoms, calculator, ħω eV)."""
    hw = hw_over_kt * KB_EV * temperature_K
    omega = hw / HBAR_EV_S  # rad/s
    mass = 1.008
    k = mass * AMU * omega**2 * 1e-20 / E_CHARGE  # J/m² -> eV/Å²
    r0 = np.random.default_rng(seed).uniform(0.0, 40.0, (n, 3))
    atoms = Atoms(f"H{n}", positions=r0)
    atoms.set_masses([mass] * n)
    return atoms, Harmonic(k, r0), hw


class ChargedHarmonic(Harmonic):
    """The oscillators with fixed charges ±0.5 e: also a dipole μ = Σ q_i r_i (e·Å)."""

    implemented_properties = ["energy", "forces", "dipole"]

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        charges = np.where(np.arange(len(self.atoms)) % 2 == 0, 0.5, -0.5)
        self.results["dipole"] = charges @ self.atoms.positions


def exact_kinetic(hw: float, temperature_K: float) -> float:
    """Quantum kinetic energy of a 3-D oscillator: (3ħω/4) coth(ħω / 2kT), eV."""
    return 0.75 * hw / np.tanh(hw / (2 * KB_EV * temperature_K))


def ipi_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name == "softexit" or t.name.startswith("poll_")]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("pimd_model") / "water.pt"
    save_model(water_model("acsf"), path)
    return path


def test_quantum_kinetic_energy_of_harmonic_oscillator(tmp_path):
    """ħω/kT = 3: the centroid-virial K of 24-bead PIMD is (3ħω/4)coth(ħω/2kT) within 1 % (it is 1.66×
    the classical 3kT/2), with a block-average standard error far below the tolerance."""
    temperature, n = 300.0, 128
    atoms, calc, hw = oscillators(n, temperature, 3.0)
    handler = signal.getsignal(signal.SIGINT)
    cwd = os.getcwd()
    result = run_pimd(
        atoms, calc, n_beads=24, temperature_K=temperature, steps=1000, timestep_fs=1.0, tau_fs=10.0,
        output_dir=tmp_path / "run", fixcom=False, trajectory="none", seed=1, stride=2,
    )  # fmt: skip
    exact, classical = exact_kinetic(hw, temperature), 1.5 * KB_EV * temperature
    mean, sem = result.kinetic_energy_per_atom(discard=0.1)["H"]
    print(f"K_cv {mean:.6f} ± {sem:.6f} eV, exact {exact:.6f}, classical {classical:.6f}")
    assert result.steps_run == 1000 and result.step[-1] == 1000
    assert sem < 0.003 * exact
    assert abs(mean - exact) < 0.01 * exact
    assert mean > 1.6 * classical
    # nothing of i-PI is left behind: no thread, the signal handlers and working directory as they were
    assert ipi_threads() == [] and signal.getsignal(signal.SIGINT) is handler and os.getcwd() == cwd


def test_classical_limit_with_one_bead(tmp_path):
    """One bead: classical equipartition, ⟨V⟩ = ⟨K⟩ = 3kT/2 per oscillator within 1 % (the potential
    tests the force units: forces c× too large would sample ⟨V⟩ = 3kT/2c)."""
    temperature, n = 300.0, 1000
    atoms, calc, hw = oscillators(n, temperature, 3.0, seed=2)
    result = run_pimd(
        atoms, calc, n_beads=1, temperature_K=temperature, steps=3000, timestep_fs=0.5, tau_fs=5.0,
        output_dir=tmp_path / "run", fixcom=False, trajectory="none", seed=2, stride=5,
    )  # fmt: skip
    classical = 1.5 * KB_EV * temperature
    for name in ("potential", "kinetic_md"):
        mean, sem = (v / n for v in result.estimate(name, discard=0.1))
        print(f"{name} {mean:.6f} ± {sem:.6f} eV per atom, 3kT/2 = {classical:.6f}")
        assert sem < 0.004 * classical
        assert abs(mean - classical) < 0.01 * classical
    k_cv, _ = result.kinetic_energy_per_atom(discard=0.1)["H"]
    assert abs(k_cv - classical) < 1e-5 * classical  # one bead: K_cv = 3kT/2 (i-PI's k_B)
    assert abs(k_cv - exact_kinetic(hw, temperature)) > 0.3 * classical


def test_energy_forces_virial_pass_through(tmp_path, model_file):
    """The first i-PI step reports the model's energy (eV), force on atom 0 (eV/Å) and virial (-σ,
    eV/Å³) of the start structure, and the driver returns hartree, hartree/bohr and bohr inputs."""
    atoms = water_box(2, seed=3)
    result = run_pimd(
        atoms, model_file, n_beads=2, temperature_K=300.0, steps=2, timestep_fs=0.25, output_dir=tmp_path,
        estimators=("atom_f(atom=0;bead=0)", "virial_cv"), trajectory="beads", trajectory_stride=1,
    )  # fmt: skip
    start = read(tmp_path / "init.extxyz")  # what i-PI started from: the structure to 1e-8 Å
    assert np.abs(start.positions - atoms.positions).max() < 1e-7
    start.calc = NearsightCalculator(model_file)
    energy, forces, stress = start.get_potential_energy(), start.get_forces(), start.get_stress(voigt=False)
    assert result.properties["potential"][0] == pytest.approx(energy, rel=1e-8)
    np.testing.assert_allclose(result.properties["atom_f(atom=0;bead=0)"][0], forces[0], rtol=1e-6, atol=1e-8)
    xx, yy, zz, xy, xz, yz = result.properties["virial_cv"][0]
    virial = np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])
    np.testing.assert_allclose(virial, -stress, rtol=1e-6, atol=1e-11)
    frames = result.trajectory()
    assert len(frames) == 2 * 3 and all(f.pbc.all() for f in frames)
    np.testing.assert_allclose(frames[0].positions, atoms.positions, atol=1e-6)  # step 0, bead 0
    np.testing.assert_allclose(frames[0].cell.array, atoms.cell.array, atol=1e-6)
    # the driver alone (loading the model file it names), fed bohr, answers in hartree and hartree/bohr
    driver = IPIDriver(str(tmp_path / "nearsight_driver.json"))
    pot, f, vir, extras = driver(start.cell.array.T / BOHR_A, start.positions / BOHR_A)
    assert pot == pytest.approx(energy / HARTREE_EV, rel=1e-6)
    # (CODATA's bohr and i-PI's differ by 1e-8: tolerances relative to the largest component)
    f_au, vir_au = forces / HARTREE_EV * BOHR_A, -stress * start.get_volume() / HARTREE_EV
    np.testing.assert_allclose(f, f_au, rtol=0, atol=1e-6 * np.abs(f_au).max())
    np.testing.assert_allclose(vir, vir_au, rtol=0, atol=1e-6 * np.abs(vir_au).max())


def test_cell_in_any_orientation(tmp_path, model_file):
    """A cell that is not lower-triangular is rotated rigidly into i-PI's form: same energy; a
    left-handed cell is refused."""
    atoms = water_box(2, seed=5)
    rotation = Rotation.from_euler("xyz", [20, -35, 50], degrees=True).as_matrix()
    turned = Atoms(
        atoms.numbers, positions=atoms.positions @ rotation.T, cell=atoms.cell.array @ rotation.T, pbc=True
    )
    atoms.calc = NearsightCalculator(model_file)
    result = run_pimd(turned, model_file, n_beads=1, temperature_K=300.0, steps=1, timestep_fs=0.25,
                      output_dir=tmp_path / "a", trajectory_stride=1)  # fmt: skip
    assert result.potential[0] == pytest.approx(atoms.get_potential_energy(), rel=1e-8)
    cell = result.trajectory()[0].cell.array
    assert np.abs(cell[np.triu_indices(3, 1)]).max() < 1e-6 and cell.diagonal().min() > 0
    left = atoms.copy()
    left.set_cell(atoms.cell.array[[1, 0, 2]], scale_atoms=False)
    with pytest.raises(ValueError, match="left-handed"):
        run_pimd(left, model_file, n_beads=1, temperature_K=300.0, steps=1, timestep_fs=0.25,
                 output_dir=tmp_path / "b")  # fmt: skip


def test_molecule_without_stress_gets_zero_virial(tmp_path):
    """A stress-less calculator (i-PI 3.3.1's ASE driver crashes here) gives i-PI a 3×3 zero virial."""
    atoms, calc, _ = oscillators(3, 300.0, 3.0)
    result = run_pimd(
        atoms, calc, n_beads=4, temperature_K=300.0, steps=3, timestep_fs=0.5, output_dir=tmp_path,
        trajectory="centroid", trajectory_stride=1,
    )  # fmt: skip
    driver = IPIDriver(str(tmp_path / "nearsight_driver.json"))
    driver.bind(calc)
    pot, f, vir, extras = driver(np.eye(3) * 100.0, (atoms.positions + 0.1) / BOHR_A)
    assert vir.shape == (3, 3) and not vir.any() and extras == ""
    assert pot == pytest.approx(0.5 * calc.k * 3 * 3 * 0.01 / HARTREE_EV, rel=1e-4)  # (bohr: CODATA vs i-PI)
    frames = result.trajectory()
    assert len(frames) == 4 and not frames[0].pbc.any() and frames[0].cell.volume == 0


def test_dipole_of_the_model_per_bead(tmp_path):
    """``estimators=("dipole",)``: the calculator's dipole of every bead, as i-PI extras, read back."""
    atoms, harmonic, _ = oscillators(4, 300.0, 3.0)
    calc = ChargedHarmonic(harmonic.k, harmonic.r0)
    result = run_pimd(
        atoms, calc, n_beads=3, temperature_K=300.0, steps=4, timestep_fs=0.5, output_dir=tmp_path,
        estimators=("dipole",), stride=2, trajectory="none",
    )  # fmt: skip
    dipole = result.extras["dipole"]
    assert dipole.shape == (3, 3, 3)  # steps 0, 2, 4; 3 beads; xyz
    atoms.calc = calc
    np.testing.assert_allclose(dipole[0], np.tile(atoms.get_dipole_moment(), (3, 1)), atol=1e-6)
    assert np.abs(dipole[-1, 0] - dipole[-1, 1]).max() > 1e-4  # the beads have spread apart


def test_radial_distribution():
    """Ideal gas: g(r) = 1 within noise at every r (also beyond half the cell); fcc: first peak at a/√2."""
    rng = np.random.default_rng(0)
    cell = [[14.0, 0, 0], [3.0, 13.0, 0], [1.0, 2.0, 12.0]]
    frames = [Atoms("Ar150", cell=cell, pbc=True) for _ in range(10)]
    for f in frames:
        f.set_scaled_positions(rng.uniform(0, 1, (150, 3)))
    r, g = radial_distribution(frames, ("Ar", "Ar"), r_max=9.0, bins=18)
    assert np.abs(g[3:] - 1).max() < 0.08 and abs(g[3:].mean() - 1) < 0.01
    mixed = [Atoms("O40H80", cell=cell, pbc=True) for _ in range(10)]
    for f in mixed:
        f.set_scaled_positions(rng.uniform(0, 1, (120, 3)))
    r, g = radial_distribution(mixed, ("O", "H"), r_max=9.0, bins=9)
    assert np.abs(g[2:] - 1).max() < 0.08
    a = 3.6
    r, g = radial_distribution(
        bulk("Cu", "fcc", a=a, cubic=True).repeat(2), ("Cu", "Cu"), r_max=4.0, bins=400
    )
    assert r[np.argmax(g)] == pytest.approx(a / np.sqrt(2), abs=0.01)
    assert not g[r < a / np.sqrt(2) - 0.02].any()
    with pytest.raises(ValueError, match="periodic"):
        radial_distribution(molecule("H2O"), ("O", "H"))


def test_estimators_the_model_lacks_are_named(tmp_path, model_file):
    water = molecule("H2O")
    with pytest.raises(ValueError, match=r"'pressure_cv'.*periodic.*water\.pt"):
        run_pimd(water, model_file, n_beads=2, temperature_K=300, steps=5, timestep_fs=0.5,
                 output_dir=tmp_path / "a", estimators=("pressure_cv",))  # fmt: skip
    with pytest.raises(ValueError, match=r"'dipole'.*water\.pt"):
        run_pimd(water, model_file, n_beads=2, temperature_K=300, steps=5, timestep_fs=0.5,
                 output_dir=tmp_path / "b", estimators=("dipole",))  # fmt: skip
    box, calc, _ = oscillators(4, 300.0, 3.0)
    box.cell, box.pbc = [40.0, 40.0, 40.0], True
    with pytest.raises(ValueError, match=r"'stress_cv'.*stress.*Harmonic"):
        run_pimd(box, calc, n_beads=2, temperature_K=300, steps=5, timestep_fs=0.5,
                 output_dir=tmp_path / "c", estimators=("stress_cv",))  # fmt: skip
    with pytest.raises(ValueError, match=r"'kinetic_cvv'.*not an i-PI property"):
        run_pimd(water, model_file, n_beads=2, temperature_K=300, steps=5, timestep_fs=0.5,
                 output_dir=tmp_path / "d", estimators=("kinetic_cvv",))  # fmt: skip
    assert not (tmp_path / "a" / "input.xml").exists()


def test_resume_continues_from_restart(tmp_path):
    atoms, calc, _ = oscillators(8, 300.0, 3.0)
    options = dict(
        n_beads=4, temperature_K=300.0, timestep_fs=0.5, output_dir=tmp_path, seed=5, trajectory_stride=5
    )
    first = run_pimd(atoms, calc, steps=20, **options)
    assert first.steps_run == 20 and list(first.step) == list(range(21))
    with pytest.raises(ValueError, match="holds a PIMD run"):
        run_pimd(atoms, calc, steps=20, **options)
    resumed = run_pimd(atoms, calc, steps=35, resume=True, **options)
    assert resumed.steps_run == 15  # only the new steps ran
    assert list(resumed.step) == list(range(36))
    np.testing.assert_array_equal(resumed.potential[:21], first.potential)
    assert "<step>35</step>" in (tmp_path / "RESTART").read_text()
    assert len(resumed.trajectory(bead=0)) == 8  # steps 0, 5, ..., 35
    # the same 35 steps in one go give the same trajectory: RESTART carries the full state
    straight = run_pimd(atoms, calc, steps=35, **{**options, "output_dir": tmp_path / "straight"})
    np.testing.assert_allclose(straight.potential, resumed.potential, rtol=1e-7)
    assert run_pimd(atoms, calc, steps=30, resume=True, **options).steps_run == 0
    with pytest.raises(ValueError, match="n_beads=4, not 8"):
        run_pimd(atoms, calc, steps=50, resume=True, **{**options, "n_beads": 8})
    with pytest.raises(ValueError, match="no i-PI RESTART"):
        run_pimd(atoms, calc, steps=30, resume=True, **{**options, "output_dir": tmp_path / "none"})
    assert ipi_threads() == []


def test_resume_where_ipi_left_out_its_default_total_steps(tmp_path):
    """i-PI writes no <total_steps> into RESTART when it is its default (1000): a finished 1000-step run
    must not be taken for an incomplete one (resumed from an older checkpoint), and a resume must add
    the element rather than run to the default."""
    atoms, calc, _ = oscillators(4, 300.0, 3.0)
    options = dict(n_beads=2, temperature_K=300.0, timestep_fs=0.5, output_dir=tmp_path, seed=1)
    run_pimd(atoms, calc, steps=10, **options)
    restart = tmp_path / "RESTART"
    text = restart.read_text()
    assert "<total_steps>" in text
    restart.write_text(re.sub(r"\s*<total_steps>\s*\d+\s*</total_steps>", "", text))
    assert _restart_steps(restart) == (10, IPI_DEFAULT_TOTAL_STEPS)
    assert latest_restart(tmp_path) == (restart, 10)
    resumed = run_pimd(atoms, calc, steps=12, resume=True, **options)
    assert resumed.steps_run == 2 and "<step>12</step>" in restart.read_text()
    assert ipi_threads() == []


def test_block_average():
    rng = np.random.default_rng(0)
    mean, sem = block_average(rng.normal(2.0, 1.0, 4000), n_blocks=20)
    assert abs(mean - 2.0) < 4 * sem and 0.5 * 1 / np.sqrt(4000) < sem < 2 / np.sqrt(4000)
    with pytest.raises(ValueError, match="n_blocks"):
        block_average(np.ones(5), n_blocks=20)


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="nearsight")
    add_pimd_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_writes_input_and_runs(tmp_path, model_file, capsys):
    water = molecule("H2O")
    structure = tmp_path / "water.xyz"
    write(structure, water)
    out = tmp_path / "pimd"
    base = [str(structure), str(model_file), "--beads", "8", "--temperature-K", "250", "--timestep-fs", "0.25",
            "--output-dir", str(out)]  # fmt: skip
    assert _cli(["pimd", *base, "--steps", "40", "--write-input-only", "--tau-fs", "50"]) == 0
    root = ET.parse(out / "input.xml").getroot()
    assert root.find("system/initialize").get("nbeads") == "8"
    assert float(root.find("system/ensemble/temperature").text) == 250.0
    assert float(root.find("system/motion/dynamics/timestep").text) == 0.25
    thermostat = root.find("system/motion/dynamics/thermostat")
    assert thermostat.get("mode") == "pile_l" and float(thermostat.find("tau").text) == 50.0
    props = root.find("output/properties").text
    assert "kinetic_cv{electronvolt}(H)" in props and "kinetic_cv{electronvolt}(O)" in props
    assert root.find("ffdirect/pes").text.strip() == "custom"
    config = json.loads((out / "nearsight_driver.json").read_text())
    assert config["model"] == str(model_file.resolve()) and config["virial"] is False
    assert not (out / "simulation.out").exists()
    capsys.readouterr()

    box = tmp_path / "box.extxyz"
    write(box, water_box(2, seed=4))
    run = [str(box), str(model_file), "--beads", "4", "--steps", "30", "--timestep-fs", "0.25", "--blocks", "4",
           "--output-dir", str(out), "--overwrite", "--rdf", "O-H", "--rdf-r-max", "4", "--trajectory-stride", "5"]  # fmt: skip
    assert _cli(["pimd", *run]) == 0
    text = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    for symbol in ("H", "O"):
        assert f"  {symbol}  " in text
        assert summary["kinetic_cv_per_atom_eV"][symbol]["mean"] > 0
    r, g = np.loadtxt(out / "rdf_O-H.txt").T
    assert 0.8 < r[np.argmax(g)] < 1.2  # the O-H bond
    assert read_pimd(out).step[-1] == 30
    with pytest.raises(ValueError, match=r"'pressure_md'.*water\.pt"):
        _cli(["pimd", *base, "--steps", "40", "--overwrite", "--estimator", "pressure_md"])
