"""SACASSCFOracle: SA2-CASSCF(2,2)/STO-3G on a twisted, pyramidalised CH2NH2+ (PySCF)."""

from __future__ import annotations

import ase.io
import numpy as np
import pytest
from ase import Atoms

pytest.importorskip("pyscf")

from nearsight.keys import STATE_COUPLINGS, STATE_ENERGIES, STATE_FORCES  # noqa: E402
from nearsight.qm import LabelStore, export_extxyz  # noqa: E402
from nearsight.qm.casscf import STATE_SPIN_SQUARE, SACASSCFOracle, n_csf, state_overlaps  # noqa: E402
from nearsight.qm.oracles import HARTREE_PER_BOHR_TO_EV_PER_ANGSTROM, HARTREE_TO_EV  # noqa: E402

EH_PER_BOHR = HARTREE_PER_BOHR_TO_EV_PER_ANGSTROM  # eV/Å
STEP = 1e-3  # Å, central differences


def methaniminium() -> Atoms:
    """CH2NH2+ twisted by 60° about C–N (1.40 Å), CH2 wagged by 10°: no symmetry, both states bound."""
    positions = [
        [0.0, 0.0, 0.0],
        [1.4, 0.0, 0.0],
        [-0.5478, 0.9257, 0.0966],
        [-0.5478, -0.9257, 0.0966],
        [1.9202, 0.4329, 0.7498],
        [1.9202, -0.4329, -0.7498],
    ]
    return Atoms("CNH4", positions=positions)


@pytest.fixture(scope="module")
def oracle():
    return SACASSCFOracle(basis="sto-3g", charge=1)


@pytest.fixture(scope="module")
def labelled(oracle):
    from pyscf import lib

    lib.num_threads(1)
    atoms = methaniminium()
    label = oracle(atoms)
    assert label.ok, label.error
    return atoms, label, oracle.casscf(atoms)


@pytest.fixture(scope="module")
def displaced(oracle, labelled):
    """Converged SA-CASSCF at ±STEP along two coordinates (C x, H4 z), from the reference orbitals."""
    atoms, _, mc0 = labelled
    out = {}
    for atom, axis in [(0, 0), (4, 2)]:
        for sign in (1, -1):
            moved = atoms.copy()
            moved.positions[atom, axis] += sign * STEP
            out[atom, axis, sign] = oracle.casscf(moved, mo_coeff=mc0.mo_coeff, ci0=mc0.ci)
    return out


def test_energies_ascending_and_equal_to_pyscf(labelled):
    from pyscf import mcscf, scf

    atoms, label, mc0 = labelled
    energies = label.extra[STATE_ENERGIES]
    assert energies.shape == (2,) and energies[0] < energies[1]
    assert label.energy == pytest.approx(energies[0], abs=1e-12)
    # PySCF's own SA-CASSCF, set up independently
    mf = scf.RHF(mc0.mol).run(conv_tol=1e-10)
    mc = mcscf.CASSCF(mf, 2, 2).fix_spin_(ss=0).state_average_([0.5, 0.5])
    mc.conv_tol, mc.conv_tol_grad = 1e-11, 1e-6
    mc.kernel()
    np.testing.assert_allclose(energies, np.asarray(mc.e_states) * HARTREE_TO_EV, atol=1e-6)
    assert label.extra[STATE_FORCES].shape == (6, 2, 3)
    assert label.extra[STATE_COUPLINGS].shape == (6, 1, 3)
    np.testing.assert_allclose(label.forces, label.extra[STATE_FORCES][:, 0])


def test_state_forces_are_minus_gradients(labelled, displaced):
    _, label, _ = labelled
    for atom, axis in [(0, 0), (4, 2)]:
        plus = np.asarray(displaced[atom, axis, 1].e_states)
        minus = np.asarray(displaced[atom, axis, -1].e_states)
        fd = -(plus - minus) * HARTREE_TO_EV / (2 * STEP)  # [S] eV/Å
        analytic = label.extra[STATE_FORCES][atom, :, axis]
        assert np.max(np.abs(analytic)) > 0.05  # a coordinate with real forces
        # 1e-5 Eh/bohr
        np.testing.assert_allclose(analytic, fd, atol=1e-5 * EH_PER_BOHR)


def test_coupling_is_energy_gap_times_overlap_derivative(labelled, displaced):
    """h_01 = (E_1 − E_0) ⟨ψ_0|∂ψ_1⟩ with ⟨ψ_0|∂ψ_1⟩ from finite differences of wavefunction overlaps."""
    _, label, mc0 = labelled
    energies = label.extra[STATE_ENERGIES]
    np.testing.assert_allclose(np.diag(state_overlaps(mc0, mc0)), 1.0, atol=1e-10)
    checked = 0
    for atom, axis in [(0, 0), (4, 2)]:
        overlaps = {}
        for sign in (1, -1):
            s = state_overlaps(mc0, displaced[atom, axis, sign])  # [S, S]
            overlaps[sign] = s * np.sign(np.diag(s))[None, :]  # phases of ψ_j(R ± δ) follow ψ_j(R)
        d01 = (overlaps[1][0, 1] - overlaps[-1][0, 1]) / (2 * STEP)  # 1/Å
        d10 = (overlaps[1][1, 0] - overlaps[-1][1, 0]) / (2 * STEP)
        assert d01 == pytest.approx(-d10, rel=1e-3, abs=1e-4)  # anti-Hermitian
        h = label.extra[STATE_COUPLINGS][atom, 0, axis]
        expected = (energies[1] - energies[0]) * d01
        if abs(expected) > 0.05:
            checked += 1
        assert h == pytest.approx(expected, rel=5e-3, abs=2e-3)
    assert checked >= 1  # at least one coordinate with a clear coupling (and sign)


def test_spin_squares_recorded_and_wrong_spin_fails(labelled):
    atoms, label, _ = labelled
    ss = label.extra[STATE_SPIN_SQUARE]
    assert ss.shape == (2,) and np.all(np.abs(ss) < 1e-6)
    assert label.provenance["spin_square"] == pytest.approx(ss.tolist())
    assert label.provenance["active_space"] == [2, 2] and label.provenance["weights"] == [0.5, 0.5]
    # without the spin penalty the second root is the triplet here
    free = SACASSCFOracle(basis="sto-3g", charge=1, spin_shift=0.0)(atoms)
    assert not free.ok and "root 1 has <S^2> = 2.0" in free.error and "CH4N" in free.error


def test_failures_are_recorded_not_raised():
    atoms = methaniminium()
    label = SACASSCFOracle(basis="sto-3g", charge=1, max_cycle=1, conv_tol=1e-14)(atoms)
    assert not label.ok and label.energy is None and not label.extra
    assert "SA2-CASSCF" in label.error and "not converged" in label.error and "CH4N" in label.error
    odd = SACASSCFOracle(basis="sto-3g", charge=0)  # 17 electrons, singlets asked
    with pytest.raises(ValueError, match="17 electrons"):
        odd.compute(atoms)
    assert not odd(atoms).ok
    too_big = SACASSCFOracle(basis="sto-3g", charge=1, n_active_orbitals=12, n_active_electrons=2)
    with pytest.raises(ValueError, match="exceed the 14 basis functions"):
        too_big.compute(atoms)


def test_several_starts_keep_the_lowest_average_energy(labelled):
    atoms, label, _ = labelled
    assert label.provenance["start"] == 0 and len(label.provenance["start_e_sa_hartree"]) == 1
    two = SACASSCFOracle(basis="sto-3g", charge=1, starts=(None, (6, 8)), forces=False, couplings=False)
    both = two(atoms)
    assert both.ok and both.forces is None and STATE_FORCES not in both.extra
    e_sa = both.provenance["start_e_sa_hartree"]
    assert len(e_sa) == 2 and e_sa[both.provenance["start"]] == min(e_sa)
    weights = np.asarray(both.provenance["weights"])
    assert weights @ both.provenance["e_states_hartree"] == pytest.approx(min(e_sa), abs=1e-9)
    # "first": the first start that converges is kept and the later ones are not run
    first = SACASSCFOracle(
        basis="sto-3g", charge=1, starts=((6, 8), None), select="first", forces=False, couplings=False
    )(atoms)
    assert first.ok and first.provenance["start"] == 0 and first.provenance["select"] == "first"
    e_first = first.provenance["start_e_sa_hartree"]
    assert e_first[0] == pytest.approx(e_sa[1], abs=1e-8) and np.isnan(e_first[1])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n_states": 1}, "n_states must be >= 2"),
        ({"n_active_electrons": 3}, "spin 2S = 0 is impossible"),
        ({"n_active_electrons": 5}, "impossible"),
        ({"n_states": 4}, "only 3 configurations"),
        ({"weights": (0.7, 0.2)}, "summing to 1"),
        ({"starts": ((6, 6),)}, "distinct orbitals"),
        ({"starts": ()}, "must each be None"),
        ({"select": "best"}, "select 'best' must be"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SACASSCFOracle(**kwargs)


def test_n_csf_weyl():
    assert n_csf(2, 2, 0) == 3 and n_csf(2, 2, 2) == 1 and n_csf(4, 4, 0) == 20 and n_csf(3, 3, 1) == 8


def test_store_round_trip_and_extxyz(tmp_path, labelled, oracle):
    atoms, label, _ = labelled
    store = LabelStore(tmp_path / "labels.db")
    store.write(atoms, label, oracle)
    ((_, back),) = store.labels(oracle).values()
    assert set(back.extra) == set(label.extra)
    for name, value in label.extra.items():
        np.testing.assert_array_equal(back.extra[name], value)
    assert back.provenance["spin_square"] == pytest.approx(label.provenance["spin_square"])
    assert export_extxyz(tmp_path / "out.extxyz", store, oracle) == 1
    frame = ase.io.read(tmp_path / "out.extxyz")
    # extxyz keeps 8 decimals
    np.testing.assert_allclose(frame.info[STATE_ENERGIES], label.extra[STATE_ENERGIES], atol=1e-7)
    np.testing.assert_allclose(frame.info[STATE_SPIN_SQUARE], label.extra[STATE_SPIN_SQUARE], atol=1e-7)
    np.testing.assert_allclose(
        frame.arrays[STATE_FORCES].reshape(6, 2, 3), label.extra[STATE_FORCES], atol=1e-7
    )
    np.testing.assert_allclose(
        frame.arrays[STATE_COUPLINGS].reshape(6, 1, 3), label.extra[STATE_COUPLINGS], atol=1e-7
    )
