"""Relaxation and the equation of state (nearsight.properties.relax, .eos) with EMT copper: the relaxed
cell is stress-free and at the EOS minimum, pressure and B, B' agree with finite differences of the
energy, internal positions are relaxed, bad input and non-convergence are reported, committees give
σ, and the ``nearsight relax`` / ``nearsight eos`` commands run with nearsight models."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.io import read
from ase.units import GPa

from crystal_helpers import copper_model
from nearsight.properties.eos import committee_equation_of_state, equation_of_state
from nearsight.properties.relax import committee_relax, relax

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def cu():
    """Conventional fcc Cu relaxed with EMT from a rattled, sheared, expanded cell."""
    start = bulk("Cu", "fcc", a=3.65, cubic=True)
    start.set_cell(start.cell @ np.array([[1, 0.01, 0], [0, 1, 0], [0, 0, 0.99]]), scale_atoms=True)
    start.rattle(0.02, seed=0)
    return relax(start, EMT(), fmax=1e-4)


def emt_energy(atoms: Atoms, volume: float) -> float:
    scaled = atoms.copy()
    scaled.set_cell(atoms.cell * (volume / atoms.get_volume()) ** (1 / 3), scale_atoms=True)
    scaled.calc = EMT()
    return scaled.get_potential_energy()


def test_relaxed_cell_is_stress_free_and_at_the_eos_minimum(cu):
    assert cu.converged and cu.cell_relaxed and 0 < cu.n_steps < 200
    assert cu.max_stress < 1e-5 and cu.max_force < 1e-4
    a, b, c, alpha, beta, gamma = cu.lattice_parameters
    assert b == pytest.approx(a, abs=1e-4) and c == pytest.approx(a, abs=1e-4)
    assert (alpha, beta, gamma) == pytest.approx((90, 90, 90), abs=0.01)
    assert cu.atoms.get_stress() == pytest.approx(cu.stress)  # the copy holds the final results
    eos = equation_of_state(cu.atoms, EMT())
    assert eos.a0 == pytest.approx(a, abs=1e-3)
    assert eos.v0 == pytest.approx(cu.volume, rel=1e-3) and eos.e0 == pytest.approx(cu.energy, abs=5e-4)


def test_relaxation_under_pressure_and_hydrostatic(cu):
    eos = equation_of_state(cu.atoms, EMT())
    squeezed = relax(cu.atoms, EMT(), fmax=1e-4, pressure_GPa=5.0)
    assert squeezed.converged and squeezed.max_stress < 1e-5  # σ = −p I
    assert squeezed.stress[:3] == pytest.approx([-5.0 * GPa] * 3, abs=1e-5)
    v, h = squeezed.volume, 1e-3 * squeezed.volume
    pressure = -(eos.energy(v + h) - eos.energy(v - h)) / (2 * h) / GPa  # P = −dE/dV of the fit
    assert pressure == pytest.approx(5.0, rel=1e-2)
    tetragonal = cu.atoms.copy()
    tetragonal.set_cell(cu.atoms.cell @ np.diag([1.02, 1.02, 0.97]), scale_atoms=True)
    kept = relax(tetragonal, EMT(), fmax=1e-4, hydrostatic=True)
    scale = (kept.volume / tetragonal.get_volume()) ** (1 / 3)
    np.testing.assert_allclose(kept.atoms.cell[:], tetragonal.cell[:] * scale, atol=1e-8)  # shape kept
    assert abs(scale - 1) > 1e-3
    assert abs(np.trace(kept.atoms.get_stress(voigt=False))) / 3 < 1e-5


def test_bulk_modulus_and_derivative_equal_finite_differences(cu):
    """B = V d²E/dV² and B' = dB/dP = (B(V−) − B(V+))/(P(V−) − P(V+)) from EMT energies directly."""
    atoms, v0 = cu.atoms, cu.volume

    def bulk_modulus(v: float, h: float = 1e-3) -> float:
        dv = h * v
        return v * (emt_energy(atoms, v + dv) - 2 * emt_energy(atoms, v) + emt_energy(atoms, v - dv)) / dv**2

    def pressure(v: float, h: float = 1e-3) -> float:
        return -(emt_energy(atoms, v + h * v) - emt_energy(atoms, v - h * v)) / (2 * h * v)

    lo, hi = 0.99 * v0, 1.01 * v0
    b_prime = (bulk_modulus(lo) - bulk_modulus(hi)) / (pressure(lo) - pressure(hi))
    for form in ("birchmurnaghan", "vinet"):
        eos = equation_of_state(atoms, EMT(), strain=0.01, n_points=7, eos=form)
        assert eos.bulk_modulus_GPa == pytest.approx(bulk_modulus(v0) / GPa, rel=2e-3)
        assert eos.bulk_modulus_derivative == pytest.approx(b_prime, rel=1e-2)
    assert 3.5 < b_prime < 5.0


def test_eos_relaxes_internal_positions(cu):
    clean = equation_of_state(cu.atoms, EMT())
    rattled = cu.atoms.copy()
    rattled.rattle(0.03, seed=4)
    relaxed = equation_of_state(rattled, EMT())
    clamped = equation_of_state(rattled, EMT(), relax_internal=False)
    assert relaxed.a0 == pytest.approx(clean.a0, abs=1e-4)
    np.testing.assert_allclose(relaxed.energies, clean.energies, atol=1e-6)
    assert np.all(clamped.energies > clean.energies + 1e-3)


def test_non_convergence_is_reported(cu, tmp_path):
    start = cu.atoms.copy()
    start.set_cell(start.cell * 1.03, scale_atoms=True)
    result = relax(start, EMT(), fmax=1e-4, steps=2, trajectory=str(tmp_path / "r.traj"))
    assert not result.converged and result.n_steps == 2
    frames = read(tmp_path / "r.traj", index=":")
    assert len(frames) == 3 and frames[-1].cell.cellpar() == pytest.approx(result.lattice_parameters)
    with pytest.raises(ValueError, match=r"did not converge in 2 steps to fmax = 0.0001 eV/Å"):
        result.require_converged()


def test_bad_input():
    cluster = Atoms("Cu3", positions=[[0, 0, 0], [2.4, 0, 0], [1.2, 2.2, 0]])
    result = relax(cluster, EMT(), fmax=1e-3, cell=False)
    assert result.converged and result.max_force < 1e-3 and result.stress is None
    for call in (lambda: relax(cluster, EMT()), lambda: equation_of_state(cluster, EMT())):
        with pytest.raises(ValueError, match="periodic in all three directions"):
            call()
    with pytest.raises(ValueError, match="need cell=True"):
        relax(cluster, EMT(), cell=False, pressure_GPa=1.0)
    squeezed = bulk("Cu", "fcc", a=3.3)
    with pytest.raises(
        ValueError, match=r"no minimum in the sampled range: the largest volume.*relax it first"
    ):
        equation_of_state(squeezed, EMT())
    with pytest.raises(ValueError, match="at least 5 volumes"):
        equation_of_state(bulk("Cu"), EMT(), n_points=4)
    with pytest.raises(ValueError, match="must be one of birchmurnaghan"):
        equation_of_state(bulk("Cu"), EMT(), eos="sj")


def test_committee_spread():
    start = bulk("Cu", "fcc", a=3.6)
    different = committee_equation_of_state(start, [EMT(), EMT(asap_cutoff=True)])
    same = committee_equation_of_state(start, [EMT(), EMT()])
    b = [m.bulk_modulus_GPa for m in different.members]
    assert different.mean("bulk_modulus_GPa") == pytest.approx(np.mean(b))
    assert different.std("bulk_modulus_GPa") == pytest.approx(np.std(b)) and np.std(b) > 0.1
    assert different.std("a0") > 1e-4
    assert same.std("bulk_modulus_GPa") == 0.0 and same.std("a0") == 0.0
    relaxed = committee_relax(start, [EMT(), EMT(asap_cutoff=True)], fmax=1e-4)
    assert relaxed.std("volume") > 1e-3 and all(m.converged for m in relaxed.members)


def cli(argv: list[str]) -> int:
    from nearsight.cli.crystal import add_crystal_parsers

    parser = argparse.ArgumentParser(prog="nearsight")
    add_crystal_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_relax_and_eos_commands(tmp_path, capsys):
    from nearsight.models.io import save_model

    models = []
    for seed in (0, 1):
        model = copper_model(seed)
        models.append(str(save_model(model, tmp_path / f"cu{seed}.pt", metadata=model.metadata)))
    structure = tmp_path / "cu.extxyz"
    bulk("Cu", "fcc", a=3.65).write(structure)
    output = tmp_path / "relaxed.extxyz"
    assert cli(["relax", str(structure), *models, "--fmax", "1e-4", "--output", str(output)]) == 0
    assert "committee: volume = " in capsys.readouterr().out
    frames = read(output, index=":")
    assert len(frames) == 2 and frames[0].get_volume() != pytest.approx(frames[1].get_volume(), rel=1e-4)
    assert all(np.abs(f.get_stress()).max() < 1e-4 for f in frames)
    with pytest.raises(ValueError, match=r"did not converge in 1 steps to fmax = 0.0001 eV/Å.*frame 0 of"):
        cli(["relax", str(structure), models[0], "--fmax", "1e-4", "--steps", "1", "--output", str(output)])
    assert len(read(output, index=":")) == 1  # the last structure is kept

    assert cli(["eos", str(structure), *models, "--strain", "0.05", "--output-dir", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "eos.json").read_text())
    assert report["models"] == models and len(report["members"]) == 2
    b = [m["bulk_modulus_GPa"] for m in report["members"]]
    assert report["mean"]["bulk_modulus_GPa"] == pytest.approx(np.mean(b))
    assert report["std"]["bulk_modulus_GPa"] == pytest.approx(np.std(b)) and np.std(b) > 0
    assert report["mean"]["bulk_modulus_GPa"] == pytest.approx(134.0, rel=0.15)  # EMT's plus a correction
    assert (tmp_path / "eos.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
