"""The loss as declared terms: a new term in one place (registered here, test-only) trains on an
extra per-atom label read by the readers, masks frames without it and appears in the logs; the
config's loss terms, their errors, stages and checkpoints of the loss."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from ase.io import read, write

import test_training_controls as training_controls
from nearsight import keys
from nearsight.data.frame import Frame
from nearsight.data.neighbours import collate, frame_to_graph
from nearsight.training.config import ConfigError
from nearsight.training.loss import TERMS, EnergyForceLoss, Loss, LossTerm, register_loss_term
from nearsight.training.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "examples" / "data" / "ethanol_train300.xyz"
ISOLATED = ROOT / "examples" / "data" / "ethanol_isolated_atoms.xyz"


@register_loss_term
class AtomicEnergyTerm(LossTerm):
    """Test-only: per-atom energies ε_i against a per-atom label (an energy partition)."""

    name = "test_atomic_energies"
    output = keys.ATOMIC_ENERGIES


def small_config(out: Path, data: dict, **training) -> dict:
    """The tiny ACSF model of the training-control tests on 30 frames (24 train, 6 valid)."""
    base = {"max_train_frames": None, "valid_fraction": 0.2, "reference_energies": str(ISOLATED)}
    return training_controls.small_config(out, data={**base, **data}, **training)


@pytest.fixture(scope="module")
def partitioned(tmp_path_factory) -> Path:
    """30 ethanol frames; all but every third carry a per-atom energy partition ``partition``
    (the isolated-atom energy, an equal share of the rest, and an offset per element)."""
    ref = {a.numbers[0]: a.get_potential_energy() for a in read(ISOLATED, ":")}
    frames = read(TRAIN, ":30")
    for k, atoms in enumerate(frames):
        e, f = atoms.get_potential_energy(), atoms.get_forces()
        atoms.calc = None
        atoms.info["energy"], atoms.arrays["forces"] = e, f
        if k % 3:
            base = np.array([ref[z] for z in atoms.numbers])
            offset = np.array([{1: 0.2, 6: -0.3, 8: 0.1}[z] for z in atoms.numbers])
            atoms.arrays["partition"] = base + (e - base.sum()) / len(atoms) + offset
    path = tmp_path_factory.mktemp("partition") / "ethanol_partition.xyz"
    write(path, frames)
    return path


def _partition_rmse(trainer: Trainer) -> float:
    """RMS error of the model's ε_i against the labels on the labelled validation frames."""
    batch = collate(trainer.valid_graphs)
    with torch.no_grad():
        eps = trainer.forcefield(batch, forces=False)[keys.ATOMIC_ENERGIES]
    labelled = batch["has_atomic_energies"][batch[keys.BATCH]]
    return float(((eps - batch["ref_atomic_energies"])[labelled] ** 2).mean().sqrt())


def test_a_registered_term_trains_masks_and_is_logged(tmp_path, partitioned):
    data = {"train": str(partitioned), "extra_labels": {"atomic_energies": "partition"}}
    cfg = small_config(
        tmp_path / "run",
        data,
        epochs=8,
        loss={"energy": {"sigma": 0.5}, "forces": {}, "test_atomic_energies": {"sigma": 0.1, "weight": 2.0}},
    )
    trainer = Trainer(cfg, log=lambda m: None)
    trainer.train()
    term = trainer.loss_fn.terms["test_atomic_energies"]
    assert (term.sigma, term.weight) == (0.1, 2.0) and trainer.loss_fn.test_atomic_energies_weight == 2.0
    batch = collate(trainer.train_graphs)
    assert batch["ref_atomic_energies"].shape == (int(batch[keys.N_ATOMS].sum()),)
    has = batch["has_atomic_energies"]
    assert 0 < int(has.sum()) < len(has)  # some frames lack the label: masked
    # the term trains: the same run without it leaves ε_i far from the labels
    without = Trainer(
        small_config(tmp_path / "without", data, epochs=8, sigma_energy=0.5), log=lambda m: None
    )
    without.train()
    assert _partition_rmse(trainer) < 0.5 * _partition_rmse(without)
    with open(tmp_path / "run" / "training_log.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 8 and all(float(r["valid_loss_test_atomic_energies"]) > 0 for r in rows)
    for r in rows:  # the terms add up to the validation loss
        parts = sum(float(r[f"valid_loss_{n}"]) for n in ("energy", "forces", "test_atomic_energies"))
        assert parts == pytest.approx(float(r["valid_loss"]), rel=1e-9)
    summary = json.loads((tmp_path / "run" / "training_summary.json").read_text())
    assert summary["valid_metrics"]["n_frames"] == 6


def test_missing_labels_are_masked_in_the_term():
    rng = np.random.default_rng(1)
    frames = [
        Frame(numbers=[1] * n, positions=rng.normal(size=(n, 3)) * 3, cell=np.zeros((3, 3)), pbc=False,
              energy=0.0, labels={} if n == 4 else {"atomic_energies": rng.normal(size=n)})
        for n in (3, 4, 5)
    ]  # fmt: skip
    batch = collate([frame_to_graph(f, 1.0, extra_labels={"atomic_energies": ()}) for f in frames])
    assert batch["has_atomic_energies"].tolist() == [True, False, True]
    pred = {keys.ATOMIC_ENERGIES: torch.tensor(rng.normal(size=12))}
    loss = Loss([AtomicEnergyTerm(sigma=0.5, weight=3.0)])(pred, batch)
    expected, start = 0.0, 0
    for f in frames:
        if f.labels:
            diff = pred[keys.ATOMIC_ENERGIES][start : start + f.n_atoms].numpy() - f.labels["atomic_energies"]
            expected += 3.0 * (diff**2).mean() / 0.5**2
        start += f.n_atoms
    assert loss.item() == pytest.approx(expected / 3, rel=1e-12)
    with pytest.raises(KeyError, match="needs the output 'charges'"):
        term = type("ChargeTerm", (LossTerm,), {"name": "q", "output": keys.CHARGES})(sigma=1.0)
        Loss([term])(pred, batch)


def test_loss_config_errors_name_the_term_and_key(tmp_path, partitioned):
    with pytest.raises(ConfigError, match=r"training.loss.charge: unknown loss term; registered terms: \["):
        small_config(tmp_path, {"train": "x"}, loss={"charge": {}})
    with pytest.raises(ConfigError, match=r"training.loss.energy.sigma = -1: must be a positive number"):
        small_config(tmp_path, {"train": "x"}, loss={"energy": {"sigma": -1}})
    with pytest.raises(ConfigError, match=r"training.loss and training.sigma_energy are both given"):
        small_config(tmp_path, {"train": "x"}, loss={"energy": {}}, sigma_energy=0.5)
    with pytest.raises(ConfigError, match=r"every term has weight 0"):
        small_config(tmp_path, {"train": "x"}, loss={"energy": {"weight": 0}})
    with pytest.raises(ConfigError, match=r"stages\[0\]: unknown key\(s\) \['sigma_stress'\]"):
        small_config(
            tmp_path, {"train": "x"}, loss={"energy": {}}, stages=[{"epoch": 2, "sigma_stress": 1.0}]
        )
    with pytest.raises(
        ConfigError, match=r"data.extra_labels: extra label 'charge' is not a declared output"
    ):
        small_config(tmp_path, {"train": "x", "extra_labels": {"charge": "q"}})
    # the term's label is in no training frame: an error naming the label and how to read it
    cfg = small_config(tmp_path / "run", {"train": str(TRAIN), "max_train_frames": 10},
                       loss={"energy": {}, "test_atomic_energies": {}})  # fmt: skip
    with pytest.raises(ValueError, match=r"'test_atomic_energies': no training frame carries its label "
                       r"'atomic_energies' \(with data.extra_labels"):  # fmt: skip
        Trainer(cfg, log=lambda m: None).train()


def test_explicit_terms_equal_the_legacy_keys_bit_for_bit(tmp_path):
    """loss: {energy: {sigma}, forces: {sigma}} trains exactly as sigma_energy/sigma_forces did."""
    data = {"train": str(TRAIN), "max_train_frames": 16}
    legacy = small_config(tmp_path / "legacy", data, sigma_energy=0.3, sigma_forces=0.6, max_steps=5)
    terms = small_config(tmp_path / "terms", data, loss={"energy": {"sigma": 0.3}, "forces": {"sigma": 0.6}},
                         max_steps=5)  # fmt: skip
    a, b = Trainer(legacy, log=lambda m: None), Trainer(terms, log=lambda m: None)
    a.train(), b.train()
    for (name, p), q in zip(a.model.named_parameters(), b.model.parameters()):
        assert torch.equal(p, q), name
    assert list(a.loss_fn.terms) == ["energy", "forces", "stress"] and list(b.loss_fn.terms) == [
        "energy",
        "forces",
    ]


def test_stages_set_any_terms_sigma_and_weight(tmp_path, partitioned):
    cfg = small_config(
        tmp_path / "run",
        {"train": str(partitioned), "extra_labels": {"atomic_energies": "partition"}},
        loss={"energy": {}, "test_atomic_energies": {"weight": 0}},
        stages=[{"epoch": 2, "test_atomic_energies_weight": 4.0, "sigma_test_atomic_energies": 0.2}],
        epochs=3,
    )
    log: list[str] = []
    trainer = Trainer(cfg, log=log.append)
    trainer.train()
    term = trainer.loss_fn.terms["test_atomic_energies"]
    assert (term.weight, term.sigma) == (4.0, 0.2)
    with open(tmp_path / "run" / "training_log.csv", newline="") as fh:
        values = [float(r["valid_loss_test_atomic_energies"]) for r in csv.DictReader(fh)]
    assert values[0] == 0.0 and values[1] > 0  # off in epoch 1, on from epoch 2
    assert any("stage 0" in line for line in log)


def test_loss_state_round_trips_and_reads_the_old_format():
    loss = EnergyForceLoss(sigma_energy=0.2, sigma_forces=0.4, sigma_stress=0.01, stress_weight=0.5)
    again = Loss.from_state_dict(loss.state_dict())
    assert again.state_dict() == loss.state_dict() and again.needs_stress
    old = {"sigma_energy": 0.2, "sigma_forces": 0.4, "sigma_stress": 0.01, "stress_weight": 0.5}
    assert Loss.from_state_dict(old).state_dict() == loss.state_dict()
    loss.stress_weight = 0.0
    assert not loss.needs_stress and loss.sigma_forces == 0.4
    with pytest.raises(AttributeError, match="the loss has no 'sigma_charges'"):
        loss.sigma_charges = 1.0
    with pytest.raises(ValueError, match=r"loss term\(s\) \['nope'\] are not registered"):
        Loss.from_state_dict({"terms": {"nope": {"sigma": 1.0, "weight": 1.0}}})
    assert {"energy", "forces", "stress", "test_atomic_energies"} <= set(TERMS)


def test_energy_per_atom_term_weighs_cells_of_every_size_alike():
    """((E − E_ref)/n / σ)² per structure, so a 2-atom and a 100-atom cell with the same error per
    atom add the same loss; σ defaults to the spread of the per-atom residual energies."""
    from nearsight.training.loss import EnergyPerAtomTerm, build_loss

    rng = np.random.default_rng(3)
    sizes = (2, 9, 100)
    frames = [
        Frame(numbers=[14] * n, positions=rng.uniform(0, 20, size=(n, 3)), cell=np.zeros((3, 3)), pbc=False,
              energy=-5.0 * n + 0.01 * k * n)
        for k, n in enumerate(sizes)
    ]  # fmt: skip
    batch = collate([frame_to_graph(f, 1.0, torch.float64) for f in frames])
    error_per_atom = 0.02
    pred = {keys.ENERGY: batch[keys.label_key(keys.ENERGY)] + error_per_atom * batch[keys.N_ATOMS].double()}
    term = EnergyPerAtomTerm(sigma=0.01, weight=2.0)
    per_structure = term(pred, batch)
    assert per_structure.tolist() == pytest.approx([2.0 * (error_per_atom / 0.01) ** 2] * 3, rel=1e-12)
    loss = build_loss({"loss": {"energy_per_atom": {"sigma": None, "weight": 1.0}}}, frames,
                      {"reference_energies": {14: -5.0}})  # fmt: skip
    assert loss.sigma_energy_per_atom == pytest.approx(np.std([0.0, 0.01, 0.02]), rel=1e-12)
