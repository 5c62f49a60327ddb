"""Training a potential from a validated config: the composition of the training package.

:func:`~nearsight.training.dataset.prepare_data` reads, splits and validates the frames and
the graphs are built once; :mod:`~nearsight.training.model_setup` builds or loads the model
and fits its statistics on the training split; :func:`~nearsight.training.loss.build_loss`
makes the loss of the declared terms; :class:`~nearsight.training.optimisation.Optimisation`
steps it; the loop below validates every ``valid_every`` epochs, keeps the best model, writes
the logs and checkpoints, and stops on the epoch, step or time budget or early stopping.

Nothing is lost: the best model is written atomically whenever the validation loss improves,
and a checkpoint (model, optimiser, scheduler, EMA, random states and the position in the
epoch's batch order) every ``checkpoint_every`` steps and at the end, so
``nearsight train CONFIG --resume`` continues the run exactly (on CPU, N steps + resume +
N steps equal 2N steps bit for bit).  A non-finite loss or gradient stops the run naming the
batch's frames, before any weight changes.

With ``data.dispersion`` the model trained is the short-range one (the labels are without D3) and
the model files hold it with the D3 term added back (:mod:`~nearsight.training.dispersion`);
checkpoints hold the model being trained.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path

import torch

from .. import units
from ..data.neighbours import collate
from ..models.forcefield import ForceField
from ..models.io import load_model, save_model
from ..progress import progress_bar
from .checkpoint import (
    CheckpointError,
    comparable_config,
    finished_reason,
    load_checkpoint,
    restore_training_state,
    save_checkpoint,
    training_state,
)
from .dataset import assign_heads, prepare_data, training_statistics
from .dispersion import mean_dispersion_per_atom, with_dispersion, without_dispersion
from .distributed import Distributed
from .log import TrainingLog, epoch_line, learning_curve_plot
from .loss import Loss, build_loss
from .metrics import write_json
from .model_setup import build_model, cache_descriptors, initial_model, initialise, initialise_charges
from .optimisation import Optimisation
from .validation import best_model_report, validation_pass

__all__ = ["Trainer", "build_model", "learning_curve_plot"]

DTYPES = {"float64": torch.float64, "float32": torch.float32}


class Trainer:
    """Runs one training job described by a validated config dict.

    ``resume=True`` continues from ``output_dir/checkpoint.pt``.  Under ``torchrun`` the
    job runs data-parallel (see :mod:`nearsight.training.distributed`).
    """

    def __init__(self, config: dict, log=None, resume: bool = False) -> None:
        self.config = config
        self.dist = Distributed.from_env()
        quiet = not self.dist.is_main
        self.log = (lambda message: None) if quiet else (log or (lambda message: print(message, flush=True)))
        self.dtype = DTYPES[config["dtype"]]
        self.out_dir = Path(config["output_dir"])
        self.best_path = self.out_dir / "best_model.pt"
        self.final_path = self.out_dir / "final_model.pt"
        self.checkpoint_path = self.out_dir / "checkpoint.pt"
        self.checkpoint: dict | None = None
        if resume:
            self.checkpoint = load_checkpoint(self.checkpoint_path)
            if comparable_config(self.checkpoint["config"]) != comparable_config(config):
                raise CheckpointError(
                    f"{str(self.checkpoint_path)!r}: the config differs from the one the run started with "
                    "(only epochs, max_steps, max_time_minutes, time_limit_clock, log_every, checkpoint_every and "
                    "tensorboard may change on resume)"
                )

    # ------------------------------------------------------------ the parts
    def prepare_data(self) -> None:
        self.data = prepare_data(self.config)
        self.species = self.data.species
        self.train_frames, self.valid_frames = self.data.train, self.data.valid
        self.test_frames = self.data.test
        removed = self.config["data"]["remove_duplicates"]
        for split, count in self.data.duplicates.items():
            if count:
                action = "removed from validation" if split == "valid" and removed else "kept"
                self.log(f"{count} {split} frame(s) repeat a training structure: {action}")
        if self.data.original:
            per_atom = mean_dispersion_per_atom(self.train_frames + self.valid_frames + self.test_frames)
            self.log(
                f"D3 dispersion ({self.config['data']['dispersion']['functional']}) subtracted from the labels: "
                f"mean |E_D3| {per_atom:.4g} eV/atom; the saved model adds it back"
            )

    def prepare_model(self) -> None:
        """The model, its statistics, the training and validation graphs and the loss."""
        cfg, t = self.config, self.config["training"]
        model, fresh = initial_model(cfg, self.species, self.dtype, self.checkpoint, self.checkpoint_path)
        self.train_graphs = self.data.graphs(self.train_frames, model.cutoff, self.dtype)
        self.valid_graphs = self.data.graphs(self.valid_frames, model.cutoff, self.dtype)
        self.cache_seconds = 0.0  # by the run's clock, counted in its time budget
        if t["cache_descriptors"]:
            graphs = self.train_graphs + self.valid_graphs
            self.cache_seconds = cache_descriptors(model, graphs, self.dtype, t["time_limit_clock"], self.log)
        heads = list(getattr(model, "heads", []))
        groups = {None: self.train_frames}
        if heads:
            splits = [
                (self.train_frames, self.train_graphs, True),
                (self.valid_frames, self.valid_graphs, False),
            ]
            groups = assign_heads(heads, cfg["data"]["head_key"], splits)
        stats = training_statistics(
            groups, self.train_frames, cfg["data"]["reference_energies"], self.species
        )
        frozen = initialise(model, fresh, self.checkpoint is not None, self.train_graphs, stats, t)
        if fresh:  # a charge head starts from charges fitted to the energies (or given)
            line = initialise_charges(model, self.train_graphs, cfg["model"].get("longrange"), cfg["seed"])
            if line:
                self.log(line)
        if self.checkpoint is not None:
            self.loss_fn = Loss.from_state_dict(self.checkpoint["loss"])
            stats["reference_energies"] = {
                int(k): v for k, v in self.checkpoint["reference_energies"].items()
            }
        else:
            self.loss_fn = build_loss(t, self.train_frames, stats, getattr(model, "n_states", 1))
        self.model = model
        self.forcefield = ForceField(model)
        self.reference_energies = stats["reference_energies"]
        n_params = sum(p.numel() for p in model.parameters())
        n_features = getattr(getattr(getattr(model, "short", model), "descriptor", None), "n_features", "-")
        self.log(
            f"species {self.species}  train {len(self.train_frames)}  valid {len(self.valid_frames)}  "
            f"features {n_features}  parameters {n_params}" + (f" ({frozen} frozen)" if frozen else "")
        )
        terms = ", ".join(
            f"{n} (σ {_numbers(x.sigma)}"
            + (f" eV/Å³ = {x.sigma / units.GPa:.3g} GPa" if n == "stress" else "")
            + f", λ {x.weight:g})"
            for n, x in self.loss_fn.terms.items()
        )
        self.log(f"loss terms: {terms}; energy scale {stats['energy_scale']:.4g} eV; reference energies "
                 f"{self.reference_energies}")  # fmt: skip

    def setup(self) -> None:
        """Data, model, optimiser, scheduler, EMA and (under torchrun) the DDP wrapper."""
        if self.config["num_threads"]:
            torch.set_num_threads(self.config["num_threads"])
        self.prepare_data()
        self.prepare_model()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.optim = Optimisation(self.model, self.config["training"])
        self.engine = self.forcefield
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            self.engine = DistributedDataParallel(self.forcefield, find_unused_parameters=True)

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self.optim.optimizer

    @property
    def scheduler(self):
        return self.optim.scheduler

    @property
    def ema(self):
        return self.optim.ema

    def metadata(self) -> dict:
        """What a model file of this run records besides the weights."""
        meta = {
            "reference_energies": {str(k): v for k, v in self.reference_energies.items()},
            "config": self.config,
        }
        data = self.config["data"]
        n_states = getattr(self.model, "n_states", 1)
        if n_states > 1:  # what the states are and how each was weighted
            meta["states"] = {
                "n_states": n_states,
                "order": "adiabatic: ascending energy, ground state first (state_energies[:, 0] = energy)",
                "couplings": "h_ij = u_i^T (dV_d/dR) u_j, eV/Å, pairs i < j: (0,1), (0,2), ..., (1,2), ...",
                "epsilon_eV": self.model.epsilon,
                "sigma": {n: t.sigma for n, t in self.loss_fn.terms.items() if n.startswith("state_")},
            }
        if data["baseline_energy_key"]:
            meta["delta"] = {
                "baseline": self.config["model"]["baseline"],
                "baseline_energy_key": data["baseline_energy_key"],
                "baseline_forces_key": data["baseline_forces_key"],
                "baseline_stress_key": data["baseline_stress_key"],
            }
        return meta

    def evaluation_model(self):
        """Context in which ``self.model`` holds the weights to evaluate and save (EMA if on)."""
        return self.ema.applied(self.model) if self.ema is not None else nullcontext(self.model)

    def saved_model(self) -> torch.nn.Module:
        """The model the files hold: ``self.model``, with ``data.dispersion`` its D3 term added
        (sharing its weights)."""
        settings = self.config["data"]["dispersion"]
        return self.model if settings is None else with_dispersion(self.model, settings)

    def _valid_loss(self) -> tuple[float, dict]:
        batch_size = self.config["training"]["eval_batch_size"]
        return validation_pass(
            self.forcefield, self.loss_fn, self.valid_frames, self.valid_graphs, batch_size
        )

    # ----------------------------------------------------------- checkpoints
    def save_checkpoint(self, loop: dict, gen: torch.Generator) -> None:
        if self.dist.is_main:
            state = training_state(
                self.model, self.metadata(), self.optim, gen, loop, self.loss_fn, self.config
            )
            save_checkpoint(state, self.checkpoint_path)

    # ------------------------------------------------------------- one step
    def _batch_names(self, indices: Sequence[int]) -> str:
        names = [f"{self.train_frames[i].source}:{self.train_frames[i].index}" for i in indices]
        return ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")

    def gradient_step(self, indices: Sequence[int], where: str) -> float:
        """Loss and gradients of the global batch ``indices`` (this rank's share under DDP).

        Returns the batch loss; raises ``FloatingPointError`` (on every rank) if the loss or
        the gradient norm is not finite, before the weights change.
        """
        batch = collate([self.train_graphs[i] for i in self.dist.shard(indices)])
        out = self.engine(batch, forces=True, stress=self.loss_fn.needs_stress, create_graph=True)
        loss = self.loss_fn(out, batch, n_total=len(indices))
        return self.optim.backward(loss, self.dist, where, lambda: self._batch_names(indices))

    def _set_warmup_lr(self, step: int) -> None:
        self.optim.warmup_lr(step)

    def _set_budget_lr(self, epoch: int, elapsed: float) -> None:
        self.optim.budget_lr(epoch, elapsed)

    def _roll_back(self, epoch: int, best_epoch: int) -> None:
        """``plateau_rollback``: weights (and their EMA) back to the best model's; the optimiser's
        moments and the lowered lr stay."""
        self.dist.barrier()  # the main rank has written the best model file
        best = load_model(self.best_path, dtype=self.dtype)
        if self.config["data"]["dispersion"] is not None:
            best = without_dispersion(best)
        self.optim.load_weights(best.state_dict())
        self.log(f"epoch {epoch}: lr lowered, weights rolled back to the best epoch {best_epoch}")

    # ----------------------------------------------------------------- train
    def finished(self) -> str | None:
        """Why the run being resumed has nothing left to do within the config's budget, or None
        (:func:`~nearsight.training.checkpoint.finished_reason`)."""
        if self.checkpoint is None:
            return None
        return finished_reason(self.checkpoint["loop"], self.config["training"], self.out_dir)

    def train(self) -> Path:
        """Run (or, with ``resume``, continue) the training; the path of the best model.

        Resuming a run that already finished (:meth:`finished`) says so and writes nothing.
        """
        t = self.config["training"]
        done = self.finished()
        if done is not None:
            self.log(
                f"{self.out_dir}: the run already finished ({done}); nothing to do (raise training.epochs, "
                "max_steps or max_time_minutes to train on)"
            )
            return self.best_path
        self.setup()
        gen = torch.Generator().manual_seed(self.config["seed"])
        if self.dist.is_main:  # temporary files of writes a kill interrupted
            for name in ("checkpoint.pt", "best_model.pt", "final_model.pt"):
                for stale in self.out_dir.glob(f".{name}.*.tmp"):
                    stale.unlink(missing_ok=True)
        self.records = TrainingLog(
            self.out_dir, list(self.loss_fn.terms), t["tensorboard"], self.dist.is_main, t["time_limit_clock"]
        )
        if self.checkpoint is not None:
            loop = restore_training_state(self.checkpoint, self.optim, gen, str(self.checkpoint_path))
            self.log(
                f"resumed from {self.checkpoint_path} at epoch {loop['epoch']}, step {loop['global_step']}"
            )
        else:
            loop = {
                "epoch": 1, "step_in_epoch": 0, "global_step": 0, "order": None, "best": math.inf,
                "best_epoch": -1, "elapsed_s": 0.0, "running": 0.0, "seen": 0, "stage": -1,
            }  # fmt: skip
        self.records.start(loop["global_step"], fresh=self.checkpoint is None, epoch=loop["epoch"])
        self.clock = time.process_time if t["time_limit_clock"] == "cpu" else time.perf_counter
        start = self.clock() - loop["elapsed_s"] - self.cache_seconds
        log, enabled = self.log, None if self.dist.is_main else False
        self.bar = progress_bar(
            total=t["epochs"], initial=loop["epoch"] - 1, desc="training", unit="epoch", enabled=enabled
        )
        self.log = self.bar.wrap(log)  # the lines print above the bar
        try:
            reason = self._loop(loop, gen, start)
        finally:
            self.log = log
            self.bar.close()
            self.records.close()
        loop["elapsed_s"] = self.clock() - start
        self.save_checkpoint(loop, gen)
        self.wall_time = loop["elapsed_s"]  # by the run's clock: CPU seconds with time_limit_clock: cpu
        if self.dist.is_main:
            with self.evaluation_model():
                save_model(
                    self.saved_model(), self.final_path, {**self.metadata(), "epoch": loop["epoch"] - 1}
                )
                if not self.best_path.is_file():  # stopped before the first validation
                    self.model.eval()
                    _, m = self._valid_loss()
                    save_model(self.saved_model(), self.best_path, {**self.metadata(), "valid_metrics": m})
            self.finish(loop, reason)
        self.dist.barrier()
        return self.best_path

    def _loop(self, loop: dict, gen: torch.Generator, start: float) -> str:
        """Epochs of optimiser steps until a budget or early stopping ends the run; the reason."""
        t = self.config["training"]
        n_batches = math.ceil(len(self.train_graphs) / t["batch_size"])
        while loop["epoch"] <= t["epochs"]:
            epoch = loop["epoch"]
            loop["stage"], stage = self.optim.apply_stage(epoch, loop["stage"], self.loss_fn)
            if stage is not None:
                self.log(f"epoch {epoch}: stage {loop['stage']} {stage}")
            if loop["order"] is None:
                loop["order"] = torch.randperm(len(self.train_graphs), generator=gen).tolist()
            self.model.train()
            while loop["step_in_epoch"] < n_batches:
                if t["max_steps"] is not None and loop["global_step"] >= t["max_steps"]:
                    return "max_steps"
                s = loop["step_in_epoch"] * t["batch_size"]
                indices = loop["order"][s : s + t["batch_size"]]
                loss = self.gradient_step(indices, f"epoch {epoch}, step {loop['global_step']}")
                self._set_warmup_lr(loop["global_step"])
                if t["scheduler"] == "budget" and loop["global_step"] >= t["warmup_steps"]:
                    self._set_budget_lr(epoch, self.dist.max(self.clock() - start))
                self.optim.step()
                loop["running"] += loss * len(indices)
                loop["seen"] += len(indices)
                loop["step_in_epoch"] += 1
                loop["global_step"] += 1
                if t["checkpoint_every"] and loop["global_step"] % t["checkpoint_every"] == 0:
                    loop["elapsed_s"] = self.clock() - start
                    self.save_checkpoint(loop, gen)
            elapsed = self.dist.max(self.clock() - start)  # every rank stops after the same epoch
            out_of_time = t["max_time_minutes"] is not None and elapsed > 60 * t["max_time_minutes"]
            train_loss = loop["running"] / max(loop["seen"], 1)
            self.bar.set_postfix(loss=f"{train_loss:.3e}", lr=f"{self.optim.lr:.2e}", refresh=False)
            self.bar.update()
            loop.update(epoch=epoch + 1, step_in_epoch=0, order=None, running=0.0, seen=0)
            if epoch % t["valid_every"] and epoch != t["epochs"] and not out_of_time:
                continue
            if self._validate(epoch, loop, train_loss, elapsed):
                return "early_stopping"
            if out_of_time:
                self.log(f"time limit of {t['max_time_minutes']} min ({t['time_limit_clock']} clock) reached")
                return "max_time"
        return "epochs"

    def _validate(self, epoch: int, loop: dict, train_loss: float, elapsed: float) -> bool:
        """Validation at the end of an epoch: the best model, the schedule, the logs; True when
        early stopping ends the run."""
        t = self.config["training"]
        self.model.eval()
        with self.evaluation_model():
            v_loss, m = self._valid_loss()
            improved = v_loss < loop["best"]
            if improved:
                loop["best"], loop["best_epoch"] = v_loss, epoch
                if self.dist.is_main:
                    save_model(
                        self.saved_model(),
                        self.best_path,
                        {**self.metadata(), "epoch": epoch, "valid_metrics": m},
                    )
        lowered = self.optim.after_validation(v_loss, warm=loop["global_step"] <= t["warmup_steps"])
        if lowered and t["plateau_rollback"] and 0 < loop["best_epoch"] < epoch:
            self._roll_back(epoch, loop["best_epoch"])
        lr = self.optim.lr
        self.bar.set_postfix(valid=f"{v_loss:.3e}", lr=f"{lr:.2e}")
        self.records.row(epoch, loop["global_step"], train_loss, v_loss, m, lr, elapsed)
        if epoch % t["log_every"] == 0 or improved and epoch == 1:
            self.log(epoch_line(epoch, train_loss, v_loss, m, lr, elapsed, improved))
        if epoch - loop["best_epoch"] >= t["early_stopping_patience"]:
            self.log(f"early stopping: no improvement for {t['early_stopping_patience']} epochs")
            return True
        return False

    def finish(self, loop: dict, reason: str) -> None:
        """Summary, learning curve, and metrics and parity plots of the best model."""
        t = self.config["training"]
        summary = {
            "best_epoch": loop["best_epoch"],
            "best_valid_loss": loop["best"],
            "wall_time_s": self.wall_time,
            "time_limit_clock": t["time_limit_clock"],
            "steps": loop["global_step"],
            "stopped_by": reason,
            "duplicates_of_training_frames": self.data.duplicates,
        }
        if self.best_path.is_file():
            best = load_model(self.best_path, dtype=self.dtype)
            splits = [("valid", self.valid_frames, self.valid_graphs), ("test", self.test_frames, None)]
            if self.data.original:  # the full model (D3 added back) against the original labels
                splits = [(name, self.data.original[name], None) for name in ("valid", "test")]
            graphs_of = lambda frames: self.data.graphs(frames, best.cutoff, self.dtype)  # noqa: E731
            summary.update(
                best_model_report(best, self.loss_fn, splits, self.out_dir, graphs_of, t["eval_batch_size"])
            )
        write_json(summary, self.out_dir / "training_summary.json")
        learning_curve_plot(self.out_dir / "training_log.csv", self.out_dir / "learning_curve.png")
        self.log(
            f"best epoch {loop['best_epoch']}, validation loss {loop['best']:.4e}, "
            f"{t['time_limit_clock']} time {self.wall_time:.1f} s ({reason})"
        )


def _numbers(value: float | list[float]) -> str:
    """σ of a loss term for the log: one number, or one per state."""
    return f"{value:.4g}" if isinstance(value, float) else "[" + ", ".join(f"{v:.4g}" for v in value) + "]"
