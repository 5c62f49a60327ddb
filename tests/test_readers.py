"""Readers, validation and reference-energy statistics."""

from __future__ import annotations

import itertools
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from conftest import shared_data_dir
from nearsight import units
from nearsight.data.frame import Frame
from nearsight.data.readers import read_frames, read_many
from nearsight.data.stats import (
    energy_residual_std,
    fit_reference_energies,
    force_rms,
    isolated_atom_energies,
)
from nearsight.data.validate import validate_frame, validate_frames

DATA = shared_data_dir()
BAD = Path(__file__).parent / "data" / "bad"
NOPBC = [False, False, False]
needs_data = pytest.mark.skipif(not DATA.exists(), reason="reference data not available")


@pytest.fixture(scope="module")
def ethanol() -> list[Frame]:
    return read_frames(DATA / "ethanol" / "train.xyz")


@pytest.fixture(scope="module")
def silicon() -> list[Frame]:
    return read_frames(DATA / "si" / "training.json")


# ------------------------------------------------------------------ readers


@needs_data
def test_ethanol_extxyz(ethanol: list[Frame]) -> None:
    assert len(ethanol) == 1000
    assert all(f.energy is not None and f.forces is not None for f in ethanol)
    lines = (DATA / "ethanol" / "train.xyz").read_text().splitlines()[:3]
    energy = float(re.search(r"\benergy=(\S+)", lines[1]).group(1))
    first_atom = [float(x) for x in lines[2].split()[1:]]
    frame = ethanol[0]
    assert frame.energy == energy
    np.testing.assert_array_equal(frame.positions[0], first_atom[:3])
    np.testing.assert_array_equal(frame.forces[0], first_atom[3:])
    assert frame.n_atoms == 9 and not frame.pbc.any()
    assert frame.config_type == "Training_set"
    assert frame.index == 0 and ethanol[-1].index == 999
    assert frame.source == str(DATA / "ethanol" / "train.xyz")
    assert "OH_dist" in frame.info


PARTIAL = """\
2
Lattice="4 0 0 0 4 0 0 0 4" Properties=species:S:1:pos:R:3:forces:R:3 energy=-1.5 REF_energy=-2.5 \
stress="0.1 0.0 0.0 0.0 0.2 0.0 0.0 0.0 0.3" config_type=bulk weight=2.0 pbc="T T T"
H 0 0 0 0.1 0.2 0.3
H 1 0 0 -0.1 -0.2 -0.3
2
Properties=species:S:1:pos:R:3 energy=-1.0 pbc="F F F"
H 0 0 0
H 1 0 0
2
Lattice="4 0 0 0 4 0 0 0 4" Properties=species:S:1:pos:R:3 virial="1.6 0 0 0 3.2 0 0 0 6.4" \
pbc="T T T"
H 0 0 0
H 1 0 0
"""


def test_partially_labelled_extxyz(tmp_path: Path) -> None:
    path = tmp_path / "partial.xyz"
    path.write_text(PARTIAL)
    frames = read_frames(path)
    assert [f.index for f in frames] == [0, 1, 2]
    assert frames[0].forces is not None and frames[1].forces is None and frames[2].forces is None
    assert frames[0].energy == -1.5 and frames[2].energy is None
    np.testing.assert_allclose(frames[0].stress, np.diag([0.1, 0.2, 0.3]))
    assert frames[0].config_type == "bulk" and frames[0].weight == 2.0
    assert frames[1].stress is None and frames[1].config_type == "default"
    np.testing.assert_allclose(frames[2].stress, -np.diag([1.6, 3.2, 6.4]) / 64.0)
    ref = read_frames(path, energy_key="REF_energy")
    assert ref[0].energy == -2.5 and ref[1].energy is None
    # Only frame 0 has forces: fine unless strict.
    validate_frames(frames, require=("energy", "forces"))
    with pytest.raises(ValueError, match=r"partial\.xyz', frame 1: required label 'forces'"):
        validate_frames(frames, require=("forces",), strict=True)
    assert [f.index for f in read_frames(path, index="1:")] == [1, 2]
    assert [f.index for f in read_frames(path, index=-1)] == [2]


@needs_data
def test_water_deepmd() -> None:
    system = DATA / "water" / "data_1"
    frames = read_frames(system)
    assert len(frames) == 160 and [f.index for f in frames] == list(range(160))
    assert frames[80].info["set"] == "set.001" and frames[80].info["set_index"] == 0
    frame = frames[0]
    assert frame.n_atoms == 192 and frame.pbc.all()
    np.testing.assert_allclose(np.diag(frame.cell), 12.445, atol=1e-3)
    assert np.count_nonzero(frame.numbers == 8) == 64 and np.count_nonzero(frame.numbers == 1) == 128
    raw_e = np.load(system / "set.001" / "energy.npy")
    raw_f = np.load(system / "set.001" / "force.npy")
    assert frames[85].energy == float(raw_e[5])
    np.testing.assert_array_equal(frames[85].forces.reshape(-1), raw_f[5].astype(np.float64))
    assert frame.stress is None
    both = read_many([DATA / "water" / "data_0", DATA / "water" / "data_3"])
    assert len(both) == 160 and both[80].source.endswith("data_3")


def test_deepmd_virial_and_nopbc(tmp_path: Path) -> None:
    system = tmp_path / "sys"
    (system / "set.000").mkdir(parents=True)
    (system / "type.raw").write_text("0 1\n")
    (system / "type_map.raw").write_text("O H\n")
    coord = np.array([[0, 0, 0, 0.96, 0, 0], [0, 0, 0, 0.98, 0, 0]], dtype=float)
    np.save(system / "set.000" / "coord.npy", coord)
    np.save(system / "set.000" / "box.npy", np.tile(np.diag([2.0, 3.0, 4.0]).ravel(), (2, 1)))
    np.save(system / "set.000" / "energy.npy", np.array([-1.0, -2.0]))
    np.save(system / "set.000" / "virial.npy", np.tile(np.eye(3).ravel() * 2.4, (2, 1)))
    frames = read_frames(system)
    assert frames[1].energy == -2.0 and frames[1].forces is None
    np.testing.assert_allclose(frames[0].stress, -np.eye(3) * 2.4 / 24.0)
    (system / "nopbc").write_text("")
    assert not read_frames(system, format="deepmd")[0].pbc.any()


@needs_data
def test_mlearn_json(silicon: list[Frame]) -> None:
    assert len(silicon) == 214
    assert all(f.stress is not None and f.stress.shape == (3, 3) for f in silicon)
    assert all(f.pbc.all() for f in silicon)
    assert {f.config_type for f in silicon} == {"AIMD-NVT", "Vacancy", "Elastic", "Surface"}
    ground = next(f for f in silicon if f.info.get("description") == "Ground state crystal")
    # VASP reports -0.042 kbar (slightly tensile); in ASE's sign that is +0.042 kbar.
    np.testing.assert_allclose(np.diag(ground.stress) / units.KBAR, 0.042, atol=1e-3)
    first = silicon[0]
    assert first.n_atoms == 63 and first.forces.shape == (63, 3)


def _elastic_families(frames: list[Frame]) -> dict[int, list[tuple[float, Frame]]]:
    families: dict[int, list[tuple[float, Frame]]] = defaultdict(list)
    for frame in frames:
        m = re.search(r"mode (\d+), strain (\S+)", frame.info.get("description", ""))
        if frame.config_type == "Elastic" and m:
            families[int(m.group(1))].append((float(m.group(2)), frame))
    return {k: sorted(v, key=lambda t: t[0]) for k, v in families.items()}


def _work(f1: Frame, f2: Frame, stress: np.ndarray) -> float:
    """V σ:ε for the homogeneous deformation C2 = C1 (I + ε)."""
    deformation = np.linalg.solve(f1.cell, f2.cell)  # rows are lattice vectors
    strain = 0.5 * (deformation + deformation.T) - np.eye(3)
    volume = 0.5 * (abs(np.linalg.det(f1.cell)) + abs(np.linalg.det(f2.cell)))
    return float(volume * np.sum(stress * strain))


@needs_data
def test_mlearn_stress_sign_and_order_from_energies(silicon: list[Frame]) -> None:
    """ΔE between neighbouring strained cells ≈ V σ̄:ε with the converted stress.

    The Elastic frames keep the atoms at the same fractional coordinates, so
    E(ε) along each strain path is exactly integrated by the stress.  Modes 3-5
    are shears, so a wrong off-diagonal order or sign would fail.
    """
    families = _elastic_families(silicon)
    assert sorted(families) == [0, 1, 2, 3, 4, 5]
    cyclic = [1, 2, 0]  # xy -> yz -> zx: a wrong Voigt order
    checked = 0
    for mode, family in families.items():
        for (s1, f1), (s2, f2) in itertools.pairwise(family):
            if not np.isclose(s2 - s1, 0.02) or s1 * s2 < 0:
                continue
            frac1 = np.linalg.solve(f1.cell.T, f1.positions.T)
            frac2 = np.linalg.solve(f2.cell.T, f2.positions.T)
            np.testing.assert_allclose(frac1, frac2, atol=1e-8)
            d_energy = f2.energy - f1.energy
            mean = 0.5 * (f1.stress + f2.stress)
            assert abs(_work(f1, f2, mean) - d_energy) < 0.03 * abs(d_energy), (mode, s1, s2)
            assert abs(_work(f1, f2, -mean) - d_energy) > 1.0 * abs(d_energy)
            if mode >= 3:
                permuted = np.diag(np.diag(mean))
                off = np.array([mean[0, 1], mean[1, 2], mean[2, 0]])[cyclic]
                for (i, j), v in zip(((0, 1), (1, 2), (2, 0)), off, strict=True):
                    permuted[i, j] = permuted[j, i] = v
                assert abs(_work(f1, f2, permuted) - d_energy) > 0.5 * abs(d_energy)
            checked += 1
    assert checked == 36


@needs_data
def test_ase_db_round_trip(tmp_path: Path, silicon: list[Frame]) -> None:
    import ase.db

    path = tmp_path / "frames.db"
    originals = silicon[:3]
    with ase.db.connect(path) as db:
        for frame in originals:
            db.write(
                frame.to_atoms(),
                config_type=frame.config_type,
                REF_energy=frame.energy + 1.0,
                data={"REF_forces": frame.forces * 2.0},
            )
    frames = read_frames(path)
    assert len(frames) == 3 and [f.index for f in frames] == [0, 1, 2]
    for got, want in zip(frames, originals, strict=True):
        np.testing.assert_allclose(got.positions, want.positions)
        np.testing.assert_allclose(got.cell, want.cell)
        assert got.energy == pytest.approx(want.energy)
        np.testing.assert_allclose(got.forces, want.forces)
        np.testing.assert_allclose(got.stress, want.stress, atol=1e-12)
        assert got.config_type == want.config_type
    ref = read_frames(path, energy_key="REF_energy", forces_key="REF_forces")
    assert ref[1].energy == pytest.approx(originals[1].energy + 1.0)
    np.testing.assert_allclose(ref[1].forces, originals[1].forces * 2.0)


# --------------------------------------------------------------- validation


def test_missing_energy_strict() -> None:
    frames = read_frames(BAD / "missing_energy.xyz")
    validate_frames(frames, require=("energy",))  # frame 0 has one: masked later
    with pytest.raises(ValueError, match=r"missing_energy\.xyz', frame 1: .*'energy'"):
        validate_frames(frames, require=("energy",), strict=True)


def test_label_missing_everywhere() -> None:
    frames = read_frames(BAD / "unknown_element.xyz")
    with pytest.raises(ValueError, match=r"'forces' is missing in all 2 frames.*unknown_element"):
        validate_frames(frames)


@pytest.mark.parametrize(
    ("name", "pattern"),
    [
        ("nan_forces.xyz", r"nan_forces\.xyz', frame 1: forces is not finite at \(1, 0\)"),
        ("inf_energy.xyz", r"inf_energy\.xyz', frame 1: energy is not finite: inf"),
        ("zero_atoms.xyz", r"zero_atoms\.xyz', frame 1: frame has zero atoms"),
        ("wrong_force_rows.json", r"wrong_force_rows\.json', frame 1: forces shape \(3, 3\)"),
        ("close_atoms.xyz", r"close_atoms\.xyz', frame 1: atoms 0 \(Si\) and 1 .* 0\.3000 Å"),
        ("singular_cell.xyz", r"singular_cell\.xyz', frame 1: periodic cell is singular"),
        (
            "deepmd_frame_mismatch",
            r"deepmd_frame_mismatch/set\.000/energy\.npy', frame 2: energy\.npy has 2 frames",
        ),
    ],
)
def test_bad_inputs(name: str, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        read_frames(BAD / name)


def test_unknown_element() -> None:
    frames = read_frames(BAD / "unknown_element.xyz")
    validate_frames(frames, require=(), known_species=[1, 8, 17])
    with pytest.raises(ValueError, match=r"unknown_element\.xyz', frame 1: element Cl"):
        validate_frames(frames, require=(), known_species=[1, 8])


def test_validation_switches() -> None:
    assert len(read_frames(BAD / "close_atoms.xyz", min_distance=0.2)) == 2
    assert len(read_frames(BAD / "nan_forces.xyz", validate=False)) == 2
    frame = Frame(numbers=[14], positions=[[0.0, 0.0, 0.0]], cell=np.zeros((3, 3)), pbc=NOPBC)
    validate_frame(frame)  # non-periodic with a zero cell is fine
    frame.pbc = np.array([True, False, False])
    with pytest.raises(ValueError, match=r"frame 0: cell vector 0 is zero"):
        validate_frame(frame)
    frame.pbc[:] = False
    frame.stress = np.zeros(6)
    with pytest.raises(ValueError, match=r"stress shape \(6,\)"):
        validate_frame(frame)


# --------------------------------------------------------------- statistics


def _synthetic(ref: dict[int, float], n_frames: int, seed: int = 0) -> list[Frame]:
    rng = np.random.default_rng(seed)
    frames = []
    for k in range(n_frames):
        counts = rng.integers(0, 5, size=len(ref))
        counts[k % len(ref)] += 1
        numbers = np.repeat(list(ref), counts)
        positions = np.arange(len(numbers))[:, None] * np.array([[1.5, 0.0, 0.0]])
        energy = float(sum(ref[int(z)] for z in numbers))
        forces = rng.normal(size=(len(numbers), 3))
        frames.append(Frame(numbers, positions, np.zeros((3, 3)), NOPBC, energy=energy, forces=forces))
    return frames


def test_fit_reference_energies_exact() -> None:
    ref = {1: -13.6, 6: -1025.3, 8: -2035.6, 7: -1479.1}
    frames = _synthetic(ref, 20)
    frames.append(Frame([1], [[0.0, 0.0, 0.0]], np.zeros((3, 3)), NOPBC))  # no energy: skipped
    fitted = fit_reference_energies(frames)
    assert sorted(fitted) == sorted(ref)
    for z, e in ref.items():
        assert fitted[z] == pytest.approx(e, abs=1e-8)
    assert energy_residual_std(frames, ref) == pytest.approx(0.0, abs=1e-9)
    assert fit_reference_energies(frames, species=[1, 6, 7, 8, 9])[9] == pytest.approx(0.0)


def test_fit_reference_energies_constant_composition() -> None:
    frames = [
        Frame([14, 14], [[0, 0, 0], [2.3, 0, 0]], np.zeros((3, 3)), NOPBC, energy=-10.8 + 0.01 * k)
        for k in range(5)
    ]
    fitted = fit_reference_energies(frames)
    assert fitted[14] == pytest.approx(np.mean([f.energy for f in frames]) / 2)
    assert energy_residual_std(frames, fitted) == pytest.approx(np.std([f.energy for f in frames]))


@needs_data
def test_isolated_atoms_and_stats(ethanol: list[Frame]) -> None:
    iso = isolated_atom_energies(DATA / "ethanol" / "isolated_atoms.xyz")
    assert iso[1] == pytest.approx(-13.568422383046626)
    assert sorted(iso) == [1, 6, 7, 8]
    assert isolated_atom_energies({"H": -1.0, 6: -2.0, "8": -3.0}) == {1: -1.0, 6: -2.0, 8: -3.0}
    rms = force_rms(ethanol)
    all_forces = np.concatenate([f.forces.ravel() for f in ethanol])
    assert rms == pytest.approx(np.sqrt(np.mean(all_forces**2)))
    # Ethanol has one composition: any reference gives the same spread.
    assert energy_residual_std(ethanol, iso) == pytest.approx(np.std([f.energy for f in ethanol]), rel=1e-9)
    with pytest.raises(ValueError, match=r"no reference energy for Z=\[8\]"):
        energy_residual_std(ethanol[:1], {1: 0.0, 6: 0.0})


def test_dipole_stored_as_a_row(tmp_path: Path) -> None:
    """A per-structure label written as [[x, y, z]] (SPICE's "_JSON [[...]]") reads as [3];
    a label of the wrong size is still refused, naming the frame."""
    path = tmp_path / "dipole.xyz"
    path.write_text(
        '2\nProperties=species:S:1:pos:R:3 energy=-1.5 dipole="_JSON [[0.5, -0.25, 1.0]]" pbc="F F F"\n'
        "H 0 0 0\nH 0 0 0.74\n"
        '2\nProperties=species:S:1:pos:R:3 energy=-1.5 dipole="_JSON [[0.5, -0.25]]" pbc="F F F"\n'
        "H 0 0 0\nH 0 0 0.74\n"
    )
    frame = read_frames(path, index=0, extra_labels={"dipole": "dipole"})[0]
    np.testing.assert_array_equal(frame.labels["dipole"], [0.5, -0.25, 1.0])
    with pytest.raises(ValueError, match=r"frame 1: label 'dipole' has shape"):
        read_frames(path, extra_labels={"dipole": "dipole"})
