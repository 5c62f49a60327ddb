"""Total charge and spin multiplicity as inputs of the short-range models (issue 17): one geometry
in two charge or spin states has two energies with ``charge_embedding`` and one without; a neutral
singlet gives exactly the model without the embedding; symmetry, finite-difference forces and
stress, model files, a training run from a config; the data checks that go with it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule
from ase.io import read, write

from nearsight import keys
from nearsight.data.neighbours import atoms_to_graph, collate
from nearsight.data.readers import read_frames
from nearsight.models.bpnn import BehlerParrinello
from nearsight.models.electronic import distribute
from nearsight.models.equivariant import EquivariantPotential
from nearsight.models.forcefield import ForceField
from nearsight.models.io import load_model, model_from_dict, model_to_dict, save_model
from nearsight.testing import format_report, run_all_checks
from nearsight.training.config import ConfigError, load_config, validate_config
from nearsight.training.dataset import prepare_data
from nearsight.training.model_setup import build_model
from nearsight.training.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "examples" / "data" / "ethanol_train300.xyz"
ISOLATED = ROOT / "examples" / "data" / "ethanol_isolated_atoms.xyz"
SPECIES = [1, 6, 8]
pytestmark = pytest.mark.usefixtures("one_thread")


def _bpnn(embedding: bool = True) -> BehlerParrinello:
    torch.manual_seed(0)
    desc = {"r_cut": 4.0, "g2_params": [[0.5, 0.0], [0.5, 1.5]], "g4_params": [[0.1, 1.0, 1.0]]}
    return BehlerParrinello(SPECIES, desc, hidden=[8], charge_embedding=embedding).double().eval()


def _equivariant(embedding: bool = True) -> EquivariantPotential:
    torch.manual_seed(0)
    model = EquivariantPotential(SPECIES, cutoff=4.0, channels=4, l_max=1, sh_l_max=2, correlation=2,
                                 num_layers=2, radial_hidden=(8,), readout_hidden=4,
                                 charge_embedding=embedding)  # fmt: skip
    model.set_statistics({1: -13.6, 6: -1030.0, 8: -2035.6}, 0.5, avg_num_neighbours=5.0)
    return model.double().eval()


BUILDERS = pytest.mark.parametrize("build", [_bpnn, _equivariant], ids=["bpnn", "equivariant"])


def _state(atoms: Atoms, charge: int, multiplicity: int) -> Atoms:
    out = atoms.copy()
    out.info.update(charge=charge, multiplicity=multiplicity)
    return out


def _methanol() -> Atoms:
    atoms = molecule("CH3OH")  # 18 electrons: odd multiplicity when neutral, even as an ion
    atoms.positions += np.random.default_rng(0).normal(scale=0.05, size=atoms.positions.shape)
    return atoms


STATES = [(0, 1), (0, 3), (1, 2), (-1, 2)]  # neutral singlet, neutral triplet, cation, anion


def _energies(model, atoms: Atoms) -> np.ndarray:
    ff = ForceField(model)
    batch = collate([atoms_to_graph(_state(atoms, q, m), model.cutoff) for q, m in STATES])
    return ff(batch, forces=False)[keys.ENERGY].detach().numpy()


@BUILDERS
def test_one_geometry_in_two_charge_states_has_two_energies_only_with_the_embedding(build):
    with_it = _energies(build(True), _methanol())
    gaps = np.abs(with_it[:, None] - with_it[None, :])[np.triu_indices(len(STATES), 1)]
    assert gaps.min() > 1e-4, with_it  # all four states distinct (cation ≠ anion: separate channels)
    without = _energies(build(False), _methanol())
    np.testing.assert_array_equal(without, without[0])  # Q and M are not inputs: one energy


@BUILDERS
def test_a_neutral_singlet_is_exactly_the_model_without_the_embedding(build):
    """The same weights without the embedding (the extra input columns of the Behler-Parrinello
    networks dropped): energies and forces of Q = 0, M = 1 agree to rounding, in a batch too."""
    model, plain = build(True), build(False)
    state = model.state_dict()
    plain.load_state_dict(
        {k: state[k][tuple(slice(0, n) for n in v.shape)] for k, v in plain.state_dict().items()}
    )
    structures = [_methanol(), molecule("H2O")]
    batch = collate([atoms_to_graph(a, model.cutoff) for a in structures])
    a, b = ForceField(model)(batch), ForceField(plain)(batch)
    for key in (keys.ENERGY, keys.FORCES):
        torch.testing.assert_close(a[key], b[key], atol=1e-12, rtol=0)
    charged = atoms_to_graph(_state(structures[0], 1, 2), model.cutoff)
    assert abs(float(ForceField(model)(charged)[keys.ENERGY].detach() - a[keys.ENERGY][0].detach())) > 1e-4


def test_shares_add_up_to_each_structures_charge_and_unpaired_electrons():
    """Σ_{i∈s} a_i = (max(Q,0), max(−Q,0), M − 1) per structure, whatever the logits and size."""
    structures = [_state(molecule("CH3OH"), 2, 1), _state(molecule("H2O"), -1, 2), molecule("CH4")]
    structures.append(_state(molecule("C6H6"), 0, 3))
    batch = collate([atoms_to_graph(a, 3.0) for a in structures])
    logits = torch.as_tensor(np.random.default_rng(1).normal(scale=3.0, size=(batch[keys.BATCH].shape[0], 3)))
    shares = distribute(logits, batch)
    sums = torch.zeros(4, 3, dtype=shares.dtype).index_add(0, batch[keys.BATCH], shares)
    expected = [[2, 0, 0], [0, 1, 1], [0, 0, 0], [0, 0, 2]]
    np.testing.assert_allclose(sums.numpy(), expected, atol=1e-12)
    methane = batch[keys.BATCH] == 2
    assert torch.equal(shares[methane], torch.zeros_like(shares[methane]))  # neutral singlet: exactly 0
    assert float(shares[batch[keys.BATCH] == 0, 0].std()) > 0.01  # the logits decide where Q sits


def _charged_box() -> Atoms:
    rng = np.random.default_rng(0)
    atoms = Atoms()
    for k in range(3):
        w = molecule("H2O")
        w.positions += np.array([k % 2, k // 2, 0.6 * k]) * 2.4 + rng.normal(scale=0.05, size=(3, 3))
        atoms += w
    atoms += Atoms("H", positions=[[1.0, 3.3, 3.0]])  # H3O+ and two waters: 28 electrons
    atoms.cell = np.diag([5.0, 5.2, 4.8]) + 0.2 * rng.normal(size=(3, 3))
    atoms.pbc = True
    return _state(atoms, 1, 3)  # triplet: 2S = 2 unpaired of 28 electrons


@BUILDERS
def test_symmetry_and_exact_forces_and_stress_of_a_charged_open_shell_structure(build):
    """Rotation, reflection, translation, permutation, FD forces (cation doublet) and FD stress of a
    charged periodic cell.  Additivity and the supercell check do not apply: Q and M belong to the
    whole structure (a supercell of a +1 cell with Q = +1 is another system)."""
    model = build(True)
    molecule_ = _state(_methanol(), 1, 2)
    results = run_all_checks(model, molecule=molecule_, periodic=_charged_box(), rng=0,
                             skip=("additivity", "isolated_atom", "smoothness", "supercell"))  # fmt: skip
    assert all(r.passed for r in results), format_report(results)
    names = {r.name.split("[")[0] for r in results}
    assert {"forces_fd", "stress_fd", "rotation", "permutation", "translation", "reflection"} <= names


@BUILDERS
def test_model_files_keep_the_embedding(build, tmp_path):
    model = build(True)
    assert model.get_config()["charge_embedding"] is True
    assert "charge_embedding" not in build(False).get_config()  # files without it are unchanged
    loaded = load_model(save_model(model, tmp_path / "m.pt"), dtype="float64")
    assert loaded.get_config() == model.get_config()
    np.testing.assert_array_equal(_energies(loaded, _methanol()), _energies(model, _methanol()))


def test_long_range_model_with_the_embedding_round_trips():
    cfg = validate_config({"data": {"train": "x"}, "model": {
        "type": "equivariant", "cutoff": 3.5, "charge_embedding": True,
        "equivariant": {"preset": "small", "channels": 4, "radial_hidden": [8]},
        "longrange": {"coulomb": {"accuracy": 1e-6}, "dispersion": {"functional": "pbe"}},
    }})  # fmt: skip
    torch.manual_seed(0)
    model = build_model(cfg["model"], SPECIES).double().eval()
    assert model.get_config()["short"]["config"]["charge_embedding"] is True
    loaded = model_from_dict(model_to_dict(model)).double().eval()
    g = atoms_to_graph(_state(_methanol(), -1, 2), model.cutoff)
    a, b = ForceField(model)(g), ForceField(loaded)(g)
    for key in (keys.ENERGY, keys.FORCES, keys.CHARGES):
        torch.testing.assert_close(a[key], b[key], atol=0, rtol=0)
    assert abs(float(a[keys.CHARGES].sum()) + 1.0) < 1e-10


# ------------------------------------------------------------------ data and configs
def _ions(tmp_path, n: int = 12, charged=range(0, 12, 2)) -> str:
    """``n`` ethanol frames (26 electrons) with energies and forces in info/arrays; the frames in
    ``charged`` are cation doublets 9 eV above the neutral singlet (a made-up ionisation energy)."""
    frames = read(TRAIN, f":{n}")
    for k, atoms in enumerate(frames):
        e, f = atoms.get_potential_energy(), atoms.get_forces()
        atoms.calc = None
        atoms.arrays["forces"] = f
        atoms.info.update(energy=e, charge=0, multiplicity=1)
        if k in charged:
            atoms.info.update(energy=e + 9.0, charge=1, multiplicity=2)
    path = tmp_path / "ions.xyz"
    write(path, frames)
    return str(path)


def _config(tmp_path, train: str, model: dict | None = None, **data) -> dict:
    return validate_config({
        "seed": 0, "output_dir": str(tmp_path / "run"),
        "data": {"train": train, "valid_fraction": 0.25, "reference_energies": str(ISOLATED), **data},
        "model": {"cutoff": 3.5, "n_radial": 4, "n_angular_eta": 1, "hidden": [8], "charge_embedding": True,
                  **(model or {})},
        "training": {"epochs": 2, "batch_size": 3, "lr": 0.01},
    })  # fmt: skip


@pytest.mark.parametrize("kind", ["bpnn", "equivariant"])
def test_a_config_with_charge_embedding_trains_and_its_model_tells_the_states_apart(tmp_path, kind):
    model = {}
    if kind == "equivariant":
        model = {"type": "equivariant", "equivariant": {"preset": "small", "channels": 4, "radial_hidden": [8],
                                                         "sh_l_max": 2, "correlation": 2}}  # fmt: skip
    trainer = Trainer(_config(tmp_path, _ions(tmp_path), model), log=lambda m: None)
    best = load_model(trainer.train(), dtype="float64")
    assert best.get_config()["charge_embedding"] is True and best.model_type == kind
    atoms = read(TRAIN, 0)
    e = [float(ForceField(best)(atoms_to_graph(_state(atoms, q, m), best.cutoff))[keys.ENERGY])
         for q, m in ((0, 1), (1, 2))]  # fmt: skip
    assert abs(e[1] - e[0]) > 1e-3


def test_multiplicity_is_read_checked_and_its_key_configurable(tmp_path):
    frames = [_state(_methanol(), 0, 1), _state(_methanol(), 1, 2), _methanol()]
    write(tmp_path / "ok.xyz", frames)
    read_back = read_frames(tmp_path / "ok.xyz")
    assert [f.spin_multiplicity for f in read_back] == [1.0, 2.0, 1.0]
    assert [f.inputs_given for f in read_back][1:] == [("total_charge", "spin_multiplicity"), ()]
    assert read_back[1].to_atoms().info["multiplicity"] == 2.0
    graph = collate([atoms_to_graph(a, 3.0) for a in frames])
    assert graph[keys.SPIN_MULTIPLICITY].tolist() == [1.0, 2.0, 1.0]
    omol = _methanol()
    omol.info.update(charge=-1, spin=2)  # OMol25 stores M under "spin"
    write(tmp_path / "omol.xyz", omol)
    assert read_frames(tmp_path / "omol.xyz", multiplicity_key="spin")[0].spin_multiplicity == 2.0
    for value, message in (
        (0, r"frame 1: spin multiplicity 0.0 must be a whole number >= 1"),
        (1.5, r"frame 1: spin multiplicity 1.5 must be a whole number >= 1"),
        (1, r"frame 1: spin multiplicity 1 is impossible with 17 electrons \(Σ Z = 18, total charge 1\)"),
        (21, r"frame 1: spin multiplicity 21 is impossible with 17 electrons"),
    ):
        frames[1].info["multiplicity"] = value
        write(tmp_path / "bad.xyz", frames)
        with pytest.raises(ValueError, match=message):
            read_frames(tmp_path / "bad.xyz")
    frames[1].info["multiplicity"] = "doublet"
    write(tmp_path / "bad.xyz", frames)
    with pytest.raises(
        ValueError, match=r"frame 1: spin multiplicity 'multiplicity' = 'doublet' is not a number"
    ):
        read_frames(tmp_path / "bad.xyz")
    with pytest.raises(ValueError, match=r"spin multiplicity 2 is impossible with 18 electrons"):
        atoms_to_graph(_state(_methanol(), 0, 2), 3.0)  # the calculator's path checks too


def test_charge_or_multiplicity_in_some_frames_only_is_a_config_error_when_the_model_reads_it(tmp_path):
    path = _ions(tmp_path, n=8)
    frames = read(path, ":")
    del frames[5].info["charge"], frames[5].info["multiplicity"]
    write(tmp_path / "mixed.xyz", frames)
    mixed = str(tmp_path / "mixed.xyz")
    with pytest.raises(ConfigError, match=r"mixed.xyz', frame 5: no total charge \(info key 'charge'\), but 7 "
                       r"of 8 frames have one \(e.g. .*frame 0\).*\(model.charge_embedding\)"):  # fmt: skip
        prepare_data(_config(tmp_path, mixed))
    coulomb = {"charge_embedding": False, "longrange": {"coulomb": {}}}
    with pytest.raises(ConfigError, match=r"frame 5: no total charge.*\(model.longrange.coulomb\)"):
        prepare_data(_config(tmp_path, mixed, coulomb))
    prepare_data(_config(tmp_path, mixed, {"charge_embedding": False}))  # the model does not read Q: fine
    del frames[2].info["multiplicity"]
    frames[5].info["charge"] = 0
    write(tmp_path / "mixed.xyz", frames)
    with pytest.raises(ConfigError, match=r"frame 2: no spin multiplicity \(info key 'multiplicity'\)"):
        prepare_data(_config(tmp_path, mixed))
    frames[2].info["charge"] = 0.5
    write(tmp_path / "mixed.xyz", frames)
    with pytest.raises(ValueError, match=r"mixed.xyz', frame 2: total charge 0.5 must be a whole number"):
        prepare_data(_config(tmp_path, mixed))


def test_mixed_periodicity_with_coulomb_is_a_config_error_at_data_load(tmp_path):
    frames = read(TRAIN, ":6")
    for atoms in frames:
        atoms.cell = np.eye(3) * 12.0
    frames[4].pbc = [True, True, False]  # a slab
    write(tmp_path / "slab.xyz", frames)
    coulomb = {"charge_embedding": False, "longrange": {"coulomb": {}}}
    with pytest.raises(ConfigError, match=r"slab.xyz', frame 4: pbc = \[True, True, False\] \(mixed "
                       r"periodicity.*\(model.longrange.coulomb\)"):  # fmt: skip
        prepare_data(_config(tmp_path, str(tmp_path / "slab.xyz"), coulomb))
    prepare_data(_config(tmp_path, str(tmp_path / "slab.xyz"), {"charge_embedding": False}))  # no Coulomb


def test_an_unknown_functional_in_a_config_file_names_the_file_and_key(tmp_path):
    path = tmp_path / "lr.yaml"
    path.write_text("data: {train: x.xyz}\nmodel: {longrange: {dispersion: {functional: pbe1}}}\n")
    with pytest.raises(ConfigError, match=r"lr.yaml'.*model.longrange.dispersion: functional = 'pbe1'"):
        load_config(path)
    path.write_text("data: {train: x.xyz}\nmodel: {charge_embedding: yes please}\n")
    with pytest.raises(ConfigError, match=r"model.charge_embedding = 'yes please': expected bool"):
        load_config(path)


def test_the_long_range_equivariant_example_loads_and_trains_one_epoch(tmp_path):
    cfg = load_config(ROOT / "examples" / "ethanol_longrange_equivariant.yaml")
    assert cfg["model"]["type"] == "equivariant" and cfg["model"]["longrange"]["coulomb"] is not None
    assert cfg["model"]["longrange"]["dispersion"]["functional"] == "pbe"
    cfg["output_dir"] = str(tmp_path / "run")
    cfg["data"].update(max_train_frames=6, test=None)
    cfg["model"]["equivariant"].update(channels=4, radial_hidden=[8], l_max=1)  # its layout, smaller
    cfg["training"].update(epochs=1, batch_size=3, max_time_minutes=None)
    best = load_model(Trainer(cfg, log=lambda m: None).train(), dtype="float64")
    assert best.model_type == "longrange" and best.short.model_type == "equivariant"
    out = ForceField(best)(atoms_to_graph(read(TRAIN, 0), best.cutoff), forces=False)
    assert abs(float(out[keys.CHARGES].sum())) < 1e-8 and float(out["dispersion_energy"]) < 0


def test_the_ase_calculator_recomputes_when_the_charge_or_multiplicity_changes():
    from nearsight import NearsightCalculator

    atoms = _methanol()
    atoms.calc = NearsightCalculator(_bpnn(True), on_extrapolation="ignore")
    energies = []
    for charge, multiplicity in STATES[::-1]:  # the last two differ in the multiplicity only
        atoms.info.update(charge=charge, multiplicity=multiplicity)
        energies.append(atoms.get_potential_energy())
    np.testing.assert_allclose(energies[::-1], _energies(_bpnn(True), _methanol()), atol=1e-10)
