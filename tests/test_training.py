"""Config validation, the seed's loss, and train -> evaluate -> md end to end."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from ase.build import molecule

from nearsight import NearsightCalculator, keys
from nearsight.cli.main import main
from nearsight.data.frame import Frame
from nearsight.data.neighbours import collate, frame_to_graph
from nearsight.models.bpnn import UnknownElementError
from nearsight.models.io import load_model
from nearsight.training.config import ConfigError, load_config, validate_config
from nearsight.training.loss import EnergyForceLoss

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "examples" / "data" / "ethanol_train300.xyz"
TEST = ROOT / "examples" / "data" / "ethanol_test200.xyz"


def test_config_defaults_and_errors(tmp_path):
    cfg = validate_config({"data": {"train": "x.xyz"}})
    assert cfg["training"]["optimizer"] == "adam" and cfg["model"]["cutoff"] == 5.0
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['learning_rate'\] in section 'training'"):
        validate_config({"data": {"train": "x"}, "training": {"learning_rate": 1e-3}})
    with pytest.raises(ConfigError, match=r"training.lr = -1.0: must be positive"):
        validate_config({"data": {"train": "x"}, "training": {"lr": -1.0}})
    with pytest.raises(ConfigError, match=r"training.optimizer = 'sgd'"):
        validate_config({"data": {"train": "x"}, "training": {"optimizer": "sgd"}})
    with pytest.raises(ConfigError, match=r"training.epochs = 'ten': expected int"):
        validate_config({"data": {"train": "x"}, "training": {"epochs": "ten"}})
    with pytest.raises(ConfigError, match="data.train is required"):
        validate_config({})
    with pytest.raises(ConfigError, match="unknown top-level"):
        validate_config({"data": {"train": "x"}, "modle": {}})
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: {train: a.xyz}\nmodel: {cutoff: 0}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml.*model.cutoff = 0"):
        load_config(bad)
    good = tmp_path / "sub" / "good.yaml"
    good.parent.mkdir()
    good.write_text("data: {train: ../a.xyz}\n")
    assert load_config(good)["data"]["train"] == str(tmp_path / "sub" / ".." / "a.xyz")


def test_loss_is_the_seed_formula():
    rng = np.random.default_rng(0)
    frames = []
    for n, has_f in ((3, True), (5, True), (4, False)):
        frames.append(
            Frame(
                numbers=[1] * n,
                positions=rng.normal(size=(n, 3)) * 3,
                cell=np.zeros((3, 3)),
                pbc=[False] * 3,
                energy=float(rng.normal()),
                forces=rng.normal(size=(n, 3)) if has_f else None,
            )
        )
    batch = collate([frame_to_graph(f, 1.0) for f in frames])
    pred_e = torch.tensor(rng.normal(size=3))
    pred_f = torch.tensor(rng.normal(size=(12, 3)))
    loss = EnergyForceLoss(sigma_energy=0.3, sigma_forces=0.7)(
        {keys.ENERGY: pred_e, keys.FORCES: pred_f}, batch
    )
    expected, start = 0.0, 0
    for k, f in enumerate(frames):
        expected += ((pred_e[k].item() - f.energy) / 0.3) ** 2
        if f.forces is not None:
            diff = pred_f[start : start + f.n_atoms].numpy() - f.forces
            expected += (diff**2).sum() / (3 * f.n_atoms) / 0.7**2
        start += f.n_atoms
    assert loss.item() == pytest.approx(expected / 3, rel=1e-12)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("train")
    config = {
        "seed": 1,
        "dtype": "float64",
        "output_dir": str(out / "run"),
        "data": {"train": str(TRAIN), "max_train_frames": 40, "valid_fraction": 0.1},
        "model": {"cutoff": 4.0, "n_radial": 6, "n_angular_eta": 1, "hidden": [16]},
        "training": {"epochs": 6, "batch_size": 8, "lr": 0.005},
    }
    path = out / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, out


def test_train_evaluate_md_cli(trained, capsys):
    config, out = trained
    assert main(["train", str(config)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    model_path = Path(lines[-1])
    assert model_path.is_file() and model_path.name == "best_model.pt"
    with open(out / "run" / "training_log.csv", newline="") as fh:
        log = list(csv.DictReader(fh))
    assert float(log[-1]["train_loss"]) < float(log[0]["train_loss"])  # training lowers the loss
    for name in ("learning_curve.png", "parity_valid.png", "final_model.pt", "checkpoint.pt"):
        assert (out / "run" / name).stat().st_size > 1000
    summary = json.loads((out / "run" / "training_summary.json").read_text())
    assert summary["stopped_by"] == "epochs" and summary["steps"] == 6 * 5  # 36 frames, batch 8

    data = torch.load(model_path, weights_only=True)
    assert data["units"]["energy"] == "eV" and data["units"]["length"] == "Å"
    assert data["cutoff"] == 4.0 and data["species"] == [1, 6, 8]
    assert data["nearsight_version"]

    report = out / "metrics.json"
    assert (
        main(["evaluate", str(model_path), str(TEST), "--json", str(report), "--plot", str(out / "p.png")])
        == 0
    )
    metrics = json.loads(report.read_text())
    for key in ("n_frames", "energy_mae", "energy_rmse", "forces_mae", "forces_rmse"):
        assert key in metrics
    assert metrics["n_frames"] == 200 and 0 < metrics["forces_mae"] < metrics["forces_rmse"]
    assert (out / "p.png").stat().st_size > 1000

    traj = out / "md.traj"
    args = [
        "md",
        str(TEST),
        str(model_path),
        "--steps",
        "20",
        "--trajectory",
        str(traj),
        "--log",
        str(out / "md.log"),
    ]
    assert main(args + ["--interval", "5"]) == 0
    from ase.io import read

    assert len(read(traj, ":")) == 5  # steps 0, 5, 10, 15, 20
    assert "drift" in capsys.readouterr().out

    bad = ROOT / "tests" / "data" / "bad" / "nan_forces.xyz"
    assert main(["evaluate", str(model_path), str(bad)]) == 2
    assert "nan_forces.xyz', frame 1: forces is not finite" in capsys.readouterr().err


def test_committee_train_evaluate_md_cli(trained, capsys):
    from nearsight.training.metrics import compute_metrics, predict

    config, out = trained
    comm = out / "committee"
    train = ["train", str(config), "--output-dir", str(comm), "--members", "2"]
    assert main(train) == 0
    paths = [Path(line) for line in capsys.readouterr().out.strip().splitlines()[-2:]]
    assert paths == [comm / "member_0" / "best_model.pt", comm / "member_1" / "best_model.pt"]
    assert all((p.parent / "final_model.pt").is_file() for p in paths)
    models = [load_model(p) for p in paths]
    w = [torch.cat([q.detach().flatten() for q in m.parameters()]) for m in models]
    assert not torch.allclose(w[0], w[1])  # seeds 1 and 2: two different models
    stamps = [p.stat().st_mtime_ns for p in paths]
    assert main(train) == 0  # a rerun keeps finished members
    assert [p.stat().st_mtime_ns for p in paths] == stamps
    assert main(train + ["--resume"]) == 2
    assert "with --members, run the same command again" in capsys.readouterr().err
    assert main(["train", str(config), "--members", "0"]) == 2
    assert "at least 2 members" in capsys.readouterr().err

    report = out / "committee.json"
    assert main(["evaluate", *map(str, paths), str(TEST), "--json", str(report)]) == 0
    metrics = json.loads(report.read_text())
    assert metrics["committee_size"] == 2 and metrics["model"] == [str(p) for p in paths]
    from nearsight.data.readers import read_frames

    frames = read_frames(str(TEST))
    p0, p1 = (predict(m, frames) for m in models)
    mean = [
        {"energy": (a["energy"] + b["energy"]) / 2, "forces": (a["forces"] + b["forces"]) / 2}
        for a, b in zip(p0, p1)
    ]
    expected = compute_metrics(frames, mean)
    assert metrics["forces_mae"] == pytest.approx(expected["forces_mae"], rel=1e-9)
    assert metrics["energy_mae"] == pytest.approx(expected["energy_mae"], rel=1e-9)
    spread = np.mean([np.abs(a["forces"] - b["forces"]).mean() / 2 for a, b in zip(p0, p1)])
    assert metrics["forces_std_mean"] == pytest.approx(spread, rel=1e-9)  # |a - b| / 2 for two members

    traj = out / "committee_md.traj"
    md = [
        "md",
        str(TEST),
        *map(str, paths),
        "--steps",
        "10",
        "--trajectory",
        str(traj),
        "--log",
        str(out / "c.log"),
    ]
    assert main(md) == 0
    from ase.io import read

    assert len(read(traj, ":")) == 2  # steps 0 and 10


def test_calculator_dtypes_and_unknown_element(trained):
    config, out = trained
    model_path = out / "run" / "best_model.pt"
    if not model_path.exists():
        assert main(["train", str(config)]) == 0
    atoms = molecule("CH3CH2OH")
    e64 = NearsightCalculator(model_path, dtype="float64").get_potential_energy(atoms)
    calc32 = NearsightCalculator(model_path, dtype="float32")
    atoms.calc = calc32
    assert abs(atoms.get_potential_energy() - e64) < 1e-3 * max(1.0, abs(e64) / 1000)
    assert atoms.get_forces().dtype == np.float64
    with pytest.raises(UnknownElementError, match=r"\['N'\] not known to the model"):
        NearsightCalculator(model_path).get_potential_energy(molecule("CH3CONH2"))
    model = load_model(model_path)
    assert model.species == [1, 6, 8]


def test_bad_model_file(tmp_path):
    bad = tmp_path / "m.pt"
    torch.save({"format": "something-else"}, bad)
    with pytest.raises(ValueError, match="not a nearsight model file"):
        load_model(bad)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model(tmp_path / "missing.pt")


@pytest.mark.parametrize("name", ["ethanol_bpnn.yaml", "ethanol_soap.yaml", "ethanol_equivariant.yaml"])
def test_example_training_configs_validate(name):
    from nearsight.training.config import load_config

    cfg = load_config(ROOT / "examples" / name)
    assert Path(cfg["data"]["train"]).is_file() and cfg["training"]["batch_size"] > 0
