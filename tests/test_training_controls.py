"""Training controls: exact resume, kill -9 safety, NaN handling, EMA, warm-up, stages,
fine-tuning with frozen layers, Δ-learning with its calculator, data-parallel gradients."""

from __future__ import annotations

import copy
import csv
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from ase.calculators.lj import LennardJones
from ase.io import read, write

from nearsight import NearsightCalculator, keys
from nearsight.data.neighbours import atoms_to_graph
from nearsight.models.forcefield import ForceField
from nearsight.models.io import load_model
from nearsight.training.checkpoint import CheckpointError, comparable_config, load_checkpoint
from nearsight.training.config import ConfigError, validate_config
from nearsight.training.trainer import Trainer
from training_helpers import TINY_ACSF

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "examples" / "data" / "ethanol_train300.xyz"
ISOLATED = ROOT / "examples" / "data" / "ethanol_isolated_atoms.xyz"


def small_config(out: Path, data: dict | None = None, model: dict | None = None, **training) -> dict:
    """A tiny ACSF model on 24 ethanol frames (21 train, 3 valid): 6 steps per epoch at batch 4."""
    return validate_config(
        {
            "seed": 3,
            "output_dir": str(out),
            "data": {"train": str(TRAIN), "max_train_frames": 21, "valid_fraction": 0.1, **(data or {})},
            "model": {**TINY_ACSF, **(model or {})},
            "training": {"epochs": 4, "batch_size": 4, "lr": 0.01, "log_every": 100, **training},
        }
    )


def _state(path: Path) -> dict:
    ck = load_checkpoint(path)
    return {"model": ck["model"]["state_dict"], "opt": ck["optimizer"], "ema": ck["ema"], "loop": ck["loop"]}


def _assert_bitwise_equal(a, b, where="") -> None:
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            if k != "elapsed_s":
                _assert_bitwise_equal(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for k, (x, y) in enumerate(zip(a, b)):
            _assert_bitwise_equal(x, y, f"{where}[{k}]")
    else:
        assert a == b or (isinstance(a, float) and np.isnan(a) and np.isnan(b)), where


CONTROLS = {"ema_decay": 0.9, "warmup_steps": 3, "stages": [{"epoch": 2, "sigma_energy": 0.2, "lr": 0.004}]}


def test_resume_is_bitwise_exact(tmp_path):
    """2N steps in one go equal N steps + resume + N steps, mid-epoch, with EMA, warm-up and stages."""
    n = 9  # mid-way through epoch 2 (6 steps per epoch)
    whole = small_config(tmp_path / "whole", max_steps=2 * n, **CONTROLS)
    Trainer(whole, log=lambda m: None).train()
    part = small_config(tmp_path / "part", max_steps=n, **CONTROLS)
    Trainer(part, log=lambda m: None).train()
    assert load_checkpoint(tmp_path / "part" / "checkpoint.pt")["loop"]["global_step"] == n
    part["training"]["max_steps"] = 2 * n
    Trainer(part, log=lambda m: None, resume=True).train()
    a, b = _state(tmp_path / "whole" / "checkpoint.pt"), _state(tmp_path / "part" / "checkpoint.pt")
    assert a["loop"]["global_step"] == 2 * n
    _assert_bitwise_equal(a, b)
    best = [torch.load(tmp_path / d / "best_model.pt", weights_only=True) for d in ("whole", "part")]
    _assert_bitwise_equal(best[0]["state_dict"], best[1]["state_dict"])
    assert best[0]["metadata"]["epoch"] == best[1]["metadata"]["epoch"]


def test_resume_refuses_a_changed_config(tmp_path):
    cfg = small_config(tmp_path / "run", max_steps=2)
    Trainer(cfg, log=lambda m: None).train()
    changed = copy.deepcopy(cfg)
    changed["training"]["lr"] = 0.02
    with pytest.raises(CheckpointError, match="config differs"):
        Trainer(changed, resume=True)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        Trainer(small_config(tmp_path / "elsewhere"), resume=True)


def test_warmup_and_stages_set_learning_rate_and_loss_weights(tmp_path):
    cfg = small_config(tmp_path / "run", warmup_steps=4, scheduler="none",
                       stages=[{"epoch": 3, "sigma_energy": 0.25, "sigma_forces": 0.5, "lr": 0.002}])  # fmt: skip
    trainer = Trainer(cfg, log=lambda m: None)
    lrs = []
    trainer._set_warmup_lr = (lambda original: lambda step: (original(step), lrs.append(
        trainer.optimizer.param_groups[0]["lr"])))(trainer._set_warmup_lr)  # fmt: skip
    trainer.train()
    assert lrs[:5] == pytest.approx([0.0025, 0.005, 0.0075, 0.01, 0.01])
    assert lrs[-1] == pytest.approx(0.002)  # stage 0 from epoch 3
    assert (trainer.loss_fn.sigma_energy, trainer.loss_fn.sigma_forces) == (0.25, 0.5)
    with open(tmp_path / "run" / "training_log.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [float(r["lr"]) for r in rows] == pytest.approx([0.01, 0.01, 0.002, 0.002])


def test_ema_weights_are_what_gets_saved(tmp_path):
    cfg = small_config(tmp_path / "run", ema_decay=0.8, max_steps=7)
    trainer = Trainer(cfg, log=lambda m: None)
    trainer.train()
    final = load_model(tmp_path / "run" / "final_model.pt")
    ema = trainer.ema.shadow
    for name, p in final.named_parameters():
        assert torch.equal(p, ema[name].to(p.dtype))
    raw = dict(trainer.model.named_parameters())
    assert any(not torch.equal(raw[k], ema[k]) for k in ema)  # the raw weights differ


def test_nan_loss_stops_and_names_the_batch_without_touching_saved_files(tmp_path):
    cfg = small_config(tmp_path / "run", max_steps=6, checkpoint_every=2)
    Trainer(cfg, log=lambda m: None).train()
    best, ck = tmp_path / "run" / "best_model.pt", tmp_path / "run" / "checkpoint.pt"
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in (best, ck)}
    cfg["training"]["max_steps"] = 12
    trainer = Trainer(cfg, log=lambda m: None, resume=True)
    original, calls = trainer.gradient_step, []

    def poisoned(indices, where):
        calls.append(where)
        if len(calls) == 1:  # a NaN label in the first batch after the resume
            for i in indices:
                trainer.train_graphs[i]["ref_energy"] = trainer.train_graphs[i]["ref_energy"] * float("nan")
        return original(indices, where)

    trainer.gradient_step = poisoned
    with pytest.raises(FloatingPointError, match=r"non-finite loss .* at epoch 2, step 6; batch frames: .*"
                       r"ethanol_train300.xyz:\d+"):  # fmt: skip
        trainer.train()
    after = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in (best, ck)}
    assert after == before


KILL_SCRIPT = """
import sys, json
from nearsight.training.trainer import Trainer
Trainer(json.loads(open(sys.argv[1]).read()), log=lambda m: print(m, flush=True), resume=sys.argv[2] == "1").train()
print("DONE", flush=True)
"""


def test_kill_9_then_resume_gives_the_uninterrupted_result(tmp_path):
    """kill -9 mid-run (checkpoints written every step), three times, resume, compare bit for bit."""
    cfg = small_config(tmp_path / "killed", epochs=20, checkpoint_every=1, ema_decay=0.9, log_every=1)
    ref = copy.deepcopy(cfg)
    ref["output_dir"] = str(tmp_path / "reference")
    Trainer(ref, log=lambda m: None).train()
    script, cfg_path = tmp_path / "run.py", tmp_path / "cfg.json"
    script.write_text(KILL_SCRIPT)
    cfg_path.write_text(json.dumps(cfg))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    ck = tmp_path / "killed" / "checkpoint.pt"
    steps = []
    for delay in (0.05, 0.2, 0.13):
        resume = "1" if ck.exists() else "0"
        proc = subprocess.Popen([sys.executable, str(script), str(cfg_path), resume], env=env,
                                stdout=subprocess.PIPE, text=True)  # fmt: skip
        for line in proc.stdout:  # wait for the first completed epoch of this attempt, then kill
            if line.startswith("epoch"):
                break
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        steps.append(load_checkpoint(ck)["loop"]["global_step"])  # always loadable
    assert steps == sorted(steps) and steps[0] < 120  # the first kill, at least, hit a running job
    out = subprocess.run([sys.executable, str(script), str(cfg_path), "1"], env=env, capture_output=True,
                         text=True, check=True)  # fmt: skip
    assert "DONE" in out.stdout
    _assert_bitwise_equal(_state(tmp_path / "reference" / "checkpoint.pt"), _state(ck))
    assert not list((tmp_path / "killed").glob(".*.tmp"))  # no temporary file left behind


def test_fine_tuning_freezes_layers_and_refits_the_shift(tmp_path):
    base = small_config(tmp_path / "pre", max_steps=6)
    base["data"]["reference_energies"] = str(ISOLATED)
    Trainer(base, log=lambda m: None).train()
    pre = load_model(tmp_path / "pre" / "best_model.pt")
    # "another level of theory": every energy shifted by 0.3 eV per atom
    frames = read(TRAIN, ":30")
    for atoms in frames:
        atoms.info["energy"] = atoms.get_potential_energy() + 0.3 * len(atoms)
        atoms.arrays["forces"] = atoms.get_forces()
        atoms.calc = None
    shifted = tmp_path / "shifted.xyz"
    write(shifted, frames)
    cfg = small_config(
        tmp_path / "tuned",
        data={"train": str(shifted), "reference_energies": str(ISOLATED)},
        model={"init_from": str(tmp_path / "pre" / "best_model.pt")},
        max_steps=6,
        freeze="readout",
    )
    trainer = Trainer(cfg, log=lambda m: None)
    trainer.train()
    tuned = trainer.model
    for (name, p0), p1 in zip(pre.named_parameters(), tuned.parameters()):
        last = name.endswith(f"{len(pre.nets[0]) - 1}.weight") or name.endswith(
            f"{len(pre.nets[0]) - 1}.bias"
        )
        assert torch.equal(p0, p1) != last, name  # only the readout layers moved
    assert torch.allclose(
        tuned.energy_shift - pre.energy_shift, torch.full_like(pre.energy_shift, 0.3), atol=0.05
    )
    with pytest.raises(ConfigError, match="freeze needs model.init_from"):
        small_config(tmp_path / "x", freeze=1)


@pytest.fixture(scope="module")
def delta_data(tmp_path_factory):
    """Ethanol frames with a Lennard-Jones baseline stored as lj_energy / lj_forces."""
    frames = read(TRAIN, ":30")
    calc = LennardJones(sigma=1.5, epsilon=0.01, rc=4.0, smooth=True)
    for atoms in frames:
        e, f = atoms.get_potential_energy(), atoms.get_forces()
        probe = atoms.copy()
        probe.calc = calc
        atoms.info["dft_energy"], atoms.arrays["dft_forces"] = e, f
        atoms.info["lj_energy"], atoms.arrays["lj_forces"] = probe.get_potential_energy(), probe.get_forces()
        atoms.calc = None
    path = tmp_path_factory.mktemp("delta") / "ethanol_lj.xyz"
    write(path, frames)
    return path, calc


def test_delta_model_calculator_returns_baseline_plus_correction(tmp_path, delta_data):
    path, lj = delta_data
    cfg = small_config(tmp_path / "delta", max_steps=12)
    cfg["data"].update(train=str(path), energy_key="dft_energy", forces_key="dft_forces",
                       baseline_energy_key="lj_energy", baseline_forces_key="lj_forces",
                       reference_energies=str(ISOLATED))  # fmt: skip
    cfg["model"]["baseline"] = {"calculator": "lj", "sigma": 1.5, "epsilon": 0.01, "rc": 4.0, "smooth": True}
    Trainer(validate_config(cfg), log=lambda m: None).train()
    model_path = tmp_path / "delta" / "best_model.pt"
    atoms = read(path, 25)
    calc = NearsightCalculator(model_path)
    atoms.calc = calc
    energy, forces = atoms.get_potential_energy(), atoms.get_forces()
    probe = atoms.copy()
    probe.calc = LennardJones(sigma=1.5, epsilon=0.01, rc=4.0, smooth=True)
    assert calc.results["baseline_energy"] == pytest.approx(probe.get_potential_energy(), abs=1e-12)
    assert energy == pytest.approx(calc.results["baseline_energy"] + calc.results["delta_energy"], abs=1e-10)
    model_only = ForceField(load_model(model_path))  # the correction alone, evaluated directly

    out = model_only(atoms_to_graph(atoms, model_only.cutoff), forces=True)
    assert calc.results["delta_energy"] == pytest.approx(float(out[keys.ENERGY].detach().sum()), abs=1e-10)
    np.testing.assert_allclose(forces, probe.get_forces() + out[keys.FORCES].detach().numpy(), atol=1e-10)
    # reference energies enter once: the full prediction is near the DFT label (ethanol's
    # atomisation energy is ~ 30 eV; counting the isolated-atom energies twice would miss by ~ 4 keV)
    assert abs(energy - atoms.info["dft_energy"]) < 2.0
    # an explicit baseline works too; a plain model refuses one
    again = NearsightCalculator(model_path, baseline=probe.calc)
    assert again.get_potential_energy(atoms) == pytest.approx(energy, abs=1e-10)
    plain_cfg = small_config(tmp_path / "plain", max_steps=1)
    Trainer(plain_cfg, log=lambda m: None).train()
    with pytest.raises(ValueError, match="not trained as a Δ-model"):
        NearsightCalculator(tmp_path / "plain" / "best_model.pt", baseline=probe.calc)


def test_delta_model_without_recorded_baseline_needs_one(tmp_path, delta_data):
    path, _ = delta_data
    cfg = small_config(tmp_path / "delta", max_steps=2)
    cfg["data"].update(train=str(path), energy_key="dft_energy", forces_key="dft_forces",
                       baseline_energy_key="lj_energy", baseline_forces_key="lj_forces")  # fmt: skip
    Trainer(validate_config(cfg), log=lambda m: None).train()
    with pytest.raises(ValueError, match="records no baseline calculator: pass baseline="):
        NearsightCalculator(tmp_path / "delta" / "best_model.pt")


def test_missing_baseline_label_names_the_frame(tmp_path, delta_data):
    path, _ = delta_data
    frames = read(path, ":")
    del frames[4].info["lj_energy"]
    bad = tmp_path / "bad.xyz"
    write(bad, frames)
    cfg = small_config(tmp_path / "delta", max_steps=2)
    cfg["data"].update(train=str(bad), energy_key="dft_energy", forces_key="dft_forces",
                       baseline_energy_key="lj_energy")  # fmt: skip
    with pytest.raises(ValueError, match=r"bad.xyz.*frame 4: no baseline energy 'lj_energy'"):
        Trainer(validate_config(cfg), log=lambda m: None).train()


DDP_SCRIPT = """
import json, sys
import numpy as np, torch
from nearsight.training.trainer import Trainer
cfg = json.loads(open(sys.argv[1]).read())
trainer = Trainer(cfg, log=lambda m: None)
trainer.setup()
loss = trainer.gradient_step(list(range(0, 20, 2)) + [1, 3, 5], "test")
grads = torch.cat([p.grad.reshape(-1) for p in trainer.model.parameters() if p.grad is not None])
np.save(sys.argv[2] + f".{trainer.dist.rank}.npy", grads.double().numpy())
trainer.dist.close()
"""


def test_ddp_gradients_equal_single_process(tmp_path):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if torchrun is None:
        pytest.skip("torchrun not installed beside this Python")
    cfg = small_config(tmp_path / "ddp")
    script, cfg_path = tmp_path / "ddp.py", tmp_path / "cfg.json"
    script.write_text(DDP_SCRIPT)
    cfg_path.write_text(json.dumps(cfg))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    cmd = [torchrun, "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", "29517",
           str(script), str(cfg_path), str(tmp_path / "ddp_grad")]  # fmt: skip
    subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=120)
    single = Trainer(cfg, log=lambda m: None)
    single.setup()
    single.gradient_step(list(range(0, 20, 2)) + [1, 3, 5], "test")
    ref = torch.cat([p.grad.reshape(-1) for p in single.model.parameters() if p.grad is not None]).numpy()
    for rank in (0, 1):
        got = np.load(tmp_path / f"ddp_grad.{rank}.npy")
        np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-12 * np.abs(ref).max())


def test_tensorboard_and_per_config_type_metrics(tmp_path):
    pytest.importorskip("tensorboard")
    frames = read(TRAIN, ":24")
    for k, atoms in enumerate(frames):
        atoms.info["config_type"] = "hot" if k % 2 else "cold"
    typed = tmp_path / "typed.xyz"
    write(typed, frames)
    cfg = small_config(tmp_path / "run", data={"train": str(typed), "valid_fraction": 0.25}, epochs=2,
                       tensorboard=True)  # fmt: skip
    Trainer(cfg, log=lambda m: None).train()
    events = list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 100
    summary = json.loads((tmp_path / "run" / "training_summary.json").read_text())
    by_type = summary["valid_metrics"]["by_config_type"]
    assert set(by_type) == {"hot", "cold"}
    assert sum(m["n_frames"] for m in by_type.values()) == summary["valid_metrics"]["n_frames"] == 6


def test_multi_head_model_learns_one_offset_per_level(tmp_path):
    frames = []
    for k, atoms in enumerate(read(TRAIN, ":40")):
        e, f = atoms.get_potential_energy(), atoms.get_forces()
        atoms.calc = None
        low = k % 4 != 0  # many cheap labels, few accurate ones
        atoms.info["energy"] = e + (0.25 * len(atoms) if low else 0.0)
        atoms.arrays["forces"] = f
        atoms.info["level"] = "low" if low else "high"
        frames.append(atoms)
    path = tmp_path / "two_levels.xyz"
    write(path, frames)
    cfg = small_config(tmp_path / "mh", data={"train": str(path), "max_train_frames": None, "head_key": "level",
                       "reference_energies": str(ISOLATED)}, model={"heads": ["low", "high"]}, max_steps=12)  # fmt: skip
    trainer = Trainer(cfg, log=lambda m: None)
    trainer.train()
    model = load_model(tmp_path / "mh" / "best_model.pt")
    assert model.heads == ["low", "high"] and model.energy_shift.shape == (2, 3)
    np.testing.assert_allclose((model.energy_shift[0] - model.energy_shift[1]).numpy(), 0.25, atol=0.05)
    atoms = read(TRAIN, 100)
    e_high = NearsightCalculator(model).get_potential_energy(atoms)  # the last head by default
    e_low = NearsightCalculator(model, head="low").get_potential_energy(atoms)
    assert e_low - e_high == pytest.approx(0.25 * 9, abs=0.5)
    with pytest.raises(ValueError, match=r"head 'mp2' not in the model's heads \['low', 'high'\]"):
        NearsightCalculator(model, head="mp2")
    frames[3].info["level"] = "medium"
    write(path, frames)
    with pytest.raises(
        ValueError, match=r"frame 3: info\['level'\] = 'medium' is not one of the model's heads"
    ):
        Trainer(cfg, log=lambda m: None).train()


def test_time_limit_runs_on_the_configured_clock(tmp_path, monkeypatch):
    """max_time_minutes with time_limit_clock: cpu reads the process's CPU time, wall reads elapsed time."""
    import nearsight.training.trainer as trainer_module

    fake_cpu = iter(range(0, 10**6, 100))  # a CPU clock that advances 100 s per reading
    monkeypatch.setattr(trainer_module.time, "process_time", lambda: float(next(fake_cpu)))
    summaries = {}
    for clock in ("cpu", "wall"):
        cfg = small_config(tmp_path / clock, max_time_minutes=1.0, time_limit_clock=clock)
        Trainer(cfg, log=lambda m: None).train()
        summaries[clock] = json.loads((tmp_path / clock / "training_summary.json").read_text())
    assert summaries["cpu"]["stopped_by"] == "max_time" and summaries["cpu"]["steps"] == 6  # one epoch
    assert summaries["cpu"]["time_limit_clock"] == "cpu" and summaries["cpu"]["wall_time_s"] >= 60
    assert summaries["wall"]["stopped_by"] == "epochs" and summaries["wall"]["steps"] == 24
    bad = small_config(tmp_path / "bad")
    bad["training"]["time_limit_clock"] = "gpu"
    with pytest.raises(ConfigError, match="time_limit_clock"):
        validate_config(bad)


def test_budget_scheduler_anneals_over_the_time_budget(tmp_path, monkeypatch):
    """scheduler: budget follows a cosine from lr to min_lr over max_time_minutes of the run's
    clock (a stage's lr becomes the new peak), and needs a time budget."""
    import nearsight.training.trainer as trainer_module

    stages = [{"epoch": 3, "lr": 0.004}]
    cfg = small_config(
        tmp_path / "unit", scheduler="budget", max_time_minutes=2.0, min_lr=1e-4, stages=stages
    )
    trainer = Trainer(cfg, log=lambda m: None)
    trainer.setup()
    expected = {0: 0.01, 30: 1e-4 + 0.0099 * 0.5 * (1 + np.cos(np.pi / 4)), 60: 0.00505, 120: 1e-4, 500: 1e-4}
    for elapsed, lr in expected.items():
        trainer._set_budget_lr(1, float(elapsed))
        assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(lr)
    trainer._set_budget_lr(3, 60.0)
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(1e-4 + 0.0039 * 0.5)

    fake_cpu = iter(range(0, 10**6, 2))  # a CPU clock that advances 2 s per reading
    monkeypatch.setattr(trainer_module.time, "process_time", lambda: float(next(fake_cpu)))
    cfg = small_config(tmp_path / "run", epochs=1000, scheduler="budget", max_time_minutes=1.0,
                       time_limit_clock="cpu", min_lr=1e-5)  # fmt: skip
    Trainer(cfg, log=lambda m: None).train()
    with open(tmp_path / "run" / "training_log.csv", newline="") as fh:
        lrs = [float(r["lr"]) for r in csv.DictReader(fh)]
    summary = json.loads((tmp_path / "run" / "training_summary.json").read_text())
    assert summary["stopped_by"] == "max_time" and len(lrs) >= 3
    assert lrs[0] > 0.009 and lrs[-1] < 1e-4 and all(a > b for a, b in zip(lrs, lrs[1:]))

    for bad, match in (({"max_time_minutes": None}, "needs training.max_time_minutes"),
                       ({"max_time_minutes": 0}, "max_time_minutes = 0")):  # fmt: skip
        raw = small_config(tmp_path / "bad", scheduler="budget", max_time_minutes=1.0)
        raw["training"].update(bad)
        with pytest.raises(ConfigError, match=match):
            validate_config(raw)


def test_split_seed_fixes_the_validation_split_across_seeds(tmp_path):
    """data.split_seed draws the validation frames; the run's seed then only sets initialisation and
    batch order (committee members on the same data).  Without it the seed draws the split."""

    def split(seed: int, split_seed: int | None) -> tuple[list, list, torch.Tensor]:
        cfg = small_config(tmp_path / f"s{seed}_{split_seed}", data={"split_seed": split_seed})
        cfg["seed"] = seed
        trainer = Trainer(cfg, log=lambda m: None)
        trainer.prepare_data()
        trainer.prepare_model()
        first = next(trainer.model.parameters()).detach().clone()
        return [f.index for f in trainer.train_frames], [f.index for f in trainer.valid_frames], first

    a, b, c = split(1, 7), split(2, 7), split(2, None)
    assert a[0] == b[0] and a[1] == b[1] and not torch.equal(a[2], b[2])
    assert b[1] != c[1] and torch.equal(b[2], c[2])
    # a checkpoint written before split_seed existed resumes: keys left at None compare as absent
    cfg = small_config(tmp_path / "old")
    old = copy.deepcopy(cfg)
    del old["data"]["split_seed"]
    assert comparable_config(old) == comparable_config(cfg)
    cfg["data"]["split_seed"] = 0
    assert comparable_config(old) != comparable_config(cfg)
    # nor one written before a nested default existed (model.longrange.charges: head)
    cfg["model"]["longrange"] = {"coulomb": {}}
    cfg = validate_config(cfg)
    old = copy.deepcopy(cfg)
    del old["model"]["longrange"]["charges"]
    assert comparable_config(old) == comparable_config(cfg)
    cfg["model"]["longrange"]["coulomb"]["accuracy"] = 1e-4
    assert comparable_config(old) != comparable_config(cfg)


def test_amsgrad_keeps_the_largest_second_moment(tmp_path):
    cfg = small_config(tmp_path / "ams", max_steps=3, amsgrad=True)
    trainer = Trainer(cfg, log=lambda m: None)
    trainer.train()
    group = trainer.optimizer.param_groups[0]
    state = trainer.optimizer.state[group["params"][0]]
    assert group["amsgrad"] is True
    assert torch.all(state["max_exp_avg_sq"] >= state["exp_avg_sq"])


def test_plateau_rollback_continues_from_the_best_weights(tmp_path):
    """plateau_rollback: when the plateau scheduler lowers the lr, the weights and their EMA go back
    to the best model file's; without a plateau scheduler the option is refused."""
    from nearsight.models.io import load_model

    rollbacks = []

    class Recording(Trainer):
        def _roll_back(self, epoch, best_epoch):
            super()._roll_back(epoch, best_epoch)
            best = load_model(self.best_path).state_dict()
            assert load_model(self.best_path).metadata["epoch"] == best_epoch < epoch
            for name, p in self.model.named_parameters():
                assert torch.equal(p.detach(), best[name]), name
                assert torch.equal(self.ema.shadow[name], best[name]), name
            rollbacks.append((epoch, best_epoch, self.optimizer.param_groups[0]["lr"]))

    cfg = small_config(tmp_path / "run", epochs=12, lr=0.2, scheduler_patience=0, ema_decay=0.5,
                       plateau_rollback=True)  # fmt: skip
    log: list[str] = []
    Recording(cfg, log=log.append).train()
    assert len(rollbacks) >= 2, f"{rollbacks}: too few epochs without improvement; raise the lr"
    lrs = [lr for *_, lr in rollbacks]  # each after a cut: strictly falling, from 0.1 down
    assert lrs[0] <= 0.1 and all(a > b for a, b in zip(lrs, lrs[1:]))
    assert any("weights rolled back to the best epoch" in line for line in log)

    raw = small_config(tmp_path / "bad", scheduler="cosine")
    raw["training"]["plateau_rollback"] = True
    with pytest.raises(ConfigError, match="plateau_rollback needs scheduler: plateau"):
        validate_config(raw)
