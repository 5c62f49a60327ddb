"""Robustness of the models themselves (issue 16): float32 models used in float64, isolated atoms
at their reference energies, safe descriptor standardisation and extrapolation detection,
duplicates across the data splits."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from ase.build import molecule
from scipy.spatial.transform import Rotation

from nearsight import NearsightCalculator, keys
from nearsight.data.neighbours import atoms_to_graph, frame_to_graph
from nearsight.data.readers import read_frames
from nearsight.models.equivariant import EquivariantPotential
from nearsight.models.forcefield import ForceField, edge_vectors
from nearsight.models.io import load_model, model_from_dict, model_to_dict, save_model
from nearsight.training.config import load_config
from nearsight.training.model_setup import build_model, fit_statistics


def _tiny_equivariant() -> EquivariantPotential:
    torch.manual_seed(0)
    model = EquivariantPotential([1, 6, 8], cutoff=4.0, channels=4, l_max=2, sh_l_max=3, correlation=3,
                                 num_layers=2, radial_hidden=(8, 8), readout_hidden=4).double()  # fmt: skip
    model.set_statistics({1: -13.6, 6: -1025.3, 8: -2035.6}, 0.7, avg_num_neighbours=6.0)
    return model


def _rotation_error(calc: NearsightCalculator, atoms) -> tuple[float, float]:
    """Relative energy change and largest force error (eV/Å) under a rotation."""
    Q = Rotation.random(random_state=4).as_matrix()
    turned = atoms.copy()
    turned.positions = atoms.positions @ Q.T
    e0, f0 = calc.get_potential_energy(atoms), calc.get_forces(atoms).copy()
    e1, f1 = calc.get_potential_energy(turned), calc.get_forces(turned)
    return abs(e1 - e0) / abs(e0), float(np.abs(f1 - f0 @ Q.T).max())


def test_float32_equivariant_model_is_float64_exact_when_used_in_float64(tmp_path):
    """Constants (Clebsch-Gordan, couplings, spherical harmonics) are re-derived in the working
    dtype: a model saved in float32 and loaded in float64 is rotation invariant to 1e-12."""
    model = _tiny_equivariant()
    path = save_model(model.float(), tmp_path / "f32.pt")
    loaded = load_model(path, dtype="float64")
    fresh = _tiny_equivariant()
    for name in ("sh_coefficients", "bessel_n", "layers.0.cg", "layers.1.U_all"):
        got, exact = loaded.get_buffer(name), fresh.get_buffer(name)
        assert got.dtype == torch.float64 and torch.equal(got, exact), name
    atoms = molecule("CH3CH2OH")
    e_rel, f_err = _rotation_error(NearsightCalculator(loaded, dtype="float64"), atoms)
    assert e_rel < 1e-12 and f_err < 1e-10
    # the same float32 object handed to a float64 calculator (a deep copy cast up) too
    e_rel, f_err = _rotation_error(NearsightCalculator(model, dtype="float64"), atoms)
    assert e_rel < 1e-12 and f_err < 1e-10
    assert model.sh_coefficients.dtype == torch.float32  # the caller's model is unchanged


def test_rounded_constants_would_break_the_symmetry():
    """The check above can fail: with float32-rounded constants the error is ~1e-11 (relative)."""
    model = _tiny_equivariant()
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if buf.is_floating_point() and name.endswith(("cg", "U_all", "sh_coefficients")):
                buf.copy_(buf.float().double())
    e_rel, f_err = _rotation_error(NearsightCalculator(model, dtype="float64"), molecule("CH3CH2OH"))
    assert e_rel > 1e-12 or f_err > 1e-10


ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "examples" / "data" / "ethanol_train300.xyz"


@pytest.fixture(scope="module")
def ethanol_bpnn():
    """The demo's Behler-Parrinello architecture with statistics fitted on 100 ethanol frames
    (untrained weights: what matters here is the standardisation)."""
    cfg = load_config(ROOT / "examples" / "ethanol_bpnn.yaml")
    frames = read_frames(TRAIN, index=":100")
    torch.manual_seed(0)
    model = build_model(cfg["model"], [1, 6, 8]).double()
    graphs = [frame_to_graph(f, model.cutoff) for f in frames]
    ref = {1: -13.57, 6: -1025.28, 8: -2035.57}
    fit_statistics(model, graphs, ref, 1.0)
    return model.eval(), frames


def _two_molecules(frame, distance: float):
    a = frame.to_atoms()
    b = a.copy()
    b.positions += [distance, 0.0, 0.0]
    return a + b


def test_unseen_environments_are_not_amplified(ethanol_bpnn):
    """Two ethanol molecules d Å apart (never seen: training has one molecule): the energy of the
    pair stays within a few eV of the two separate molecules and forces stay moderate; the old
    standardisation (σ floored at 1e-8) amplified components that barely varied in training."""
    model, frames = ethanol_bpnn
    calc = NearsightCalculator(model, on_extrapolation="ignore") if _has_extrapolation_option() else (
        NearsightCalculator(model))  # fmt: skip
    single = calc.get_potential_energy(frames[0].to_atoms())
    assert int(model.feature_mask.sum()) < model.feature_mask.numel()  # constant components masked
    for d in (4.0, 4.5, 5.0, 6.0):
        pair = _two_molecules(frames[0], d)
        e, f = calc.get_potential_energy(pair), calc.get_forces(pair)
        assert np.isfinite(e) and abs(e - 2 * single) < 20.0, (d, e - 2 * single)
        assert np.abs(f).max() < 200.0, d


def _has_extrapolation_option() -> bool:
    import inspect

    return "on_extrapolation" in inspect.signature(NearsightCalculator.__init__).parameters


def test_extrapolation_is_counted_per_atom(ethanol_bpnn):
    model, frames = ethanol_bpnn
    ff = ForceField(model)
    inside = ff(atoms_to_graph(frames[5].to_atoms(), model.cutoff), forces=False)
    assert inside[keys.EXTRAPOLATION].sum() == 0  # a training frame: within the range
    pair = _two_molecules(frames[5], 4.0)
    out = ff(atoms_to_graph(pair, model.cutoff), forces=False)
    counts = out[keys.EXTRAPOLATION]
    assert counts.shape == (18,) and (counts > 0).sum() >= 2  # atoms facing the other molecule
    far = ff(atoms_to_graph(_two_molecules(frames[5], 12.0), model.cutoff), forces=False)
    assert far[keys.EXTRAPOLATION].sum() == 0  # beyond the cutoff: two known molecules
    assert keys.EXTRAPOLATION not in model.train()(_graph_with_vectors(pair, model.cutoff))
    model.eval()


def _graph_with_vectors(atoms, cutoff):
    g = atoms_to_graph(atoms, cutoff)
    g[keys.EDGE_VECTORS] = edge_vectors(
        g[keys.POSITIONS], g[keys.CELL], g[keys.BATCH], g[keys.EDGE_INDEX], g[keys.CELL_SHIFTS]
    )
    return g


def test_model_files_written_before_the_new_buffers_still_load(ethanol_bpnn, tmp_path):
    model, _ = ethanol_bpnn
    data = model_to_dict(model)
    for name in ("feature_mask", "feature_min", "feature_max"):
        del data["state_dict"][name]
    old = model_from_dict(data)
    assert torch.all(old.feature_mask == 1) and torch.isinf(old.feature_max).all()
    del data["state_dict"]["feature_std"]
    with pytest.raises(ValueError, match=r"missing keys \['feature_std'\]"):
        model_from_dict(data)


def test_duplicates_across_splits_are_counted_and_dropped_from_validation(tmp_path):
    from ase.io import read, write

    from nearsight.training.config import validate_config
    from nearsight.training.trainer import Trainer

    frames = read(TRAIN, ":24")
    write(tmp_path / "train.xyz", frames[:20])
    write(tmp_path / "valid.xyz", frames[17:20] + frames[20:22])  # 3 repeats, 2 new
    write(tmp_path / "test.xyz", frames[0:1] + frames[22:24])  # 1 repeat
    config = {
        "output_dir": str(tmp_path / "run"),
        "data": {
            "train": str(tmp_path / "train.xyz"),
            "valid": str(tmp_path / "valid.xyz"),
            "test": str(tmp_path / "test.xyz"),
        },  # fmt: skip
        "model": {"cutoff": 3.5, "n_radial": 4, "n_angular_eta": 1, "hidden": [8]},
    }
    log: list[str] = []
    trainer = Trainer(validate_config(config), log=log.append)
    trainer.prepare_data()
    assert len(trainer.valid_frames) == 2 and len(trainer.test_frames) == 3
    assert trainer.data.duplicates == {"valid": 3, "test": 1}
    assert "3 valid frame(s) repeat a training structure: removed from validation" in log
    assert "1 test frame(s) repeat a training structure: kept" in log
    config["data"]["remove_duplicates"] = False
    kept = Trainer(validate_config(config), log=lambda m: None)
    kept.prepare_data()
    assert len(kept.valid_frames) == 5 and kept.data.duplicates["valid"] == 3
    write(tmp_path / "valid.xyz", frames[3:6])
    config["data"]["remove_duplicates"] = True
    with pytest.raises(
        ValueError, match=r"every one of the 3 validation frames is also in the training data"
    ):
        Trainer(validate_config(config), log=lambda m: None).prepare_data()


def test_one_geometry_in_two_charge_states_is_not_a_duplicate():
    from nearsight.training.dataset import structure_key

    frame = read_frames(TRAIN, index=0)[0]
    other = read_frames(TRAIN, index=0)[0]
    assert structure_key(frame) == structure_key(other)
    for change in ({"total_charge": 1.0}, {"spin_multiplicity": 3.0}):
        changed = dataclasses.replace(other, **change)
        assert structure_key(changed) != structure_key(frame), change
    fielded = dataclasses.replace(other, info={"external_field": [0.0, 0.0, 0.01]})
    assert structure_key(fielded) != structure_key(frame)


ISOLATED = ROOT / "examples" / "data" / "ethanol_isolated_atoms.xyz"


@pytest.mark.parametrize(
    "model",
    [
        {"cutoff": 3.5, "n_radial": 4, "n_angular_eta": 1, "hidden": [8]},
        {"cutoff": 3.5, "descriptor": "soap", "n_max": 2, "l_max": 2, "hidden": [8]},
        {"cutoff": 3.5, "n_radial": 4, "n_angular_eta": 1, "hidden": [8], "heads": ["low", "high"]},
        {
            "type": "equivariant",
            "cutoff": 3.5,
            "equivariant": {"preset": "small", "channels": 4, "radial_hidden": [8]},
        },  # fmt: skip
    ],
    ids=["acsf", "soap", "multihead", "equivariant"],
)
def test_isolated_atoms_have_the_reference_energies_exactly(tmp_path, model):
    """E(lone atom) = E0_Z as given in data.reference_energies (dissociation limits are right),
    and two atoms beyond the cutoff add up to E0_A + E0_B."""
    from ase import Atoms
    from ase.io import read, write

    from nearsight.training.config import validate_config
    from nearsight.training.trainer import Trainer

    e0 = {
        int(a.numbers[0]): a.get_potential_energy() for a in read(ISOLATED, ":") if a.numbers[0] in (1, 6, 8)
    }
    frames = read(TRAIN, ":16")
    for k, atoms in enumerate(frames):
        atoms.info["head"] = "low" if k % 2 else "high"
    write(tmp_path / "train.xyz", frames)
    config = validate_config({
        "output_dir": str(tmp_path / "run"), "dtype": "float64", "model": model,
        "data": {"train": str(tmp_path / "train.xyz"), "reference_energies": str(ISOLATED)},
        "training": {"max_steps": 3, "batch_size": 4},
    })  # fmt: skip
    trained = load_model(Trainer(config, log=lambda m: None).train())
    calc = NearsightCalculator(trained, dtype="float64")
    for z, e in e0.items():
        assert calc.get_potential_energy(Atoms(numbers=[z], positions=[[1.0, 2.0, 3.0]])) == pytest.approx(
            e, abs=1e-9
        )
    apart = Atoms(numbers=[6, 8], positions=[[0, 0, 0], [0, 0, 3.6]])
    assert calc.get_potential_energy(apart) == pytest.approx(e0[6] + e0[8], abs=1e-9)
    molecule_error = abs(calc.get_potential_energy(frames[0]) - frames[0].get_potential_energy())
    assert molecule_error < 5.0  # a molecule near its label (3 steps of training): the mean is kept


def test_descriptors_saturate_beyond_the_training_range_only(ethanol_bpnn):
    """Training environments pass unchanged (the training data lie inside their own range); beyond
    it a component approaches hi + w smoothly (value and slope continuous at the edge)."""
    model, frames = ethanol_bpnn
    g = _graph_with_vectors(frames[3].to_atoms(), model.cutoff)
    element = model.z_to_index[g[keys.ATOMIC_NUMBERS]]
    x = model.features(g).detach()
    assert torch.equal(model.saturate(x, element), x)
    lo, hi = model.feature_min[element], model.feature_max[element]
    k = int(torch.argmax(hi[0] - lo[0]))  # a component that varies in training
    scale = torch.sqrt((model.feature_mean**2 + model.feature_std**2).mean())
    width = float(hi[0, k] - lo[0, k]) * 0.5 + 1e-3 * float(scale)
    probe = x[:1].clone().repeat(5, 1)
    probe[:, k] = hi[0, k] + torch.tensor([1e-4, 1e-3, 0.1, 10.0, 1e6]) * width
    probe.requires_grad_(True)
    out = model.saturate(probe, element[:1].repeat(5))[:, k]
    (slope,) = torch.autograd.grad(out.sum(), probe)
    beyond = (out - hi[0, k]).detach() / width
    assert beyond[0] == pytest.approx(1e-4, rel=1e-2) and slope[0, k] == pytest.approx(1.0, abs=1e-6)
    assert torch.all(beyond <= 1.0 + 1e-6) and beyond[-1] == pytest.approx(1.0, rel=1e-3)
