"""What a materials user reads (issue 23): the per-atom energy loss trains on cells of different
sizes, stress errors in GPa beside eV/Å³, and errors per ``config_type`` in ``nearsight evaluate``
and in ``training_summary.json``."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write

from crystal_helpers import stillinger_weber_si
from nearsight import units
from nearsight.cli.main import main
from nearsight.training.config import validate_config
from nearsight.training.trainer import Trainer
from training_helpers import TINY_ACSF


def silicon_cells(path: Path, seed: int) -> Path:
    """Stillinger-Weber labelled Si cells of two config types: rattled bulk (8 atoms) and strained
    primitive-ish cells (16 atoms), with energies, forces and stress."""
    rng = np.random.default_rng(seed)
    calc = stillinger_weber_si()
    frames = []
    for k in range(12):
        if k % 2:
            atoms = bulk("Si", "diamond", a=5.43, cubic=True)
            atoms.info["config_type"] = "bulk"
        else:
            atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat((2, 1, 1))
            strain = np.eye(3) + np.diag(rng.uniform(-0.03, 0.03, 3))
            atoms.set_cell(atoms.cell @ strain, scale_atoms=True)
            atoms.info["config_type"] = "strained"
        atoms.rattle(0.05, seed=int(rng.integers(1 << 30)))
        atoms.calc = calc
        e, f, s = atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()
        atoms.calc = SinglePointCalculator(atoms, energy=e, forces=f, stress=s)
        frames.append(atoms)
    write(path, frames)
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("si")
    train = silicon_cells(tmp / "train.extxyz", 0)
    test = silicon_cells(tmp / "test.extxyz", 1)
    config = {
        "seed": 0,
        "output_dir": str(tmp / "run"),
        "data": {"train": str(train), "valid_fraction": 0.25},
        "model": {**TINY_ACSF, "cutoff": 3.8},
        "training": {
            "epochs": 3,
            "batch_size": 3,
            "lr": 0.01,
            "log_every": 100,
            "loss": {"energy_per_atom": {}, "forces": {}, "stress": {"weight": 1.0}},
        },
    }
    lines: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # least-squares reference energies of one element
        model = Trainer(validate_config(config), log=lines.append).train()
    assert any("energy_per_atom (σ" in line for line in lines)  # the term and its σ are logged
    return model, test


def test_evaluate_reports_stress_in_gpa_and_errors_per_config_type(trained, tmp_path, capsys):
    model, test = trained
    out = tmp_path / "metrics.json"
    assert main(["evaluate", str(model), str(test), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    metrics = json.loads(out.read_text())
    assert metrics["stress_mae_GPa"] == pytest.approx(metrics["stress_mae"] / units.GPa, rel=1e-12)
    assert f"{metrics['stress_mae_GPa']:.3f} GPa" in printed
    by_type = metrics["by_config_type"]
    assert set(by_type) == {"bulk", "strained"}
    assert by_type["bulk"]["n_frames"] == by_type["strained"]["n_frames"] == 6
    # the per-type errors make up the whole: frame-weighted per-atom energy MAE
    whole = sum(m["energy_per_atom_mae"] * m["n_frames"] for m in by_type.values()) / 12
    assert whole == pytest.approx(metrics["energy_per_atom_mae"], rel=1e-12)
    rows = [
        line for line in printed.splitlines() if line.startswith("  bulk") or line.startswith("  strained")
    ]
    assert len(rows) == 2


def test_training_summary_has_gpa_and_config_types(trained):
    model, _ = trained
    summary = json.loads((model.parent / "training_summary.json").read_text())
    valid = summary["valid_metrics"]
    assert valid["stress_mae_GPa"] == pytest.approx(valid["stress_mae"] / units.GPa, rel=1e-12)


def test_log_names_its_clock_and_reports_per_atom_energy_and_gpa(trained):
    import csv

    model, _ = trained
    with open(model.parent / "training_log.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert "wall_time_s" in rows[0] and "time_s" not in rows[0]  # the run measured wall time
    assert all(
        float(r["valid_stress_mae_GPa"]) > 0 and float(r["valid_energy_per_atom_mae"]) > 0 for r in rows
    )


def test_a_log_of_older_columns_is_rewritten_on_resume(tmp_path):
    import csv

    from nearsight.training.log import TrainingLog

    old = tmp_path / "training_log.csv"
    old.write_text("epoch,step,train_loss,valid_loss,valid_energy_mae,valid_forces_mae,lr,time_s,valid_loss_energy\n"
                   "1,3,0.5,0.4,0.01,0.1,0.001,2.0,0.3\n2,6,0.4,0.3,0.01,0.1,0.001,4.0,0.2\n")  # fmt: skip
    log = TrainingLog(tmp_path, ["energy"], tensorboard=False, enabled=True, clock="cpu")
    log.start(6, fresh=False, epoch=2)  # the resumed run writes epoch 2 again
    log.row(2, 6, 0.4, 0.3, {"energy_mae": 0.01, "energy_per_atom_mae": 0.001, "forces_mae": 0.1,
                             "loss_energy": 0.2}, 0.001, 4.5)  # fmt: skip
    with open(old, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert rows[0]["valid_forces_mae"] == "0.1" and rows[0]["cpu_time_s"] == "2.0"
    assert rows[1]["cpu_time_s"] == "4.5" and rows[1]["valid_stress_mae_GPa"] == ""
