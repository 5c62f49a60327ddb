"""nearsight's equivariant potential vs MACE, both trained for the same CPU time on rMD17 ethanol.

    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python benchmarks/ethanol_vs_mace_training.py \\
        [--frames 250] [--minutes 20] [--size small|medium] [--out runs/ethanol_vs_mace] \\
        [--nearsight-config tuned.yaml] [--mace-python /tmp/macevenv/bin/python] [--sequential] \\
        [--reuse-mace EARLIER_OUT]   # train nearsight only, against MACE's side of an earlier run

Data.  ``--frames N`` frames of ``ethanol/train.xyz`` picked by a seeded permutation; 5 % of them
(at least 2, ``--valid-fraction``) are the validation set, the rest the training set (N = 1000
gives MACE's rMD17 protocol, 950 + 50).  Both splits are written to ``OUT/data/{train,valid}.xyz``
with the labels under ``REF_energy`` / ``REF_forces`` (MACE rewrites the names ``energy`` and
``forces``, which ASE reserves for calculator results), and *both* codes read these two files:
MACE as ``--train_file`` / ``--valid_file``, nearsight as ``data.train`` / ``data.valid``.
Isolated-atom energies from ``ethanol/isolated_atoms.xyz`` (MACE ``--E0s`` dict, nearsight
``data.reference_energies``).  Test set: all 1000 frames of ``ethanol/test_MD.xyz``.

Models (``--size``, matched as in ``benchmarks/vs_mace.py``): 32 (small) or 128 (medium) channels,
hidden irreps up to the nearsight config's ``l_max`` (MACE's ``--max_L`` is set to the same; the
example's 2: 0e + 1o + 2e), spherical harmonics to l = 3, correlation 3, 2 interactions,
r_max 5 Å, 8 Bessel functions with a p = 5 envelope, radial MLP [64, 64, 64], float32 training.
nearsight: ``examples/ethanol_equivariant.yaml`` with ``preset: small|medium`` (AMSGrad lr 0.01,
batch 5, σ_E = 1 eV, σ_F = 0.05 eV/Å -- a force-dominated loss like MACE's -- EMA 0.99, plateau
scheduler), overridable by ``--nearsight-config`` (a YAML mapping of ``training`` keys, or
``{training: ..., model: {equivariant: ...}, seed: N}``, the seed of nearsight's initialisation and
batch order, not of the split; the budget ``max_time_minutes`` stays ``--minutes``).
MACE (0.3.16, ``mace_run_train``): the settings of the MACE paper's rMD17 runs: ``--loss weighted --energy_weight 1 --forces_weight 1000`` (per-atom energy and
force-component squared errors), batch 5, lr 0.01, Adam with AMSGrad, weight decay 5e-7,
``--ema --ema_decay 0.99``, gradient clipping 10, ReduceLROnPlateau with factor 0.8;
``--model ScaleShiftMACE --scaling rms_forces_scaling``: atomic energies E0 + shift + scale × the
network, with the shift the mean per-atom energy left after the E0s, as nearsight's model does
(plain ``MACE`` starts ~4.7 eV/atom away from ethanol's energies and, with this force-dominated
loss, does not close the gap within a short budget).  MACE's default scheduler patience (50
epochs) is meant for 2000-epoch runs; with ``--mace-scheduler-patience auto`` it is set after the first
epoch to 1/20 of the epochs the budget allows (at least 5, at most 50).  No stage two / SWA:
MACE starts it at a fixed epoch, which a CPU-time budget does not know in advance (and
``run_train`` fails at the end if the budget ran out before that epoch), and the nearsight side
has a single stage too.  Other MACE options go through ``--mace-extra`` (appended last, so they
override the above), e.g. ``--mace-extra="--energy_weight=10 --lr=0.005"``.

CPU budget (``--minutes M`` per side).  Each side trains in its own subprocess with one thread
(``OMP_NUM_THREADS=1``, ``torch.set_num_threads(1)``, MACE ``--num_workers 0``); by default the two
run concurrently, one per core, so both see the same machine load (``--sequential``: one after
the other).  The budget is CPU time of the training loop, measured the same way on both sides
(``time.process_time()`` of the process, started at the first epoch): the epoch during which it
runs out is finished and validated, then training stops and the best-validation model is kept.
- nearsight: ``training.max_time_minutes = M`` with ``training.time_limit_clock: cpu`` (the
  trainer's clock is then ``time.process_time``; logged times are CPU seconds), ``training.epochs``
  and early stopping unbounded (as MACE's side: both train until the budget is spent).
- MACE has no time limit: the worker runs ``mace.cli.run_train.main()`` in-process with
  ``--max_num_epochs`` unbounded and wraps ``mace.tools.train.train_one_epoch`` so that it raises
  at the start of the first epoch after the budget is spent; the wrapper of ``mace.tools.train``
  catches that and ``run_train`` goes on as after a normal end: it loads its best checkpoint (EMA
  weights, written whenever the validation loss improved) and saves ``OUT/mace/mace.model``.
Reported per side: training-loop CPU seconds, CPU seconds of the whole process (``os.wait4``
rusage: setup, training, final model writing), wall seconds, epochs, best epoch.

Evaluation: MACE's model, converted to float64 (``mace_eval_configs`` only sets the default dtype
of the data, so a float32 model fails with a dtype mismatch), through ``mace_eval_configs``
(``python -m mace.cli.eval_configs --default_dtype float64``) writes ``MACE_energy`` /
``MACE_forces``; nearsight's best model through
``nearsight.training.metrics.predict`` (float64).  Both predictions are saved to
``OUT/predictions_{mace,nearsight}.npz`` and scored by the same ``compute_metrics`` against the
same test frames.  Prints a table and a final JSON line (also ``OUT/results.json``).
Published MACE (1000 frames, full training): E MAE 0.4 meV, F MAE 2.1 meV/Å.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "src"))

from vs_mace import SIZES  # noqa: E402  (numpy-only module: importable from both venvs)

ENERGY_KEY, FORCES_KEY = "REF_energy", "REF_forces"
MACE_NAME = "mace"


def single_thread_env(extra: dict | None = None) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    env["PYTHONWARNINGS"] = "ignore"
    # e3nn 0.4.4 torch.load()s its bundled constants and MACE its checkpoints/models without
    # weights_only (see vs_mace.py)
    env["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"
    env.update(extra or {})
    return env


def os_threads() -> int:
    """Threads of this process now (Linux), else Python's count."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Threads:"):
                return int(line.split()[1])
    except OSError:
        pass
    return threading.active_count()


# ------------------------------------------------------------------ workers (run as subprocesses)
class BudgetReached(Exception):
    """Raised by the MACE epoch wrapper once the CPU budget is spent."""


def mace_worker(spec: dict) -> int:
    """``mace_run_train`` in this process, stopped at the first epoch start after the budget."""
    import logging

    import torch
    from mace import tools as mace_tools
    from mace.cli import run_train

    train_module = sys.modules["mace.tools.train"]
    budget = float(spec["budget_s"])
    state = {"start": None, "epochs": 0, "stopped_by": "max_num_epochs", "threads": os_threads()}
    patience = spec["scheduler_patience"]
    state["scheduler_patience"] = patience if patience == "auto" else int(patience)
    original_epoch, original_train = train_module.train_one_epoch, mace_tools.train

    def train_one_epoch(*args, **kwargs):
        now = time.process_time()
        if state["start"] is None:
            state["start"] = now
        elif now - state["start"] >= budget:
            raise BudgetReached
        original_epoch(*args, **kwargs)
        state["epochs"] += 1
        state["threads"] = max(state["threads"], os_threads())
        if state["epochs"] == 1 and spec["scheduler_patience"] == "auto":
            per_epoch = time.process_time() - state["start"]
            patience = int(min(50, max(5, round(budget / max(per_epoch, 1e-9) / 20))))
            state["lr_scheduler"].lr_scheduler.patience = patience
            state["scheduler_patience"] = patience
            state["first_epoch_cpu_s"] = per_epoch
            logging.info(f"benchmark: first epoch {per_epoch:.1f} CPU s; scheduler patience {patience}")

    def train(*args, **kwargs):
        state["lr_scheduler"] = kwargs["lr_scheduler"]
        try:
            original_train(*args, **kwargs)
        except BudgetReached:
            state["stopped_by"] = "max_time"
            logging.info(f"benchmark: CPU budget of {budget:.0f} s spent after {state['epochs']} epochs")
        state["loop_cpu_s"] = time.process_time() - (state["start"] or time.process_time())

    train_module.train_one_epoch = train_one_epoch
    mace_tools.train = train
    sys.argv = ["mace_run_train", *spec["argv"]]
    run_train.main()
    state.pop("lr_scheduler", None)
    state.pop("start", None)
    state["torch_threads"] = torch.get_num_threads()
    state["threads"] = max(state["threads"], os_threads())
    Path(spec["result"]).write_text(json.dumps(state))
    return 0


def mace_to_float64(source: str, target: str) -> int:
    """A float64 copy of a MACE model file: mace_eval_configs does not convert the model's dtype."""
    import torch

    model = torch.load(source, map_location="cpu", weights_only=False)
    torch.save(model.double(), target)
    return 0


def nearsight_worker(spec: dict) -> int:
    """nearsight's Trainer with its time limit measured in CPU seconds of this process."""
    import csv

    import torch

    import nearsight.training.trainer as trainer_module
    from nearsight.training.config import validate_config

    trainer = trainer_module.Trainer(validate_config(spec["config"], source="nearsight-config"))
    best = trainer.train()
    out = Path(spec["config"]["output_dir"])
    summary = json.loads((out / "training_summary.json").read_text())
    with open(out / "training_log.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    result = {
        "loop_cpu_s": trainer.wall_time,  # CPU seconds: time_limit_clock is cpu
        "epochs": int(rows[-1]["epoch"]) if rows else 0,
        "best_epoch": summary["best_epoch"],
        "stopped_by": summary["stopped_by"],
        "best_model": str(best),
        "torch_threads": torch.get_num_threads(),
        "threads": os_threads(),
    }
    Path(spec["result"]).write_text(json.dumps(result))
    return 0


# ------------------------------------------------------------------ data
def write_split(data: Path, out: Path, frames: int, valid_fraction: float, seed: int) -> dict:
    """Seeded split of the first pick of ``frames`` training frames into train/valid extxyz files."""
    import ase.io
    from ase import Atoms

    images = ase.io.read(str(data / "train.xyz"), index=":")
    if not 3 <= frames <= len(images):
        raise SystemExit(f"--frames must be in [3, {len(images)}]")
    order = np.random.default_rng(seed).permutation(len(images))[:frames]
    n_valid = max(2, int(round(valid_fraction * frames)))
    paths = {}
    for name, idx in (("valid", order[:n_valid]), ("train", order[n_valid:])):
        clean = []
        for i in idx:
            a = images[i]
            b = Atoms(a.numbers, positions=a.positions, cell=a.cell, pbc=a.pbc)
            b.info = {
                ENERGY_KEY: float(a.get_potential_energy()),
                "config_type": "train",
                "source_index": int(i),
            }
            b.arrays[FORCES_KEY] = np.array(a.get_forces(), dtype=np.float64)
            clean.append(b)
        paths[name] = out / "data" / f"{name}.xyz"
        paths[name].parent.mkdir(parents=True, exist_ok=True)
        ase.io.write(str(paths[name]), clean, format="extxyz")
        paths[f"n_{name}"] = len(clean)
    return paths


# ------------------------------------------------------------------ the two runs
def mace_arguments(args, split: dict, e0s: dict, mace_dir: Path, max_L: int) -> list[str]:
    channels = SIZES[args.size]
    patience = args.mace_scheduler_patience
    argv = [
        f"--name={MACE_NAME}",
        f"--seed={args.seed}",
        f"--work_dir={mace_dir}",
        f"--log_dir={mace_dir / 'logs'}",
        f"--model_dir={mace_dir}",
        f"--checkpoints_dir={mace_dir / 'checkpoints'}",
        f"--results_dir={mace_dir / 'results'}",
        f"--train_file={split['train']}",
        f"--valid_file={split['valid']}",
        f"--energy_key={ENERGY_KEY}",
        f"--forces_key={FORCES_KEY}",
        "--E0s=" + repr({int(z): float(e) for z, e in sorted(e0s.items())}),
        "--model=ScaleShiftMACE",
        "--scaling=rms_forces_scaling",
        f"--num_channels={channels}",
        f"--max_L={max_L}",
        "--max_ell=3",
        "--correlation=3",
        "--num_interactions=2",
        "--r_max=5.0",
        "--num_radial_basis=8",
        "--num_cutoff_basis=5",
        "--radial_MLP=[64, 64, 64]",
        "--MLP_irreps=16x0e",
        "--loss=weighted",
        "--energy_weight=1.0",
        "--forces_weight=1000.0",
        "--batch_size=5",
        "--valid_batch_size=10",
        "--lr=0.01",
        "--amsgrad",
        "--weight_decay=5e-7",
        "--clip_grad=10.0",
        "--ema",
        "--ema_decay=0.99",
        "--scheduler=ReduceLROnPlateau",
        "--lr_factor=0.8",
        f"--scheduler_patience={50 if patience == 'auto' else int(patience)}",
        "--max_num_epochs=1000000",
        "--patience=1000000",
        "--eval_interval=1",
        "--default_dtype=float32",
        "--device=cpu",
        "--num_workers=0",
        "--pin_memory=False",
        "--plot=False",
        "--save_cpu",
    ]
    return argv + args.mace_extra.split()


def architecture(cfg: dict) -> dict:
    """The equivariant config's architecture (its preset filled in) as MACE's arguments."""
    import inspect

    from nearsight.models.equivariant import EquivariantPotential, equivariant_arguments

    defaults = inspect.signature(EquivariantPotential.__init__).parameters
    eq = {k: p.default for k, p in defaults.items() if p.default is not inspect.Parameter.empty}
    eq.update(equivariant_arguments(cfg["model"]["equivariant"]))
    return {
        "max_L": int(eq["l_max"]),
        "max_ell": int(eq["sh_l_max"]),
        "correlation": int(eq["correlation"]),
        "num_interactions": int(eq["num_layers"]),
        "num_radial_basis": int(eq["n_radial"]),
        "radial_MLP": [int(h) for h in eq["radial_hidden"]],
    }


def hidden_l_max(cfg: dict) -> int:
    """The highest l of the nearsight model's hidden features: MACE's ``--max_L``."""
    return architecture(cfg)["max_L"]


def mace_max_L(argv: list[str]) -> int:
    """MACE's ``--max_L`` in an argument list (the last one wins, as in argparse; default 1)."""
    value = "1"
    for k, arg in enumerate(argv):
        if arg.startswith("--max_L="):
            value = arg.split("=", 1)[1]
        elif arg == "--max_L" and k + 1 < len(argv):
            value = argv[k + 1]
    return int(value)


def nearsight_config(args, split: dict, data: Path, ns_dir: Path) -> dict:
    import yaml

    cfg = yaml.safe_load((ROOT / "examples" / "ethanol_equivariant.yaml").read_text())
    cfg["seed"] = args.seed
    cfg["dtype"] = "float32"
    cfg["num_threads"] = 1
    cfg["output_dir"] = str(ns_dir)
    cfg["data"] = {
        "train": str(split["train"]),
        "valid": str(split["valid"]),
        "energy_key": ENERGY_KEY,
        "forces_key": FORCES_KEY,
        "reference_energies": str(data / "isolated_atoms.xyz"),
    }
    eq = cfg["model"]["equivariant"]
    if "channels" in eq:
        raise SystemExit("examples/ethanol_equivariant.yaml sets channels: --size could not choose them")
    eq["preset"] = args.size
    cfg["training"].update(epochs=10**7, log_every=25, checkpoint_every=0)
    if args.nearsight_config:
        over = yaml.safe_load(Path(args.nearsight_config).read_text()) or {}
        if not set(over) & {"training", "model", "seed"}:
            over = {"training": over}
        unknown = sorted(set(over) - {"training", "model", "seed"})
        if unknown or set(over.get("model") or {}) - {"equivariant"}:
            raise SystemExit(
                f"{args.nearsight_config}: only training keys, model.equivariant and seed may change"
            )
        cfg["seed"] = int(over.get("seed", cfg["seed"]))  # initialisation and batch order; the split stays
        cfg["training"].update(over.get("training") or {})
        eq.update((over.get("model") or {}).get("equivariant") or {})
    cfg["training"]["max_time_minutes"] = args.minutes  # the budget is not overridable
    cfg["training"]["early_stopping_patience"] = 10**9  # both sides train until the budget is spent
    cfg["training"]["time_limit_clock"] = "cpu"
    return cfg


class Job:
    def __init__(self, name: str, cmd: list[str], log: Path, timeout_s: float) -> None:
        self.name, self.cmd, self.log, self.timeout_s = name, cmd, log, timeout_s
        self.proc: subprocess.Popen | None = None
        self.rc: int | None = None
        self.cpu_s = self.wall_s = 0.0

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "w") as fh:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(
                self.cmd, stdout=fh, stderr=subprocess.STDOUT, env=single_thread_env(), start_new_session=True
            )
        self.t0 = time.perf_counter()
        print(f"[{self.name}] started (pid {self.proc.pid}), log {self.log}", flush=True)

    def poll(self) -> bool:
        """True once finished; kills the run (its own process group) past its wall-clock limit."""
        pid, status, usage = os.wait4(self.proc.pid, os.WNOHANG)
        elapsed = time.perf_counter() - self.t0
        if pid == 0:
            if elapsed > self.timeout_s:
                print(f"[{self.name}] over {self.timeout_s:.0f} s wall time: terminating", flush=True)
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.timeout_s = float("inf")
            return False
        self.rc = os.waitstatus_to_exitcode(status)
        self.proc.returncode = self.rc
        self.cpu_s = usage.ru_utime + usage.ru_stime
        self.wall_s = elapsed
        print(
            f"[{self.name}] finished: rc {self.rc}, {self.cpu_s:.0f} CPU s, {self.wall_s:.0f} wall s",
            flush=True,
        )
        return True

    def kill(self) -> None:
        if self.proc is not None and self.rc is None:
            os.killpg(self.proc.pid, signal.SIGTERM)


def run_jobs(jobs: list[Job], sequential: bool) -> None:
    try:
        for group in ([j] for j in jobs) if sequential else [jobs]:
            for job in group:
                job.start()
            running = list(group)
            while running:
                time.sleep(1.0)
                running = [j for j in running if not j.poll()]
    except BaseException:
        for job in jobs:
            job.kill()
        raise
    failed = [j for j in jobs if j.rc != 0]
    for job in failed:
        tail = job.log.read_text()[-4000:] if job.log.is_file() else ""
        print(f"[{job.name}] FAILED (rc {job.rc}); end of {job.log}:\n{tail}", file=sys.stderr)
    if failed:
        raise SystemExit(1)


# ------------------------------------------------------------------ predictions and metrics
def mace_predictions(args, model: Path, test_path: Path, mace_dir: Path, test_frames) -> dict:
    import ase.io

    output, model64 = mace_dir / "test_predictions.xyz", mace_dir / f"{model.stem}_float64.model"
    here = str(Path(__file__).resolve())
    cmd = [args.mace_python, here, "--mace-float64", str(model), str(model64)]
    res = subprocess.run(cmd, env=single_thread_env(), capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise SystemExit(f"converting {model} to float64 failed:\n{res.stderr[-3000:]}")
    cmd = [args.mace_python, "-m", "mace.cli.eval_configs", f"--configs={test_path}", f"--model={model64}"]
    cmd += [f"--output={output}", "--default_dtype=float64", "--batch_size=64", "--device=cpu"]
    res = subprocess.run(cmd, env=single_thread_env(), capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise SystemExit(f"mace_eval_configs failed:\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}")
    images = ase.io.read(str(output), index=":")
    if len(images) != len(test_frames) or not all(
        np.allclose(a.positions, f.positions) for a, f in zip(images, test_frames)
    ):
        raise SystemExit(f"{output}: frames differ from {test_path}")
    return {
        "energy": np.array([a.info["MACE_energy"] for a in images], dtype=np.float64),
        "forces": np.concatenate([a.arrays["MACE_forces"] for a in images]).astype(np.float64),
    }


def nearsight_predictions(best_model: str, test_frames) -> dict:
    import torch

    from nearsight.models.io import load_model
    from nearsight.training.metrics import predict

    torch.set_num_threads(1)
    preds = predict(load_model(best_model, dtype="float64"), test_frames)
    return {
        "energy": np.array([p["energy"] for p in preds], dtype=np.float64),
        "forces": np.concatenate([p["forces"] for p in preds]).astype(np.float64),
    }


def score(npz: Path, test_frames) -> dict:
    """Energy/force MAE (meV, meV/Å) of the predictions saved in ``npz``: the same code for both."""
    from nearsight.training.metrics import compute_metrics

    saved = np.load(npz)
    offsets = np.concatenate([[0], np.cumsum([f.n_atoms for f in test_frames])])
    if saved["forces"].shape != (offsets[-1], 3) or saved["energy"].shape != (len(test_frames),):
        raise SystemExit(f"{npz}: prediction shapes do not match the test set")
    preds = [
        {"energy": float(saved["energy"][k]), "forces": saved["forces"][offsets[k] : offsets[k + 1]]}
        for k in range(len(test_frames))
    ]
    m = compute_metrics(test_frames, preds)
    return {"e_mae": 1000 * m["energy_mae"], "f_mae": 1000 * m["forces_mae"], "e_rmse": 1000 * m["energy_rmse"],
            "f_rmse": 1000 * m["forces_rmse"]}  # fmt: skip


# ------------------------------------------------------------------ main
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=250, help="training + validation frames from train.xyz")
    p.add_argument("--valid-fraction", type=float, default=0.05)
    p.add_argument("--minutes", type=float, default=20.0, help="CPU-time budget of each side's training loop")
    p.add_argument("--size", default="small", choices=list(SIZES))
    p.add_argument("--out", default="runs/ethanol_vs_mace")
    p.add_argument(
        "--mace-python", default=os.environ.get("NEARSIGHT_MACE_PYTHON", "/tmp/macevenv/bin/python")
    )
    p.add_argument("--nearsight-config", help="YAML: training-section overrides (or training:/model:)")
    p.add_argument("--mace-scheduler-patience", default="auto", help="epochs, or auto (budget/20)")
    p.add_argument("--mace-extra", default="", help="extra mace_run_train options, appended last")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--reuse-mace",
        metavar="DIR",
        help="take MACE's trained model, timings and predictions from an earlier run's --out DIR "
        "(same --frames/--seed/--minutes/--size: the split files must be identical) and train only nearsight",
    )
    p.add_argument(
        "--sequential", action="store_true", help="train MACE, then nearsight (default: both at once)"
    )
    p.add_argument("--wall-limit-factor", type=float, default=4.0,
                   help="kill a side after this many budgets of wall time (+10 min)")  # fmt: skip
    p.add_argument("--mace-worker", help=argparse.SUPPRESS)
    p.add_argument("--nearsight-worker", help=argparse.SUPPRESS)
    p.add_argument("--mace-float64", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.mace_worker:
        return mace_worker(json.loads(Path(args.mace_worker).read_text()))
    if args.nearsight_worker:
        return nearsight_worker(json.loads(Path(args.nearsight_worker).read_text()))
    if args.mace_float64:
        return mace_to_float64(*args.mace_float64)
    if not Path(args.mace_python).exists():
        p.error(f"no MACE python at {args.mace_python!r}: see benchmarks/vs_mace.py for the venv")
    if args.mace_scheduler_patience != "auto" and not args.mace_scheduler_patience.isdigit():
        p.error("--mace-scheduler-patience takes a number of epochs or 'auto'")

    from ethanol_equivariant import shared_data_dir

    from nearsight.data.readers import read_frames
    from nearsight.data.stats import isolated_atom_energies

    data = shared_data_dir() / "ethanol"
    out = Path(args.out).resolve()
    mace_dir, ns_dir = out / "mace", out / "nearsight"
    reuse = Path(args.reuse_mace).resolve() if args.reuse_mace else None
    if reuse is not None:
        mace_dir = reuse / "mace"
    elif mace_dir.exists() and any(mace_dir.glob("checkpoints/*.pt")):
        p.error(
            f"{mace_dir} holds checkpoints of an earlier run (MACE would restart from them): use a new --out"
        )
    out.mkdir(parents=True, exist_ok=True)
    split = write_split(data, out, args.frames, args.valid_fraction, args.seed)
    species = sorted({int(z) for f in read_frames(str(split["train"]), validate=False) for z in f.numbers})
    e0s = {z: e for z, e in isolated_atom_energies(str(data / "isolated_atoms.xyz")).items() if z in species}

    budget_s = 60.0 * args.minutes
    ns_config = nearsight_config(args, split, data, ns_dir)
    max_L = hidden_l_max(ns_config)  # MACE's hidden irreps match nearsight's
    if reuse is not None:
        earlier_L = mace_max_L(json.loads((reuse / "mace_spec.json").read_text())["argv"])
        if earlier_L != max_L:
            p.error(
                f"--reuse-mace {reuse}: that MACE run had max_L {earlier_L}, nearsight's l_max is {max_L}"
            )
        earlier = json.loads((reuse / "results.json").read_text())
        same = {k: earlier["summary"][k] for k in ("budget_cpu_s", "size")} == {
            "budget_cpu_s": budget_s,
            "size": args.size,
        }
        for name in ("train.xyz", "valid.xyz"):
            same = same and (reuse / "data" / name).read_bytes() == (out / "data" / name).read_bytes()
        if not same:
            p.error(f"--reuse-mace {reuse}: that run had another split, size or budget")
    timeout_s = args.wall_limit_factor * budget_s + 600.0
    mace_spec = {
        "budget_s": budget_s,
        "argv": mace_arguments(args, split, e0s, mace_dir, max_L),
        "scheduler_patience": args.mace_scheduler_patience,
        "result": str(out / "mace_worker.json"),
    }
    ns_spec = {
        "config": ns_config,
        "result": str(out / "nearsight_worker.json"),
    }
    if reuse is not None:
        mace_spec["result"] = str(reuse / "mace_worker.json")
    for name, spec in (("mace", mace_spec), ("nearsight", ns_spec)):
        (out / f"{name}_spec.json").write_text(json.dumps(spec, indent=1))
    here = str(Path(__file__).resolve())
    jobs = [
        Job("mace", [args.mace_python, here, "--mace-worker", str(out / "mace_spec.json")], out / "mace.log", timeout_s),
        Job("nearsight", [sys.executable, here, "--nearsight-worker", str(out / "nearsight_spec.json")],
            out / "nearsight.log", timeout_s),
    ]  # fmt: skip
    print(
        f"ethanol: {split['n_train']} train + {split['n_valid']} valid frames, size {args.size}, "
        f"{args.minutes:g} CPU min per side, {'sequential' if args.sequential else 'concurrent'}",
        flush=True,
    )
    if reuse is not None:  # MACE's side as measured in the earlier run
        jobs[0].rc, jobs[0].cpu_s, jobs[0].wall_s = (
            0,
            earlier["rows"]["mace"]["cpu_s"],
            earlier["rows"]["mace"]["wall_s"],
        )
        print(f"[mace] reused from {reuse}", flush=True)
    run_jobs(jobs[1:] if reuse is not None else jobs, args.sequential)
    mace_res = json.loads(Path(mace_spec["result"]).read_text())
    ns_res = json.loads(Path(ns_spec["result"]).read_text())
    # MACE keeps only its best checkpoint, "<name>_run-<seed>_epoch-<N>.pt", N counted from 0
    epochs = [c.stem.rsplit("-", 1)[1] for c in mace_dir.glob(f"checkpoints/{MACE_NAME}_run-*_epoch-*.pt")]
    mace_res["best_epoch"] = max((int(e) + 1 for e in epochs if e.isdigit()), default=None)

    test_path = data / "test_MD.xyz"
    test_frames = read_frames(str(test_path))
    if reuse is not None:
        mace_pred = dict(np.load(reuse / "predictions_mace.npz"))
    else:
        mace_pred = mace_predictions(args, mace_dir / f"{MACE_NAME}.model", test_path, mace_dir, test_frames)
    predictions = {"mace": mace_pred, "nearsight": nearsight_predictions(ns_res["best_model"], test_frames)}
    rows = {}
    for job in jobs:
        npz = out / f"predictions_{job.name}.npz"
        np.savez(npz, **predictions[job.name])
        res = mace_res if job.name == "mace" else ns_res
        rows[job.name] = {
            **score(npz, test_frames),
            "loop_cpu_s": res["loop_cpu_s"],
            "cpu_s": job.cpu_s,
            "wall_s": job.wall_s,
            "epochs": res["epochs"],
            "best_epoch": res["best_epoch"],
            "stopped_by": res["stopped_by"],
            "threads": res["threads"],
        }
    frames = f"{split['n_train']}+{split['n_valid']}"
    print(f"\ntest: {len(test_frames)} frames of test_MD.xyz; CPU budget {budget_s:.0f} s per side")
    print(f"{'side':>10} {'frames':>8} {'loop CPU s':>10} {'CPU s':>7} {'wall s':>7} {'epochs':>6} {'best':>5} "
          f"{'E MAE meV':>9} {'F MAE meV/Å':>11}")  # fmt: skip
    for name, r in rows.items():
        print(
            f"{name:>10} {frames:>8} {r['loop_cpu_s']:10.0f} {r['cpu_s']:7.0f} {r['wall_s']:7.0f} {r['epochs']:6d} "
            f"{r['best_epoch'] if r['best_epoch'] is not None else '-':>5} {r['e_mae']:9.2f} {r['f_mae']:11.2f}"
        )
    ns, mc = rows["nearsight"], rows["mace"]
    summary = {
        "train_frames": split["n_train"],
        "valid_frames": split["n_valid"],
        "test_frames": len(test_frames),
        "size": args.size,
        "budget_cpu_s": budget_s,
        "mode": f"nearsight only, MACE from {reuse}"
        if reuse
        else "sequential"
        if args.sequential
        else "concurrent",
        "nearsight_f_mae": round(ns["f_mae"], 3),
        "mace_f_mae": round(mc["f_mae"], 3),
        "nearsight_e_mae": round(ns["e_mae"], 3),
        "mace_e_mae": round(mc["e_mae"], 3),
        "nearsight_loop_cpu_s": round(ns["loop_cpu_s"], 1),
        "mace_loop_cpu_s": round(mc["loop_cpu_s"], 1),
        "nearsight_cpu_s": round(ns["cpu_s"], 1),
        "mace_cpu_s": round(mc["cpu_s"], 1),
        "nearsight_wall_s": round(ns["wall_s"], 1),
        "mace_wall_s": round(mc["wall_s"], 1),
        "nearsight_epochs": ns["epochs"],
        "mace_epochs": mc["epochs"],
        "mace_first_epoch_cpu_s": mace_res.get("first_epoch_cpu_s"),
        "mace_scheduler_patience": mace_res.get("scheduler_patience"),
        "f_mae_ratio_mace_over_nearsight": round(mc["f_mae"] / ns["f_mae"], 3),
        "e_mae_ratio_mace_over_nearsight": round(mc["e_mae"] / ns["e_mae"], 3),
    }
    (out / "results.json").write_text(json.dumps({"summary": summary, "rows": rows}, indent=1))
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
