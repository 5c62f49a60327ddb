"""Elastic constants (nearsight.properties.elastic) against independent answers: EMT copper against
matscipy's fit called directly and against energy-strain second derivatives, Stillinger-Weber silicon
against its analytic (Born + non-affine) constants and the published values, EOS against C; a nearsight
model through NearsightCalculator; bad input; committees; the ``nearsight elastic`` command."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.emt import EMT
from ase.constraints import FixAtoms
from ase.optimize import BFGS
from ase.units import GPa
from matscipy.elasticity import fit_elastic_constants

from crystal_helpers import copper_model, silicon_model, stillinger_weber_si
from nearsight.calculator import NearsightCalculator
from nearsight.properties.elastic import committee_elastic_constants, elastic_constants
from nearsight.properties.eos import equation_of_state
from nearsight.properties.relax import relax

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def cu():
    """Conventional fcc Cu relaxed with EMT (stress < 1e-7 eV/Å³) and its elastic constants."""
    relaxed = relax(bulk("Cu", "fcc", a=3.6, cubic=True), EMT(), fmax=1e-6).atoms
    return relaxed, elastic_constants(relaxed, EMT())


def energy_curvature(
    atoms: Atoms, calc: Calculator, voigt: list[float], h: float = 2e-3, relax_positions: bool = False
) -> float:
    """d²(E/V0)/dt² at t = 0 (eV/Å³) for the cell and positions deformed by I + t ε, ε the symmetric
    strain of the Voigt vector ``voigt`` (engineering shears), the positions then relaxed at the fixed
    cell if ``relax_positions``; fourth-order central differences."""
    e1, e2, e3, e4, e5, e6 = voigt
    eps = np.array([[e1, e6 / 2, e5 / 2], [e6 / 2, e2, e4 / 2], [e5 / 2, e4 / 2, e3]])

    def energy(t: float) -> float:
        strained = atoms.copy()
        strained.set_cell(atoms.cell @ (np.eye(3) + t * eps).T, scale_atoms=True)
        if relax_positions:
            return relax(strained, calc, fmax=1e-6, cell=False).energy
        strained.calc = calc
        return strained.get_potential_energy()

    e = [energy(k * h) for k in (-2, -1, 0, 1, 2)]
    return (-e[0] + 16 * e[1] - 30 * e[2] + 16 * e[3] - e[4]) / (12 * h**2) / atoms.get_volume()


def test_emt_copper_equals_matscipy_and_energy_second_derivatives(cu):
    relaxed, ours = cu
    # matscipy called directly, with its own strained cells and relaxation
    direct = relaxed.copy()
    direct.calc = EMT()
    C, _ = fit_elastic_constants(
        direct, symmetry="triclinic", N_steps=5, delta=1e-3, optimizer=BFGS, fmax=1e-4, verbose=False
    )
    big = np.abs(C / GPa) > 1.0
    np.testing.assert_allclose(ours.C_GPa[big], C[big] / GPa, rtol=5e-3)
    np.testing.assert_allclose(ours.C_GPa[~big], 0.0, atol=0.05)
    # E/V0 = ½ Σ C_ij ε_i ε_j about a stress-free reference (fcc: no internal relaxation)
    c11 = energy_curvature(relaxed, EMT(), [1, 0, 0, 0, 0, 0]) / GPa
    c11_plus_c12 = energy_curvature(relaxed, EMT(), [1, 1, 0, 0, 0, 0]) / GPa / 2
    c44 = energy_curvature(relaxed, EMT(), [0, 0, 0, 1, 0, 0]) / GPa
    assert ours.cubic
    assert ours.C11_GPa == pytest.approx(c11, rel=5e-3)
    assert ours.C12_GPa == pytest.approx(c11_plus_c12 - c11, rel=5e-3)
    assert ours.C44_GPa == pytest.approx(c44, rel=5e-3)
    assert 150 < c11 < 200 and 100 < c11_plus_c12 - c11 < 130 and 80 < c44 < 100  # EMT Cu, not zero


def test_bulk_modulus_from_eos_equals_elastic_and_cubic_moduli(cu):
    relaxed, ours = cu
    eos = equation_of_state(relaxed, EMT())
    c11, c12, c44 = ours.C11_GPa, ours.C12_GPa, ours.C44_GPa
    assert eos.bulk_modulus_GPa == pytest.approx((c11 + 2 * c12) / 3, rel=1e-2)
    moduli = ours.moduli()  # the general formulas (C and S = C⁻¹) against the cubic closed forms
    assert moduli["K_voigt_GPa"] == pytest.approx((c11 + 2 * c12) / 3, rel=1e-9)
    assert moduli["K_reuss_GPa"] == pytest.approx((c11 + 2 * c12) / 3, rel=1e-6)
    assert moduli["G_voigt_GPa"] == pytest.approx((c11 - c12 + 3 * c44) / 5, rel=1e-6)
    g_reuss = 5 * (c11 - c12) * c44 / (4 * c44 + 3 * (c11 - c12))
    assert moduli["G_reuss_GPa"] == pytest.approx(g_reuss, rel=1e-6)
    assert ours.stable and all(ours.born_conditions().values())
    assert ours.asymmetry_GPa < 1e-6


def test_stillinger_weber_silicon_relaxed_and_clamped_ion():
    """Diamond Si: internal relaxation lowers C44 from 117.2 to 60.3 GPa (published SW values), and
    both equal matscipy's analytic constants (Born term + non-affine relaxation term)."""
    from matscipy.elasticity import full_3x3x3x3_to_Voigt_6x6, nonaffine_elastic_contribution

    sw = stillinger_weber_si()
    si = relax(bulk("Si", "diamond", a=5.43), sw, fmax=1e-6).atoms
    si.calc = sw
    born = sw.get_birch_coefficients(si)
    analytic = {False: born, True: born + nonaffine_elastic_contribution(si)}
    published = {False: (161.6, 81.6, 117.2), True: (161.6, 81.6, 60.3)}
    for relaxed_ion in (True, False):
        r = elastic_constants(si, sw, relax_internal=relaxed_ion, fmax=1e-5)
        exact = full_3x3x3x3_to_Voigt_6x6(analytic[relaxed_ion]) / GPa
        np.testing.assert_allclose(r.C_GPa, exact, rtol=5e-3, atol=0.05)
        assert (r.C11_GPa, r.C12_GPa, r.C44_GPa) == pytest.approx(published[relaxed_ion], rel=5e-3)
        assert r.relaxed_ion is relaxed_ion


def test_born_stability_flags_bcc_copper():
    """EMT bcc Cu is a stationary point but tetragonally unstable: C11 < C12."""
    bcc = relax(bulk("Cu", "bcc", a=2.87), EMT(), fmax=1e-6).atoms
    r = elastic_constants(bcc, EMT())
    assert r.cubic and not r.stable
    assert r.born_conditions() == {"C11 - C12 > 0": False, "C11 + 2 C12 > 0": True, "C44 > 0": True}
    assert r.eigenvalues_GPa[0] == pytest.approx(r.C11_GPa - r.C12_GPa, rel=1e-6)
    assert "Born stable: NO" in r.table()


class SkewedStress(EMT):
    """EMT with σ_xx scaled by 1.1: a stress that is not the strain derivative of any energy."""

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        if "stress" in self.results:
            self.results["stress"] = self.results["stress"] * np.array([1.1, 1, 1, 1, 1, 1])


def test_asymmetry_detects_a_nonconservative_stress(cu):
    relaxed, ours = cu
    skewed = elastic_constants(relaxed, SkewedStress())
    # D_12 = 1.1 C12 but D_21 = C12: half the difference is 0.05 C12
    assert skewed.asymmetry_GPa == pytest.approx(0.05 * ours.C12_GPa, rel=1e-3)
    assert ours.asymmetry_GPa < 1e-6


def test_nearsight_model_relaxed_and_clamped_ion():
    """A Δ-model (random BPNN on Stillinger-Weber Si, changing C by a few %) through NearsightCalculator:
    the relaxed cell is stress-free, C is symmetric within its fit error and equals the second
    derivatives of the model's energy, relaxed-ion and clamped-ion, and internal relaxation lowers C44."""
    calc = NearsightCalculator(silicon_model(seed=3), baseline=stillinger_weber_si())
    start = bulk("Si", "diamond", a=5.40)
    start.rattle(0.02, seed=1)
    result = relax(start, calc, fmax=1e-4)
    assert result.converged and result.max_stress < 2e-5 and result.max_force < 1e-4
    si = result.atoms
    relaxed_ion = elastic_constants(si, calc)
    clamped = elastic_constants(si, calc, relax_internal=False)
    for r in (relaxed_ion, clamped):
        assert r.asymmetry_GPa < r.C_err_GPa.max()
        assert r.cubic and r.stable
    c11 = energy_curvature(si, calc, [1, 0, 0, 0, 0, 0]) / GPa  # no internal strain for normal strains
    c12 = energy_curvature(si, calc, [1, 1, 0, 0, 0, 0]) / GPa / 2 - c11
    c44 = energy_curvature(si, calc, [0, 0, 0, 1, 0, 0], relax_positions=True) / GPa
    c44_clamped = energy_curvature(si, calc, [0, 0, 0, 1, 0, 0]) / GPa
    expected = {True: (c11, c12, c44), False: (c11, c12, c44_clamped)}
    for r in (relaxed_ion, clamped):
        assert (r.C11_GPa, r.C12_GPa, r.C44_GPa) == pytest.approx(expected[r.relaxed_ion], rel=5e-3)
    assert clamped.C44_GPa - relaxed_ion.C44_GPa > 40
    assert abs(c12 - 81.6) > 2.0  # the model's own term matters (Stillinger-Weber alone: 81.6 GPa)


def test_bad_input_gets_a_clear_message(cu):
    relaxed, _ = cu
    rattled = relaxed.copy()
    rattled.rattle(0.02, seed=2)
    with pytest.raises(ValueError, match=r"not relaxed for elastic constants: the force on atom .* relax"):
        elastic_constants(rattled, EMT())
    strained = relaxed.copy()
    strained.set_cell(relaxed.cell * 1.01, scale_atoms=True)
    with pytest.raises(ValueError, match=r"stress component is .* GPa.*relax the cell first"):
        elastic_constants(strained, EMT())
    with pytest.raises(ValueError, match="periodic in all three directions"):
        elastic_constants(Atoms("Cu2", positions=[[0, 0, 0], [0, 0, 2.3]]), EMT())
    fixed = relaxed.copy()
    fixed.set_constraint(FixAtoms([0]))
    with pytest.raises(ValueError, match="constraints"):
        elastic_constants(fixed, EMT())
    # relax_first makes the strained cell acceptable and gives the relaxed answer
    again = elastic_constants(strained, EMT(), relax_first=True)
    np.testing.assert_allclose(again.C_GPa, cu[1].C_GPa, atol=0.05)


def test_committee_spread():
    start = bulk("Cu", "fcc", a=3.6)
    different = committee_elastic_constants(start, [EMT(), EMT(asap_cutoff=True)], relax_first=True)
    same = committee_elastic_constants(start, [EMT(), EMT()], relax_first=True)
    c11 = [m.C11_GPa for m in different.members]
    assert different.mean("C11_GPa") == pytest.approx(np.mean(c11))
    assert different.std("C11_GPa") == pytest.approx(np.std(c11)) and different.std("C11_GPa") > 0.05
    assert np.all(np.asarray(same.std("C_GPa")) == 0.0) and same.std("K_hill_GPa") == 0.0


def cli(argv: list[str]) -> int:
    from nearsight.cli.crystal import add_crystal_parsers

    parser = argparse.ArgumentParser(prog="nearsight")
    add_crystal_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_elastic_command(tmp_path, capsys):
    from nearsight.models.io import save_model

    models = []
    for seed in (0, 1):
        model = copper_model(seed)
        models.append(str(save_model(model, tmp_path / f"cu{seed}.pt", metadata=model.metadata)))
    structure = tmp_path / "cu.extxyz"
    bulk("Cu", "fcc", a=3.62).write(structure)
    with pytest.raises(ValueError, match="not relaxed for elastic constants.*relax"):
        cli(["elastic", str(structure), models[0], "--output-dir", str(tmp_path)])
    from nearsight.cli.main import main  # the same error as the user sees it: one line, exit status 2

    assert main(["elastic", str(structure), models[0], "--output-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith(f"nearsight elastic: error: {structure} (frame 0) is not relaxed")
        and err.count("\n") == 1
    )
    assert cli(["elastic", str(structure), *models, "--relax", "--output-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "committee of 2: mean ± σ" in out and "C11_GPa = " in out
    report = json.loads((tmp_path / "elastic.json").read_text())
    assert report["models"] == models and len(report["members"]) == 2
    c11 = [m["C11_GPa"] for m in report["members"]]
    assert report["mean"]["C11_GPa"] == pytest.approx(np.mean(c11))
    assert report["std"]["C11_GPa"] == pytest.approx(np.std(c11)) and report["std"]["C11_GPa"] > 0
    assert report["mean"]["C11_GPa"] == pytest.approx(172.6, rel=0.1)  # EMT's plus a correction
    assert report["members"][0]["relaxed_ion"] is True
