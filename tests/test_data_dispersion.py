"""``data.dispersion`` (issue 17, item 4): D3(BJ) subtracted from energy, force and stress labels at
load time, the saved model = short range + the same D3, metrics on the original labels, resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule

from nearsight import keys
from nearsight.data.frame import Frame
from nearsight.data.neighbours import atoms_to_graph, frame_to_graph
from nearsight.data.readers import read_frames
from nearsight.longrange import Dispersion
from nearsight.longrange.model import LongRangePotential
from nearsight.models.forcefield import ForceField
from nearsight.models.io import load_model
from nearsight.training.checkpoint import load_checkpoint
from nearsight.training.config import ConfigError, validate_config
from nearsight.training.dataset import prepare_data
from nearsight.training.dispersion import DISPERSION_INFO, subtract_dispersion, with_dispersion
from nearsight.training.metrics import compute_metrics
from nearsight.training.trainer import Trainer
from nearsight.training.validation import evaluate
from training_helpers import TINY_ACSF

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "examples" / "data" / "ethanol_train300.xyz"
TEST = ROOT / "examples" / "data" / "ethanol_test200.xyz"
D3 = {"functional": "pbe"}
pytestmark = pytest.mark.usefixtures("one_thread")


def _d3_reference(frame: Frame, settings: dict, h: float = 1e-5) -> tuple[float, np.ndarray, np.ndarray]:
    """E_D3, −∂E/∂R (autograd on the positions) and σ = (1/V) ∂E/∂ε (central differences of the
    energy under the strain R → R(I + ε), cell → cell(I + ε)) from the Dispersion module alone."""
    d3 = Dispersion(**settings)

    def energy(positions: torch.Tensor, cell: np.ndarray) -> torch.Tensor:
        graph = frame_to_graph(dataclass_with(frame, cell=cell), 1.0, torch.float64, labels=False)
        graph[keys.POSITIONS] = positions
        return d3(graph).sum()

    positions = torch.tensor(frame.positions, requires_grad=True)
    e = energy(positions, frame.cell)
    (grad,) = torch.autograd.grad(e, positions)
    stress = np.zeros((3, 3))
    if frame.pbc.any():
        for a in range(3):
            for b in range(3):
                values = []
                for sign in (1, -1):
                    strain = np.eye(3)
                    strain[a, b] += sign * h
                    pos = torch.tensor(frame.positions @ strain)
                    values.append(float(energy(pos, frame.cell @ strain)))
                stress[a, b] = (values[0] - values[1]) / (2 * h) / abs(np.linalg.det(frame.cell))
        stress = 0.5 * (stress + stress.T)
    return float(e.detach()), -grad.numpy(), stress


def dataclass_with(frame: Frame, **changes) -> Frame:
    import dataclasses

    return dataclasses.replace(frame, **changes)


def _water_box_frame(rng: np.random.Generator) -> Frame:
    atoms = Atoms()
    for k in range(4):
        w = molecule("H2O")
        w.positions += np.array([k % 2, k // 2 % 2, 0.5 * k]) * 2.6 + rng.normal(scale=0.05, size=(3, 3))
        atoms += w
    atoms.cell = np.diag([5.3, 5.1, 5.0]) + 0.2 * rng.normal(size=(3, 3))
    atoms.pbc = True
    n = len(atoms)
    return Frame.from_atoms(
        atoms,
        energy=-150.0,
        forces=rng.normal(size=(n, 3)),
        stress=rng.normal(scale=0.01, size=(3, 3)),
        source="box.xyz",
    )


def test_subtraction_is_exact_for_energy_forces_and_stress():
    """label − D3 with D3 from the Dispersion module directly: energy and forces to round-off,
    the periodic box's stress to the finite-difference error; frames without a label keep None."""
    rng = np.random.default_rng(0)
    settings = {"functional": "b3lyp", "taper": 1.5}
    frames = read_frames(TRAIN, index=":3") + [_water_box_frame(rng)]
    frames[1] = dataclass_with(frames[1], forces=None)
    new = subtract_dispersion(frames, settings)
    for old, sub in zip(frames, new, strict=True):
        e, f, s = _d3_reference(old, settings)
        assert e < 0 and sub.info[DISPERSION_INFO] == pytest.approx(e, abs=1e-12)
        assert sub.energy == pytest.approx(old.energy - e, abs=1e-10)
        if old.forces is None:
            assert sub.forces is None
        else:
            np.testing.assert_allclose(sub.forces, old.forces - f, atol=1e-12, rtol=0)
            assert np.abs(f).max() > 1e-4  # D3 forces are not negligible: the test can fail
        if old.stress is None:
            assert sub.stress is None
        else:
            assert np.abs(s).max() > 1e-5
            np.testing.assert_allclose(sub.stress, old.stress - s, atol=1e-9, rtol=0)
        assert old.info.get(DISPERSION_INFO) is None  # the original frames are untouched


def test_prepare_data_subtracts_every_split_and_keeps_the_originals():
    cfg = validate_config(
        {"data": {"train": str(TRAIN), "test": str(TEST), "max_train_frames": 6, "dispersion": D3}}
    )
    data = prepare_data(cfg)
    for split in ("train", "valid", "test"):
        frames, originals = getattr(data, split), data.original[split]
        assert len(frames) == len(originals) > 0
        e_d3 = [f.info[DISPERSION_INFO] for f in frames]
        np.testing.assert_allclose(
            [f.energy for f in frames], [o.energy - e for o, e in zip(originals, e_d3)], atol=1e-10
        )
        assert all(-0.5 < e < -0.01 for e in e_d3)  # ethanol: about −0.1 eV


def small_config(out: Path, data: dict | None = None, **training) -> dict:
    """A tiny ACSF model on 12 ethanol frames (10 train, 2 valid) and 4 test frames."""
    return validate_config(
        {
            "seed": 3,
            "output_dir": str(out),
            "data": {"train": str(TRAIN), "max_train_frames": 10, "valid_fraction": 0.15, **(data or {})},
            "model": {**TINY_ACSF},
            "training": {"epochs": 2, "batch_size": 4, "lr": 0.01, "log_every": 100, **training},
        }
    )


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> tuple[Path, Path]:
    """12 training and 4 test frames of ethanol."""
    from ase.io import read, write

    folder = tmp_path_factory.mktemp("d3")
    write(folder / "train.xyz", read(TRAIN, ":12"))
    write(folder / "test.xyz", read(TEST, ":4"))
    return folder / "train.xyz", folder / "test.xyz"


def test_trained_model_file_is_short_range_plus_the_same_d3(tmp_path, files):
    frames_file, test_file = files
    log: list[str] = []
    cfg = small_config(tmp_path / "d3", {"train": str(frames_file), "test": str(test_file), "dispersion": D3})
    trainer = Trainer(cfg, log=log.append)
    trainer.train()
    assert any("mean |E_D3|" in line and "eV/atom" in line for line in log)
    best = load_model(tmp_path / "d3" / "best_model.pt")
    assert isinstance(best, LongRangePotential) and best.coulomb is None
    assert best.get_config()["dispersion"] == D3
    plain = Trainer(
        small_config(tmp_path / "plain", {"train": str(frames_file)}, max_steps=1), log=lambda m: None
    )
    plain.train()
    short_only = load_model(tmp_path / "plain" / "best_model.pt")
    assert type(best.short) is type(short_only) and best.short.get_config() == short_only.get_config()
    assert {k.removeprefix("short.") for k in best.state_dict()} == set(short_only.state_dict())
    # energy of a frame = short-range part + D3 of the Dispersion module itself
    atoms = molecule("CH3CH2OH")
    graph = atoms_to_graph(atoms, best.cutoff)
    out = ForceField(best)(graph, forces=True)
    e_short = float(ForceField(best.short)(graph, forces=False)[keys.ENERGY].detach())
    e_d3 = float(Dispersion(**D3)(atoms_to_graph(atoms, best.cutoff)).sum())
    assert float(out[keys.ENERGY].detach()) == pytest.approx(e_short + e_d3, abs=1e-10)
    assert float(out["dispersion_energy"].detach()) == pytest.approx(e_d3, abs=1e-12) and e_d3 < -0.05
    # the checkpoint holds the model being trained: the short-range model alone
    checkpoint = load_checkpoint(tmp_path / "d3" / "checkpoint.pt")
    assert checkpoint["model"]["model_type"] == short_only.model_type
    # test metrics of the summary: the full model against the ORIGINAL labels
    summary = json.loads((tmp_path / "d3" / "training_summary.json").read_text())
    originals = read_frames(test_file)
    graphs = [frame_to_graph(f, best.cutoff) for f in originals]
    _, _, preds = evaluate(ForceField(best), trainer.loss_fn, graphs, False, 8)
    expected = compute_metrics(originals, preds)
    for name in ("energy_mae", "forces_mae"):
        assert summary["test_metrics"][name] == pytest.approx(expected[name], rel=1e-10)
    subtracted = trainer.data.test
    wrong = compute_metrics(subtracted, preds)  # full model vs D3-free labels: off by |E_D3|
    assert abs(wrong["energy_mae"] - expected["energy_mae"]) > 1e-3
    # nearsight evaluate: the model file on the original labels of a file, the same numbers
    from nearsight.cli.main import main

    report = tmp_path / "metrics.json"
    assert (
        main(["evaluate", str(tmp_path / "d3" / "best_model.pt"), str(test_file), "--json", str(report)]) == 0
    )
    assert json.loads(report.read_text())["energy_mae"] == pytest.approx(expected["energy_mae"], rel=1e-8)
    # plateau roll-back reads the best model file back into the short-range model being trained
    trainer._roll_back(epoch=3, best_epoch=summary["best_epoch"])
    for name, p in trainer.model.named_parameters():
        assert torch.equal(p.detach(), best.short.state_dict()[name]), name


def test_resume_after_a_stop_equals_the_uninterrupted_run(tmp_path, files):
    frames_file = files[0]
    n = 4  # mid-way through epoch 2 (3 steps per epoch)
    data = {"train": str(frames_file), "dispersion": D3}
    whole = small_config(tmp_path / "whole", data, epochs=3, max_steps=2 * n, ema_decay=0.9)
    Trainer(whole, log=lambda m: None).train()
    part = small_config(tmp_path / "part", data, epochs=3, max_steps=n, ema_decay=0.9)
    Trainer(part, log=lambda m: None).train()
    part["training"]["max_steps"] = 2 * n
    Trainer(part, log=lambda m: None, resume=True).train()
    a, b = (load_checkpoint(tmp_path / d / "checkpoint.pt") for d in ("whole", "part"))
    assert a["loop"]["global_step"] == b["loop"]["global_step"] == 2 * n
    for name, value in a["model"]["state_dict"].items():
        assert torch.equal(value, b["model"]["state_dict"][name]), name
    best = [load_model(tmp_path / d / "best_model.pt") for d in ("whole", "part")]
    assert all(isinstance(m, LongRangePotential) and m.dispersion is not None for m in best)
    for name, value in best[0].state_dict().items():
        assert torch.equal(value, best[1].state_dict()[name]), name
    changed = small_config(tmp_path / "part", {**data, "dispersion": {"functional": "pbe0"}}, epochs=3)
    with pytest.raises(Exception, match="config differs"):
        Trainer(changed, resume=True)


def test_fine_tuning_a_model_with_d3_trains_its_short_range_part(tmp_path, files):
    frames_file = files[0]
    pre = small_config(tmp_path / "pre", {"train": str(frames_file), "dispersion": D3}, max_steps=2)
    Trainer(pre, log=lambda m: None).train()
    cfg = small_config(tmp_path / "tuned", {"train": str(frames_file), "dispersion": D3}, max_steps=2)
    cfg["model"]["init_from"] = str(tmp_path / "pre" / "best_model.pt")
    trainer = Trainer(cfg, log=lambda m: None)
    trainer.train()
    assert not isinstance(trainer.model, LongRangePotential)  # D3 stripped: labels are without it
    tuned = load_model(tmp_path / "tuned" / "best_model.pt")
    assert isinstance(tuned, LongRangePotential) and tuned.get_config()["dispersion"] == D3


def test_with_dispersion_keeps_a_coulomb_term_and_refuses_a_second_d3():
    cfg = validate_config(
        {"data": {"train": "x"}, "model": {"cutoff": 3.0, "hidden": [4], "longrange": {"coulomb": {}}}}
    )
    from nearsight.training.model_setup import build_model

    model = build_model(cfg["model"], [1, 8])
    full = with_dispersion(model, D3)
    assert full.coulomb_config == {} and full.dispersion_config == D3 and full.short is model.short
    with pytest.raises(ValueError, match="counted twice"):
        with_dispersion(full, D3)


def test_config_errors_name_the_key():
    base = {"train": "x"}
    with pytest.raises(ConfigError, match=r"data.dispersion: functional = 'pbe1' has no D3\(BJ\) parameters"):
        validate_config({"data": {**base, "dispersion": {"functional": "pbe1"}}})
    with pytest.raises(ConfigError, match=r"data.dispersion: unknown key\(s\) \['s6'\]"):
        validate_config({"data": {**base, "dispersion": {"functional": "pbe", "s6": 1.0}}})
    with pytest.raises(ConfigError, match=r"data.dispersion: functional is required"):
        validate_config({"data": {**base, "dispersion": {"taper": 1.0}}})
    with pytest.raises(ConfigError, match=r"data.dispersion = True: expected"):
        validate_config({"data": {**base, "dispersion": True}})
    with pytest.raises(ConfigError, match=r"data.dispersion: parameters: unknown key 'a3'"):
        validate_config({"data": {**base, "dispersion": {"functional": "pbe", "parameters": {"a3": 1.0}}}})
    both = {"data": {**base, "dispersion": D3}, "model": {"longrange": {"dispersion": D3}}}
    with pytest.raises(ConfigError, match=r"data.dispersion: model.longrange.dispersion is also given"):
        validate_config(both)
    ok = validate_config({"data": {**base, "dispersion": D3}, "model": {"longrange": {"coulomb": {}}}})
    assert ok["data"]["dispersion"] == D3
