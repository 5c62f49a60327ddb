"""One total energy (issue 17, item 5): a short-range model with learned charges, Coulomb and D3 on
top, through the one ForceField: exact forces and stress of the total, per-term energies, the
dipole, model files, and a training run from a config with charge labels."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule
from ase.io import read, write

from nearsight import NearsightCalculator, keys
from nearsight.data.neighbours import atoms_to_graph
from nearsight.models.forcefield import ForceField
from nearsight.models.io import model_from_dict, model_to_dict
from nearsight.testing import format_report, run_all_checks
from nearsight.training.config import ConfigError, validate_config
from nearsight.training.model_setup import build_model
from nearsight.training.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "examples" / "data" / "ethanol_train300.xyz"
pytestmark = pytest.mark.usefixtures("one_thread")

LONGRANGE = {"coulomb": {"accuracy": 1e-8}, "dispersion": {"functional": "pbe"}}


def _model(kind: str, longrange: dict | None = None):
    section = {
        "cutoff": 3.5,
        "n_radial": 4,
        "n_angular_eta": 1,
        "hidden": [8],
        "longrange": longrange or LONGRANGE,
    }
    if kind == "equivariant":
        section.update(
            type="equivariant", equivariant={"preset": "small", "channels": 4, "radial_hidden": [8]}
        )
    cfg = validate_config({"data": {"train": "x"}, "model": section})
    torch.manual_seed(0)
    model = build_model(cfg["model"], [1, 8]).double().eval()
    if kind == "equivariant":  # the statistics a training run fits (N̄ = 1 would not normalise messages)
        model.short.set_statistics({1: -13.6, 8: -2035.6}, 0.5, avg_num_neighbours=6.0)
    head = model.short.charge_nets if kind == "bpnn" else model.short.charge_readout
    with torch.no_grad():  # charges of a few tenths of e, not the near-zero ones of a fresh head
        for p in head.parameters():
            p.mul_(3.0)
    return model


def _water_box() -> Atoms:
    rng = np.random.default_rng(0)
    atoms = Atoms()
    for k in range(4):
        w = molecule("H2O")
        w.positions += np.array([k % 2, k // 2 % 2, 0.5 * k]) * 2.6 + rng.normal(scale=0.05, size=(3, 3))
        atoms += w
    atoms.cell = np.diag([5.3, 5.1, 5.0]) + 0.2 * rng.normal(size=(3, 3))
    atoms.pbc = True
    return atoms


@pytest.mark.parametrize("kind", ["bpnn", "equivariant"])
def test_long_range_model_has_exact_forces_stress_and_symmetry(kind):
    """Short range + Coulomb + D3 on a molecule and on a periodic box (Ewald; D3 with its smooth
    cutoff taper)."""
    water = molecule("H2O")
    water.positions += np.random.default_rng(1).normal(scale=0.05, size=(3, 3))
    results = run_all_checks(
        _model(kind), molecule=water, rng=0, skip=("additivity", "isolated_atom", "smoothness")
    )
    results += run_all_checks(_model(kind), periodic=_water_box(), rng=0,
                              skip=("isolated_atom", "smoothness"))  # fmt: skip
    assert all(r.passed for r in results), format_report(results)
    names = {r.name.split("[")[0] for r in results}
    assert {"forces_fd", "stress_fd", "rotation", "permutation", "translation", "supercell"} <= names


def test_terms_add_up_and_the_dipole_is_sum_of_q_r():
    model = _model("bpnn")
    atoms = _water_box()
    out = ForceField(model)(atoms_to_graph(atoms, model.cutoff), forces=True, stress=True)
    parts = [out[k] for k in ("short_range_energy", "coulomb_energy", "dispersion_energy")]
    torch.testing.assert_close(sum(parts), out[keys.ENERGY], atol=1e-12, rtol=0)
    assert float(out["coulomb_energy"].abs()) > 1e-3 and float(out["dispersion_energy"]) < 0
    q = out[keys.CHARGES].detach()
    assert abs(float(q.sum())) < 1e-10  # neutral: Σq = Q = 0
    expected = (q[:, None] * torch.as_tensor(atoms.positions)).sum(0)
    torch.testing.assert_close(out[keys.DIPOLE][0].detach(), expected, atol=1e-12, rtol=0)
    calc = NearsightCalculator(model, on_extrapolation="ignore")
    assert calc.get_potential_energy(atoms) == pytest.approx(float(out[keys.ENERGY]), abs=1e-10)


def test_long_range_model_files_round_trip():
    model = _model("bpnn")
    loaded = model_from_dict(model_to_dict(model)).double().eval()
    assert loaded.get_config()["coulomb"] == {"accuracy": 1e-8}
    g = atoms_to_graph(_water_box(), model.cutoff)
    a, b = ForceField(model)(g, forces=True), ForceField(loaded)(g, forces=True)
    for key in (keys.ENERGY, keys.FORCES, keys.CHARGES, "coulomb_energy"):
        torch.testing.assert_close(a[key], b[key], atol=0, rtol=0)


def test_long_range_config_errors():
    base = {"data": {"train": "x"}}
    with pytest.raises(ConfigError, match=r"model.longrange.dispersion: functional = 'pbe1'"):
        validate_config({**base, "model": {"longrange": {"dispersion": {"functional": "pbe1"}}}})
    with pytest.raises(ConfigError, match=r"model.longrange: unknown key\(s\) \['ewald'\]"):
        validate_config({**base, "model": {"longrange": {"ewald": {}}}})
    with pytest.raises(ConfigError, match=r"model.longrange.coulomb: method = 'fmm'"):
        validate_config({**base, "model": {"longrange": {"coulomb": {"method": "fmm"}}}})


def test_training_with_charge_labels(tmp_path):
    """Energies, forces and (in two thirds of the frames) charge labels train a Coulomb model; the
    charge term is logged and the predicted charges sum to each frame's total charge."""
    frames = read(TRAIN, ":18")
    for k, atoms in enumerate(frames):
        e, f = atoms.get_potential_energy(), atoms.get_forces()
        atoms.calc = None
        atoms.info["energy"], atoms.arrays["forces"] = e, f
        if k % 3:
            atoms.arrays["mbis"] = np.array([{1: 0.1, 6: -0.1, 8: -0.4}[z] for z in atoms.numbers]) + (
                0.2 / len(atoms)
            )  # a neutral molecule: Σ = 0
    write(tmp_path / "train.xyz", frames)
    cfg = validate_config({
        "seed": 0, "output_dir": str(tmp_path / "run"),
        "data": {"train": str(tmp_path / "train.xyz"), "extra_labels": {"charges": "mbis"}, "valid_fraction": 0.2},
        "model": {"cutoff": 3.5, "n_radial": 4, "n_angular_eta": 1, "hidden": [8],
                  "longrange": {"coulomb": {"accuracy": 1e-4}}},
        "training": {"epochs": 3, "batch_size": 4, "loss": {"energy": {}, "forces": {}, "charges": {"sigma": 0.1}}},
    })  # fmt: skip
    trainer = Trainer(cfg, log=lambda m: None)
    trainer.train()
    with open(tmp_path / "run" / "training_log.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 3 and all(float(r["valid_loss_charges"]) > 0 for r in rows)
    model = trainer.model.eval()
    out = ForceField(model)(atoms_to_graph(frames[0], model.cutoff), forces=False)
    assert abs(float(out[keys.CHARGES].sum())) < 1e-6 and "coulomb_energy" in out
    # nearsight evaluate reports the charge error where frames carry charge labels
    import json

    from nearsight.cli.main import main

    report = tmp_path / "metrics.json"
    argv = [
        "evaluate",
        str(tmp_path / "run" / "best_model.pt"),
        str(tmp_path / "train.xyz"),
        "--charges-key",
        "mbis",
    ]
    assert main([*argv, "--json", str(report)]) == 0
    metrics = json.loads(report.read_text())
    assert metrics["n_charges"] == 12 and 0 < metrics["charges_mae"] < 1.0


def test_ase_calculator_returns_charges_dipole_and_terms():
    from ase.calculators.calculator import PropertyNotImplementedError

    model = _model("bpnn")
    atoms = molecule("H2O")
    atoms.calc = NearsightCalculator(model, on_extrapolation="ignore")
    q = atoms.get_charges()
    assert q.shape == (3,) and abs(q.sum()) < 1e-10
    np.testing.assert_allclose(atoms.get_dipole_moment(), (q[:, None] * atoms.positions).sum(0), atol=1e-12)
    r = atoms.calc.results
    assert r["energy"] == pytest.approx(
        r["short_range_energy"] + r["coulomb_energy"] + r["dispersion_energy"]
    )
    plain = molecule("H2O")
    plain.calc = NearsightCalculator(model.short, on_extrapolation="ignore")
    plain.get_charges()  # the short-range model alone still has its charge head
    no_head = build_model(
        validate_config({"data": {"train": "x"}, "model": {"cutoff": 3.5, "hidden": [8]}})["model"], [1, 8]
    )
    plain.calc = NearsightCalculator(no_head, on_extrapolation="ignore")
    with pytest.raises(PropertyNotImplementedError, match="predicts no charges"):
        plain.get_charges()


def test_born_effective_charges_obey_the_sum_rule_and_match_finite_differences():
    from nearsight.longrange.response import born_effective_charges

    model = _model("bpnn")  # species H, O
    atoms = molecule("H2O") + molecule("H2O")
    atoms.positions[3:] += [2.8, 0.3, -0.2]
    z = born_effective_charges(model, atoms)
    assert z.shape == (6, 3, 3)
    np.testing.assert_allclose(z.sum(0), 0.0, atol=1e-10)  # acoustic sum rule (neutral)

    def dipole(a: Atoms) -> np.ndarray:
        out = ForceField(model)(atoms_to_graph(a, model.cutoff), forces=False)
        return out[keys.DIPOLE][0].detach().numpy()

    h = 1e-5
    for i, beta in ((0, 2), (4, 0)):
        plus, minus = atoms.copy(), atoms.copy()
        plus.positions[i, beta] += h
        minus.positions[i, beta] -= h
        np.testing.assert_allclose(z[i, :, beta], (dipole(plus) - dipole(minus)) / (2 * h), atol=1e-7)
    assert (
        np.abs(
            z
            - np.einsum(
                "i,ab->iab",
                ForceField(model)(atoms_to_graph(atoms, model.cutoff))[keys.CHARGES].detach().numpy(),
                np.eye(3),
            )
        ).max()
        > 1e-3
    )  # charges respond to geometry
    with pytest.raises(ValueError, match="predicts no dipole"):
        born_effective_charges(model.short, atoms)
