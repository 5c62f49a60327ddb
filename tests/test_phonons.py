"""Phonons (nearsight.properties.phonons): EMT copper against phonopy driven directly, the band path's
q-points, the acoustic sum rule, thermal properties, bad input, committees and ``nearsight phonons``."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.build import bulk, molecule
from ase.calculators.emt import EMT
from scipy.optimize import minimize_scalar
from scipy.spatial.transform import Rotation

from nearsight import keys
from nearsight.cli.phonons import add_phonons_parser
from nearsight.data.neighbours import atoms_to_graph
from nearsight.descriptors.acsf import default_acsf_params
from nearsight.models.bpnn import BehlerParrinello
from nearsight.models.forcefield import edge_vectors
from nearsight.models.io import save_model
from nearsight.properties.common import as_calculators
from nearsight.properties.phonons import THZ_TO_CM1, committee_phonons, compute_phonons

pytestmark = pytest.mark.usefixtures("one_thread")

H_EV_PER_THZ = 1e12 * units._hplanck / units._e  # Planck's constant in eV/THz


# ------------------------------------------------------------------ structures and models
@pytest.fixture(scope="module")
def cu() -> Atoms:
    """fcc Cu at the EMT energy minimum (E(a) minimised; the forces vanish at any a by symmetry)."""

    def energy(a: float) -> float:
        atoms = bulk("Cu", "fcc", a=a)
        atoms.calc = EMT()
        return atoms.get_potential_energy()

    a = minimize_scalar(energy, bracket=(3.5, 3.6, 3.7), tol=1e-8).x
    assert 3.55 < a < 3.63
    return bulk("Cu", "fcc", a=a)


@pytest.fixture(scope="module")
def cu_result(cu):
    return compute_phonons(cu, EMT(), supercell=4)


def si_model(seed: int) -> BehlerParrinello:
    """A random float64 ACSF model of Si (r_c = 3 Å, interaction range 6 Å), standardised on rattled cells;
    its energy scale (10 eV) gives force constants of a few eV/Å², like real Si."""
    torch.manual_seed(seed)
    desc = dict(r_cut=3.0, r_cut_angular=3.0, **default_acsf_params(3.0, n_radial=4, r_cut_angular=3.0))
    model = BehlerParrinello([14], desc, hidden=(16, 16)).double()
    feats = []
    for k in range(3):
        atoms = bulk("Si", "diamond", a=5.43).repeat(2)
        atoms.rattle(0.1, seed=k)
        g = atoms_to_graph(atoms, model.cutoff, torch.float64)
        g[keys.EDGE_VECTORS] = edge_vectors(
            g[keys.POSITIONS], g[keys.CELL], g[keys.BATCH], g[keys.EDGE_INDEX], g[keys.CELL_SHIFTS]
        )
        with torch.no_grad():
            feats.append(model.features(g))
    f = torch.cat(feats)
    mean, std = f.mean(0), f.std(0)
    model.set_statistics(mean, torch.maximum(std, 0.2 * mean.abs() + 1e-2), {14: -5.0}, 10.0)
    return model.eval()


@pytest.fixture(scope="module")
def si_models():
    return si_model(2), si_model(1)  # seeds whose optical modes at Γ are real (random models may be unstable)


@pytest.fixture(scope="module")
def si() -> Atoms:
    """Diamond Si: every atom is a site of symmetry -43m, so the forces vanish for any model."""
    return bulk("Si", "diamond", a=5.43)


def phonopy_directly(atoms: Atoms, calc, supercell: int):
    """The reference: phonopy's API and the calculator, nothing of nearsight."""
    from phonopy import Phonopy
    from phonopy.structure.atoms import PhonopyAtoms

    cell = PhonopyAtoms(
        symbols=atoms.get_chemical_symbols(),
        cell=atoms.cell.array,
        scaled_positions=atoms.get_scaled_positions(),
    )
    phonon = Phonopy(cell, supercell_matrix=np.eye(3, dtype=int) * supercell, primitive_matrix="auto")
    phonon.generate_displacements(distance=0.01)
    forces = []
    for s in phonon.supercells_with_displacements:
        displaced = Atoms(s.symbols, cell=s.cell, scaled_positions=s.scaled_positions, pbc=True)
        displaced.calc = calc
        forces.append(displaced.get_forces())
    phonon.forces = np.array(forces)
    phonon.produce_force_constants()
    return phonon


# ------------------------------------------------------------------ EMT copper
def test_emt_copper_matches_phonopy_called_directly(cu, cu_result):
    a = cu.cell.lengths()[0] * np.sqrt(2)  # conventional lattice constant
    points = {"Gamma": [0, 0, 0], "X": [0, 0, 1 / a], "L": [0.5 / a, 0.5 / a, 0.5 / a]}  # Cartesian, no 2π
    q_cart = np.array(list(points.values()))
    ours = cu_result.frequencies_at(q_cart, cartesian=True)
    ref = phonopy_directly(cu, EMT(), 4)
    reduced = q_cart @ np.asarray(ref.primitive.cell).T
    theirs = np.array(ref.run_qpoints(reduced).frequencies)
    assert np.all(np.abs(ours[0]) < 0.05) and np.all(np.abs(theirs[0]) < 0.05)  # Γ: acoustic only
    np.testing.assert_allclose(ours[1:], theirs[1:], rtol=5e-3)
    # X and L: two degenerate transverse branches below a longitudinal one, at EMT's 5-8 THz
    for freqs in ours[1:]:
        assert abs(freqs[0] - freqs[1]) < 1e-6 and freqs[2] > freqs[1] + 1.0 and 3.0 < freqs[0] < 9.0
    bands = cu_result.band_structure(npoints=11)
    np.testing.assert_allclose(bands.at("X"), ours[1], atol=1e-8)
    np.testing.assert_allclose(bands.at("L"), ours[2], atol=1e-8)
    np.testing.assert_allclose(
        cu_result.frequencies_cm1_at(q_cart[1:], cartesian=True), ours[1:] * THZ_TO_CM1
    )
    symmetrized = compute_phonons(cu, EMT(), supercell=4, symmetrize=True)  # Φ already obeys the sum rule
    np.testing.assert_allclose(symmetrized.frequencies_at(q_cart[1:], cartesian=True), ours[1:], rtol=1e-6)


def test_band_path_is_mapped_into_the_cell_phonopy_uses(cu, cu_result):
    """A rotated Cu cell with the lattice vectors (a1, a2, a1 + a2 + a3), used as it is (primitive="P"):
    seekpath's points in its own standard basis are other q-points here; mapped, they are X and L."""
    import seekpath

    c = cu.cell.array
    rotation = Rotation.from_euler("xyz", [20, 35, 50], degrees=True).as_matrix()
    basis = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 1]])
    odd = Atoms("Cu", cell=basis @ c @ rotation.T, pbc=True)
    supercell = (4 * np.linalg.inv(basis)).round().astype(int).T  # phonopy: supercell = Mᵀ @ cell (rows)
    result = compute_phonons(odd, EMT(), supercell=supercell, primitive="P")
    np.testing.assert_allclose(
        result.phonopy.supercell.cell, 4 * c @ rotation.T, atol=1e-10
    )  # cu_result's, rotated
    bands = result.band_structure(npoints=5)
    a = cu.cell.lengths()[0] * np.sqrt(2)
    x_cart, l_cart = np.array([0, 0, 1 / a]) @ rotation.T, np.array([0.5, 0.5, 0.5]) / a @ rotation.T
    expected = result.frequencies_at([x_cart, l_cart], cartesian=True)
    np.testing.assert_allclose(bands.at("X"), expected[0], atol=1e-8)
    np.testing.assert_allclose(bands.at("L"), expected[1], atol=1e-8)
    np.testing.assert_allclose(
        expected, cu_result.frequencies_at([[0, 0.5, 0.5], [0.5, 0.5, 0.5]]), rtol=1e-6
    )
    naive = seekpath.get_path(result.phonopy.primitive.totuple())["point_coords"]  # standardised basis
    assert not np.allclose(result.frequencies_at([naive["X"]])[0], expected[0], atol=0.05)


def textbook_free_energy(result, temperature_K: float, mesh) -> float:
    """F = Σ_qj w_q [hν/2 + k_B T ln(1 − e^{−hν/k_B T})] / Σ w_q over real modes (ν > 1e-3 THz), eV/cell."""
    result.dos(mesh)  # runs the Γ-centred mesh
    weights = np.asarray(result.phonopy.mesh.weights, dtype=float)
    energy = np.asarray(result.phonopy.mesh.frequencies) * H_EV_PER_THZ  # hν, eV
    real = energy > 1e-3 * H_EV_PER_THZ
    x = energy[real] / (units.kB * temperature_K)
    terms = np.zeros_like(energy)
    terms[real] = energy[real] / 2 + units.kB * temperature_K * np.log1p(-np.exp(-x))
    return float((weights[:, None] * terms).sum() / weights.sum())


def test_thermal_properties_dos_and_saved_file(cu, cu_result, tmp_path):
    """F, S, C_V in eV per primitive cell: F(0) = Σ hν/2 (zero-point energy), F(T) the textbook sum (for a
    small supercell too, whose acoustic modes at Γ come out as +1e-6 THz and must not count), S = −dF/dT,
    C_V → 3 k_B per atom (Dulong-Petit); the DOS holds 3 states per atom; phonopy reloads the file.
    phonopy's constants (k_B, h, N_A) differ from ASE's CODATA values by ~1e-5, hence rtol 5e-5."""
    import phonopy

    thermal = cu_result.thermal_properties([0.0, 299.0, 300.0, 301.0, 3000.0], mesh=(12, 12, 12))
    mesh = cu_result.phonopy.mesh
    weights = np.asarray(mesh.weights, dtype=float)
    zpe = (weights[:, None] * np.asarray(mesh.frequencies)).sum() / weights.sum() * H_EV_PER_THZ / 2
    np.testing.assert_allclose(thermal["free_energy_eV"][0], zpe, rtol=1e-6)
    entropy = -(thermal["free_energy_eV"][3] - thermal["free_energy_eV"][1]) / 2.0
    np.testing.assert_allclose(thermal["entropy_eV_per_K"][2], entropy, rtol=1e-4)
    np.testing.assert_allclose(thermal["heat_capacity_eV_per_K"][4], 3 * units.kB, rtol=2e-3)
    np.testing.assert_allclose(
        thermal["free_energy_eV"][2], textbook_free_energy(cu_result, 300.0, (12, 12, 12)), rtol=5e-5
    )
    small = compute_phonons(cu, EMT(), supercell=3)
    f_small = small.thermal_properties([300.0], mesh=(6, 6, 6))["free_energy_eV"][0]
    np.testing.assert_allclose(f_small, textbook_free_energy(small, 300.0, (6, 6, 6)), rtol=5e-5)
    nu, g = cu_result.dos(mesh=(12, 12, 12))
    assert abs(np.trapezoid(g, nu) - 3.0) < 0.05
    path = cu_result.save(tmp_path / "phonopy_params.yaml")
    loaded = phonopy.load(path, log_level=0)
    np.testing.assert_allclose(
        loaded.run_qpoints([[0, 0.5, 0.5]]).frequencies, cu_result.frequencies_at([[0, 0.5, 0.5]]), rtol=1e-8
    )


# ------------------------------------------------------------------ acoustic sum rule
@pytest.mark.parametrize("case", ["emt_cu", "nearsight_si"])
def test_acoustic_sum_rule_and_zero_modes_at_gamma(case, cu, si, si_models):
    """Without symmetrisation: a translation-invariant energy gives forces that sum to zero (Newton's
    third law) to float64 round-off, and phonopy builds the other atoms' rows of Φ by rotating these
    with the space group, which keeps the sums; so Σ_j Φ_ij and Σ_i Φ_ij are ~1e-12 of Φ, far below the
    1e-8 allowed. Then three frequencies at Γ vanish (0.05 THz = 1.7 cm⁻¹ allows for the eigensolver)."""
    if case == "emt_cu":
        result = compute_phonons(cu, EMT(), supercell=4, symmetrize=False)
    else:
        result = compute_phonons(si, si_models[0], symmetrize=False)
    if case == "nearsight_si":
        assert result.interaction_range == pytest.approx(6.0)
        assert np.diag(result.supercell_matrix).tolist() == [2, 2, 2]  # widths 6.27 Å ≥ 6 Å
    fc = result.force_constants  # [N, N, 3, 3]
    scale = np.abs(fc).max()
    assert scale > 0.1
    assert np.abs(fc.sum(axis=1)).max() < 1e-8 * scale
    assert np.abs(fc.sum(axis=0)).max() < 1e-8 * scale
    gamma = np.sort(np.abs(result.frequencies_at([[0, 0, 0]])[0]))
    assert np.all(gamma[:3] < 0.05)
    assert np.all(gamma[3:] > 0.5)  # optical modes (Si) are not zero
    modes = result.imaginary_modes()
    if case == "emt_cu":
        assert modes == []
    else:  # this random model is unstable: ν(X) has two imaginary branches (reported as negative)
        x = result.high_symmetry_path()["point_coords"]["X"]
        at_x = [m for m in modes if np.allclose(m["q_point"], x)]
        nu_x = result.frequencies_at([x])[0]
        assert [m["branch"] for m in at_x] == [0, 1] and nu_x[1] < -1.0
        assert [m["frequency_THz"] for m in at_x] == pytest.approx(nu_x[:2])
        assert all(m["frequency_THz"] < -0.05 for m in modes)


# ------------------------------------------------------------------ bad input
def test_bad_input_is_named(cu, si, si_models):
    with pytest.raises(ValueError, match="periodic"):
        compute_phonons(molecule("H2O"), EMT(), supercell=1, where="water.xyz")
    with pytest.raises(ValueError, match=r"widths \[3\.135, 3\.135, 3\.135\] Å are below .* range 6 Å"):
        compute_phonons(si, si_models[0], supercell=1)
    rattled = cu.repeat(2)
    rattled.rattle(0.05, seed=3)
    with pytest.raises(ValueError, match=r"cu\.xyz is not relaxed for phonons: the force on atom \d+ is"):
        compute_phonons(rattled, EMT(), supercell=1, where="cu.xyz")
    with pytest.raises(ValueError, match="displacement"):
        compute_phonons(cu, EMT(), supercell=1, displacement=-0.01)
    with pytest.warns(UserWarning, match="interaction range is unknown"):
        chosen = compute_phonons(cu, EMT(), check_relaxed=False)
    assert np.diag(chosen.supercell_matrix).tolist() == [5, 5, 5]  # 5 × 2.07 Å ≥ 10 Å > 4 × 2.07 Å


# ------------------------------------------------------------------ committee
def test_committee_spread(cu, si, si_models, tmp_path):
    same = committee_phonons(cu, [EMT(), EMT()], supercell=3, mesh=(6, 6, 6))
    assert {"frequencies_THz_X", "frequencies_THz_L", "free_energy_eV_300K"} <= set(same.spread)
    assert np.all(np.array(same.spread["frequencies_THz_X"]["std"]) == 0.0)
    assert same.spread["free_energy_eV_300K"]["std"] == 0.0
    different = committee_phonons(si, list(si_models), mesh=(6, 6, 6))
    x = [
        m.frequencies_at([different.members[0].high_symmetry_path()["point_coords"]["X"]])[0]
        for m in different.members
    ]
    np.testing.assert_allclose(different.spread["frequencies_THz_X"]["mean"], np.mean(x, axis=0), rtol=1e-10)
    np.testing.assert_allclose(different.spread["frequencies_THz_X"]["std"], np.std(x, axis=0), rtol=1e-10)
    assert min(different.spread["frequencies_THz_X"]["std"]) > 1e-3
    png = different.plot(tmp_path / "committee.png", npoints=9, mesh=(6, 6, 6))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------ command line
def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="nearsight")
    add_phonons_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_writes_json_plot_and_phonopy_file(si, si_models, tmp_path, capsys):
    import phonopy

    paths = [save_model(m, tmp_path / f"si_{k}.pt") for k, m in enumerate(si_models)]
    structure = tmp_path / "si.extxyz"
    si.write(structure)
    out = tmp_path / "one"
    assert (
        run_cli(["phonons", str(structure), str(paths[0]), "--mesh", "6", "6", "6", "--output-dir", str(out)])
        == 0
    )
    printed = capsys.readouterr().out
    assert "Gamma" in printed and "X" in printed and "imaginary" in printed
    report = json.loads((out / "phonons.json").read_text())
    assert (
        report["supercell_matrix"] == [[2, 0, 0], [0, 2, 0], [0, 0, 2]]
        and report["interaction_range_A"] == 6.0
    )
    assert (out / "phonons.png").read_bytes()[:4] == b"\x89PNG"
    loaded = phonopy.load(out / "phonopy_params.yaml", log_level=0)
    x = report["summary"]["high_symmetry_points"]["X"]
    np.testing.assert_allclose(
        loaded.run_qpoints([x]).frequencies[0], report["summary"]["frequencies_THz_X"], rtol=1e-8
    )
    direct = compute_phonons(si, as_calculators(paths[0])[0]).frequencies_at([x])[0]
    np.testing.assert_allclose(report["summary"]["frequencies_THz_X"], direct, rtol=1e-10)

    both = tmp_path / "two"
    argv = ["phonons", str(structure), *map(str, paths), "--mesh", "6", "6", "6", "--output-dir", str(both)]
    assert run_cli(argv) == 0
    assert "±" in capsys.readouterr().out
    report = json.loads((both / "phonons.json").read_text())
    assert len(report["members"]) == 2 and min(report["committee"]["frequencies_THz_X"]["std"]) > 1e-3
    assert (both / "phonopy_params_1.yaml").is_file()

    water = tmp_path / "water.xyz"
    molecule("H2O").write(water)
    with pytest.raises(ValueError, match=r"water\.xyz \(frame 0\): phonons needs a crystal periodic"):
        run_cli(["phonons", str(water), str(paths[0]), "--output-dir", str(tmp_path / "w")])
    with pytest.raises(ValueError, match=r"missing\.xyz does not exist"):
        run_cli(["phonons", str(tmp_path / "missing.xyz"), str(paths[0])])
