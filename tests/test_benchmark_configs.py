"""The nearsight config that benchmarks/ethanol_vs_mace_training.py builds from its options."""

from __future__ import annotations

import sys
from argparse import Namespace
from pathlib import Path

import pytest
import torch

from nearsight.training.config import validate_config

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import ethanol_vs_mace_training as bench  # noqa: E402


def _config(tmp_path, override: str | None):
    path = None
    if override is not None:
        path = tmp_path / "over.yaml"
        path.write_text(override)
    args = Namespace(seed=0, size="small", minutes=7.0, nearsight_config=path and str(path))
    data = ROOT / "examples" / "data"
    split = {"train": data / "ethanol_train300.xyz", "valid": data / "ethanol_test200.xyz"}
    return bench.nearsight_config(args, split, data, tmp_path / "ns")


def test_overrides_change_seed_and_training_but_not_the_budget_or_split(tmp_path):
    cfg = _config(tmp_path, "seed: 3\ntraining: {lr: 0.005, max_time_minutes: 99}\n")
    assert cfg["seed"] == 3 and cfg["training"]["lr"] == 0.005
    assert cfg["training"]["max_time_minutes"] == 7.0 and cfg["training"]["time_limit_clock"] == "cpu"
    assert cfg["data"]["train"].endswith("ethanol_train300.xyz")
    assert cfg["model"]["equivariant"]["preset"] == "small"
    validate_config(cfg, source="test")
    assert bench.hidden_l_max(cfg) == cfg["model"]["equivariant"]["l_max"]  # the example's, for MACE
    assert bench.hidden_l_max(_config(tmp_path, "model: {equivariant: {l_max: 1}}\n")) == 1
    assert bench.mace_max_L(["--max_L=1", "--lr=0.01", "--max_L=2"]) == 2  # --mace-extra comes last
    assert bench.mace_max_L(["--max_L", "3"]) == 3 and bench.mace_max_L([]) == 1
    plain = _config(tmp_path, "sigma_energy: 3.0\n")  # a bare mapping is the training section
    assert plain["seed"] == 0 and plain["training"]["sigma_energy"] == 3.0


def test_overrides_outside_training_model_and_seed_are_refused(tmp_path):
    with pytest.raises(SystemExit, match="only training keys, model.equivariant and seed"):
        _config(tmp_path, "seed: 1\ndata: {train: other.xyz}\n")


def test_learning_curve_committee_refuses_resume(capsys):
    import ethanol_equivariant

    with pytest.raises(SystemExit):
        ethanol_equivariant.main(["--members", "2", "--resume"])
    assert "--members trains each missing member from scratch" in capsys.readouterr().err


def test_training_step_benchmark_runs_on_the_bundled_data(tmp_path, monkeypatch, capsys):
    import json

    import training_step

    monkeypatch.setenv("NEARSIGHT_DATA", str(tmp_path))  # no rMD17 here: the example's own frames
    assert training_step.main(["--batch-sizes", "1", "2", "--steps", "1"]) == 0
    rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["rows"]
    assert [r["batch_size"] for r in rows] == [1, 2] and all(r["cpu_ms_per_step"] > 0 for r in rows)


def test_accuracy_matched_nearsight_side_is_the_example_model():
    """vs_mace.py --sizes rmd17 times the committee whose accuracy RESULTS reports: the example's model."""
    import vs_mace
    import yaml

    from nearsight.models.equivariant import PRESETS

    example = yaml.safe_load((ROOT / "examples" / "ethanol_equivariant.yaml").read_text())["model"]
    eq = {**PRESETS[example["equivariant"]["preset"]], **example["equivariant"]}
    spec = vs_mace.MATCHED["rmd17"]["nearsight"]
    assert example["cutoff"] == 5.0 and spec["members"] == 4
    for key in ("channels", "l_max", "element_mix"):
        assert spec[key] == eq[key], key
    before = torch.get_default_dtype(), torch.get_num_threads()
    try:  # the worker sets the default dtype and thread count of its (normally separate) process
        row = vs_mace.worker("nearsight", "ethanol", "float64", "rmd17", 1, 0.0)
    finally:
        torch.set_default_dtype(before[0])
        torch.set_num_threads(before[1])
    assert row["n_atoms"] == 9 and row["finite"] and row["seconds"] > 0


def test_silicon_benchmark_gives_both_codes_the_same_loss_and_model_size(tmp_path):
    """benchmarks/si_vs_mace_training.py: the example silicon config validates, MACE's weights are
    1/σ² of the config's energy-per-atom, force and stress terms (relative to forces), and MACE gets
    the config's cutoff, architecture (l_max, spherical harmonics, correlation, layers), batch size
    and learning rate."""
    import si_vs_mace_training as si

    data = ROOT / "examples" / "data"
    split = {"train": data / "ethanol_train300.xyz", "valid": data / "ethanol_test200.xyz"}
    args = Namespace(seed=0, size="small", minutes=5.0, config=str(ROOT / "examples" / "si_equivariant.yaml"),
                     mace_scheduler_patience="auto", mace_extra="", valid_fraction=0.1)  # fmt: skip
    cfg = si.nearsight_config(args, split, tmp_path / "ns")
    validate_config(cfg, source="test")
    assert cfg["training"]["max_time_minutes"] == 5.0 and cfg["training"]["time_limit_clock"] == "cpu"
    loss = cfg["training"]["loss"]
    w_e, w_f, w_s = si.loss_weights(cfg)
    s_e, s_f, s_s = (loss[k]["sigma"] for k in ("energy_per_atom", "forces", "stress"))
    assert w_f == 1.0 and w_e == pytest.approx((s_f / s_e) ** 2) and w_s == pytest.approx((s_f / s_s) ** 2)
    argv = si.mace_arguments(args, cfg, split, tmp_path / "mace")
    assert f"--r_max={float(cfg['model']['cutoff'])}" in argv and "--loss=stress" in argv
    assert f"--max_L={cfg['model']['equivariant']['l_max']}" in argv
    assert f"--batch_size={cfg['training']['batch_size']}" in argv and f"--lr={cfg['training']['lr']}" in argv
    eq = cfg["model"]["equivariant"]
    assert f"--num_interactions={eq['num_layers']}" in argv and f"--max_ell={eq['sh_l_max']}" in argv
    assert f"--correlation={eq['correlation']}" in argv and "--radial_MLP=[64, 64, 64]" in argv
    # the rest from the preset and the model's defaults
    cfg["model"]["equivariant"] = {"preset": "small", "num_layers": 1, "sh_l_max": 2}
    argv = si.mace_arguments(args, cfg, split, tmp_path / "mace")
    assert "--num_interactions=1" in argv and "--max_ell=2" in argv and "--correlation=3" in argv
    assert "--num_radial_basis=8" in argv


def test_silicon_benchmark_without_held_out_cells_validates_on_the_training_cells(tmp_path):
    """``--valid-fraction 0`` (train on all 214 cells, as the published fits did): the validation
    cells are training cells too, so the trainer must keep them rather than drop them all."""
    import si_vs_mace_training as si

    from nearsight.training.dataset import prepare_data

    data = ROOT / "examples" / "data" / "ethanol_train300.xyz"
    split = {"train": data, "valid": data}
    cfg = si.nearsight_config(
        Namespace(seed=0, size="small", minutes=1.0, config=str(ROOT / "examples" / "si_bpnn.yaml"),
                  valid_fraction=0.0),
        split, tmp_path / "ns",
    )  # fmt: skip
    cfg["data"].update(energy_key="energy", forces_key="forces")
    del cfg["data"]["stress_key"], cfg["training"]["loss"]["stress"]  # molecules: no stress labels
    prepared = prepare_data(validate_config(cfg, source="test"))
    assert len(prepared.train) == len(prepared.valid) == 300
    cfg["data"]["remove_duplicates"] = True  # what the split would do without the flag
    with pytest.raises(ValueError, match="every one of the 300 validation frames"):
        prepare_data(validate_config(cfg, source="test"))


@pytest.mark.parametrize("example", ["examples/si_equivariant.yaml", "benchmarks/configs/si_bpnn_acsf.yaml"])
def test_every_built_in_silicon_ablation_variant_is_a_valid_config(example):
    import si_recipe_ablation as ablation
    import yaml

    base = yaml.safe_load((ROOT / example).read_text())
    kind = ablation.model_type(base)
    assert kind == ("equivariant" if "equivariant" in example else "bpnn")
    for name, overrides in ablation.VARIANTS[kind].items():
        cfg = ablation.apply(base, overrides)
        validate_config(cfg, source=f"{example}:{name}")
        for dotted, value in overrides.items():  # the change landed where it says
            node = cfg
            for key in dotted.split("."):
                node = node[key]
            assert node == value, (name, dotted)
    assert base == yaml.safe_load((ROOT / example).read_text())  # apply copies


def test_silicon_ablation_variant_syntax_and_errors():
    import argparse

    import si_recipe_ablation as ablation

    name, over = ablation.parse_variant("wide:model.hidden=[64, 64]; training.lr=0.003")
    assert name == "wide" and over == {"model.hidden": [64, 64], "training.lr": 0.003}
    assert ablation.parse_variant("plain") == ("plain", {})
    for bad in (":training.lr=1", "x:training.lr"):
        with pytest.raises(argparse.ArgumentTypeError):
            ablation.parse_variant(bad)
    with pytest.raises(KeyError, match="no section 'nowhere'"):
        ablation.apply({"training": {}}, {"nowhere.lr": 1.0})


def test_spice_benchmark_keeps_the_local_model_local_under_longrange_overrides():
    import longrange_spice as spice
    from ethanol_equivariant import apply_overrides

    over = ["training.lr=0.001", "model.longrange.coulomb.widths={H: 1.0, C: 1.0}"]
    configs = {}
    for variant in ("local", "latent"):
        cfg = spice.config(variant, "equivariant", 1.0, Path("out"), 0)
        apply_overrides(cfg, spice.variant_overrides(variant, over))
        configs[variant] = cfg
    assert "longrange" not in configs["local"]["model"] and configs["local"]["training"]["lr"] == 0.001
    assert configs["latent"]["model"]["longrange"]["coulomb"]["widths"] == {"H": 1.0, "C": 1.0}
    assert configs["latent"]["training"]["lr"] == 0.001


def test_silicon_md_checks_see_a_perfect_and_a_broken_crystal():
    import numpy as np
    import si_md_rdf
    from ase.build import bulk

    from nearsight.simulate.rdf import radial_distribution

    crystal = bulk("Si", "diamond", a=5.43, cubic=True).repeat(2)
    assert np.all(si_md_rdf.coordination(crystal) == 4)
    r, g = radial_distribution(crystal, pair=("Si", "Si"), r_max=si_md_rdf.R_MAX, bins=si_md_rdf.BINS)
    peak_r, peak_g = si_md_rdf.first_peak(r, g)
    assert abs(peak_r - 5.43 * np.sqrt(3) / 4) < r[1] - r[0] and peak_g > 10
    squeezed = crystal.copy()
    squeezed.positions[0] = squeezed.positions[1] + [1.2, 1.2, 0.0]  # a fifth neighbour for atom 1
    assert si_md_rdf.coordination(squeezed).max() >= 5


@pytest.mark.parametrize(
    "path", sorted((ROOT / "benchmarks" / "configs").glob("*.yaml")), ids=lambda p: p.name
)
def test_every_benchmark_config_validates(path):
    from nearsight.training.config import load_config

    cfg = load_config(path)
    assert cfg["training"]["batch_size"] > 0 and cfg["model"]["cutoff"] > 0
