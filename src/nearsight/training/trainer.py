"""Training a potential from a validated config.

Data are read and validated, split, turned into graphs once (neighbour lists
are computed a single time per frame), model statistics are fitted on the
training split (per-element reference energies, descriptor standardisation,
energy scale), and the seed's loss is minimised with Adam/AdamW, learning-rate
warm-up and schedule, optional EMA of the weights, loss-weight stages and early
stopping on the validation loss.

Nothing is lost: the best model is written atomically whenever the validation
loss improves, and a checkpoint (model, optimiser, scheduler, EMA, random
states and the position in the epoch's batch order) every ``checkpoint_every``
steps and at the end, so ``nearsight train CONFIG --resume`` continues the run
exactly (on CPU, N steps + resume + N steps equal 2N steps bit for bit).  A
non-finite loss or gradient stops the run naming the batch's frames, before any
weight changes.

Δ-learning (``data.baseline_energy_key``): the targets are the differences
between the labels and a cheaper method's labels stored with each frame; the
model file records the baseline so its calculator adds it back.  Fine-tuning
(``model.init_from``): start from a model file, optionally freezing layers and
refitting the per-element energy shifts to the new data.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import time
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .. import keys
from ..data.frame import Frame
from ..data.neighbours import collate, frame_to_graph
from ..data.readers import read_frames
from ..data.stats import energy_residual_std, fit_reference_energies, force_rms, isolated_atom_energies
from ..data.validate import validate_frames
from ..descriptors.acsf import default_acsf_params
from ..models.bpnn import BehlerParrinello
from ..models.equivariant import build_equivariant
from ..models.forcefield import ForceField, edge_vectors
from ..models.io import load_model, model_from_dict, model_to_dict, save_model
from .checkpoint import CheckpointError, comparable_config, load_checkpoint, save_checkpoint
from .distributed import Distributed
from .ema import EMA
from .loss import EnergyForceLoss
from .metrics import compute_metrics, compute_metrics_by_type, parity_plot, split_predictions, write_json

DTYPES = {"float64": torch.float64, "float32": torch.float32}


def load_split(paths: str | list[str] | None, data_cfg: dict) -> list[Frame]:
    """Frames of one split; with baseline keys, labels minus the baseline labels (Δ-learning)."""
    if paths is None:
        return []
    frames: list[Frame] = []
    for path in [paths] if isinstance(paths, str) else paths:
        common = dict(
            format=data_cfg["format"],
            config_type_key=data_cfg["config_type_key"],
            weight_key=data_cfg["weight_key"],
        )
        labelled = read_frames(
            path,
            energy_key=data_cfg["energy_key"],
            forces_key=data_cfg["forces_key"],
            stress_key=data_cfg["stress_key"],
            **common,
        )
        if data_cfg["baseline_energy_key"]:
            base = read_frames(
                path,
                energy_key=data_cfg["baseline_energy_key"],
                # a key no file uses: without a baseline key, read no baseline forces/stress
                forces_key=data_cfg["baseline_forces_key"] or "__none__",
                stress_key=data_cfg["baseline_stress_key"] or "__none__",
                validate=False,
                **common,
            )
            labelled = [subtract_baseline(f, b, data_cfg) for f, b in zip(labelled, base)]
        frames += labelled
    return frames


def subtract_baseline(frame: Frame, base: Frame, data_cfg: dict) -> Frame:
    """``frame`` with each label replaced by label − baseline label (missing baselines raise)."""
    where = f"{frame.source}, frame {frame.index}"
    if base.energy is None:
        raise ValueError(f"{where}: no baseline energy {data_cfg['baseline_energy_key']!r} for Δ-learning")
    changes = {"energy": None if frame.energy is None else frame.energy - base.energy}
    if frame.forces is not None and data_cfg["baseline_forces_key"]:
        if base.forces is None:
            raise ValueError(f"{where}: no baseline forces {data_cfg['baseline_forces_key']!r}")
        changes["forces"] = frame.forces - base.forces
    elif frame.forces is not None:
        changes["forces"] = None  # forces of the difference are unknown without baseline forces
    if frame.stress is not None and data_cfg["baseline_stress_key"]:
        if base.stress is None:
            raise ValueError(f"{where}: no baseline stress {data_cfg['baseline_stress_key']!r}")
        changes["stress"] = frame.stress - base.stress
    elif frame.stress is not None:
        changes["stress"] = None
    info = dict(frame.info, baseline_energy=base.energy)
    return dataclasses.replace(frame, info=info, **changes)


def build_model(model_cfg: dict, species: Sequence[int]) -> nn.Module:
    """A model from the ``model`` section of a config."""
    cutoff = float(model_cfg["cutoff"])
    if model_cfg["type"] == "equivariant":
        return build_equivariant(model_cfg["equivariant"], species, cutoff)
    if model_cfg["descriptor"] == "soap":
        weighting = model_cfg["weighting"] or {"function": "poly", "r0": cutoff, "c": 1.0, "m": 2.0}
        descriptor = {
            "type": "soap",
            "r_cut": cutoff,
            "n_max": model_cfg["n_max"],
            "l_max": model_cfg["l_max"],
            "sigma": model_cfg["sigma"],
            "rbf": model_cfg["rbf"],
            "weighting": weighting,
        }
        return BehlerParrinello(
            species, descriptor, model_cfg["hidden"], model_cfg["activation"], model_cfg["heads"]
        )
    r_ang = model_cfg["cutoff_angular"]
    params = default_acsf_params(
        cutoff,
        model_cfg["n_radial"],
        r_ang,
        model_cfg["n_angular_eta"],
        model_cfg["angular"],
        model_cfg["n_angle_sections"],
        model_cfg["n_angular_shifts"],
    )
    for key in ("g2_params", "g3_params", "g4_params", "g5_params", "ga_params"):
        if model_cfg[key] is not None:
            params[key] = model_cfg[key]
    descriptor = {"r_cut": cutoff, "r_cut_angular": r_ang, **params}
    return BehlerParrinello(
        species, descriptor, model_cfg["hidden"], model_cfg["activation"], model_cfg["heads"]
    )


@torch.no_grad()
def fit_statistics(
    model: BehlerParrinello, graphs: Sequence[dict], reference: dict[int, float], energy_scale: float
) -> None:
    """Descriptor mean/std over all training atoms; shift and scale of atomic energies."""
    if hasattr(model, "fit_statistics"):  # the equivariant model: mean neighbour count, shift, scale
        model.fit_statistics(graphs, reference, energy_scale)
        return
    total = total_sq = None
    count = 0
    for start in range(0, len(graphs), 256):
        batch = dict(collate(graphs[start : start + 256]))
        batch[keys.EDGE_VECTORS] = edge_vectors(
            batch[keys.POSITIONS],
            batch[keys.CELL],
            batch[keys.BATCH],
            batch[keys.EDGE_INDEX],
            batch[keys.CELL_SHIFTS],
        )
        x = model.features(batch).double()  # [n_atoms, n_features]
        total = x.sum(0) if total is None else total + x.sum(0)
        total_sq = (x**2).sum(0) if total_sq is None else total_sq + (x**2).sum(0)
        count += x.shape[0]
    mean = total / count
    std = (total_sq / count - mean**2).clamp(min=0).sqrt()
    model.set_statistics(mean, std, reference, energy_scale)


def _reference_energies(
    frames: Sequence[Frame], spec: str | dict, species: Sequence[int]
) -> dict[int, float]:
    if spec == "least_squares":
        return fit_reference_energies(frames, list(species))
    ref = isolated_atom_energies(spec)
    missing = [z for z in species if z not in ref]
    if missing:
        raise ValueError(f"reference_energies {spec!r} lacks elements with atomic numbers {missing}")
    return ref


def _mean_residual_per_atom(frames: Sequence[Frame], ref: dict[int, float]) -> float:
    """Mean of (E - Σ_i e_Z_i) / n over labelled frames: the start value of the atomic energies."""
    values = [
        (f.energy - sum(ref.get(int(z), 0.0) for z in f.numbers)) / f.n_atoms
        for f in frames
        if f.energy is not None
    ]
    return float(np.mean(values)) if values else 0.0


def _stress_rms(frames: Sequence[Frame]) -> float:
    """RMS stress component of the labelled frames (eV/Å³); 0.01 if none carry stress."""
    values = [f.stress.ravel() for f in frames if f.stress is not None]
    rms = float(np.sqrt(np.mean(np.concatenate(values) ** 2))) if values else 0.0
    return rms if rms > 0 else 0.01


def freeze_layers(model: nn.Module, spec: str | int | None) -> int:
    """Freeze parts of a Behler-Parrinello model for fine-tuning; returns the frozen parameter count.

    ``"readout"``: only the last layer of each element network trains.  ``N``: the first N
    linear layers of each element network are frozen.
    """
    if spec is None:
        return 0
    nets = getattr(model, "nets", None)
    if nets is None:
        raise ValueError(
            f"training.freeze is implemented for Behler-Parrinello models, not {model.model_type!r}"
        )
    frozen = 0
    for net in nets:
        linears = [m for m in net if isinstance(m, nn.Linear)]
        n = len(linears) - 1 if spec == "readout" else int(spec)
        if n > len(linears):
            raise ValueError(f"training.freeze = {spec!r}: the element networks have {len(linears)} layers")
        for layer in linears[:n]:
            for p in layer.parameters():
                p.requires_grad_(False)
                frozen += p.numel()
    return frozen


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
        self.resume = resume
        self.checkpoint: dict | None = None
        if resume:
            self.checkpoint = load_checkpoint(self.checkpoint_path)
            if comparable_config(self.checkpoint["config"]) != comparable_config(config):
                raise CheckpointError(
                    f"{str(self.checkpoint_path)!r}: the config differs from the one the run started with "
                    "(only epochs, max_steps, max_time_minutes, time_limit_clock, log_every, checkpoint_every and "
                    "tensorboard may change on resume)"
                )

    # ------------------------------------------------------------------ data
    def prepare_data(self) -> None:
        cfg = self.config
        data_cfg = cfg["data"]
        rng = np.random.default_rng(cfg["seed"] if data_cfg["split_seed"] is None else data_cfg["split_seed"])
        train = load_split(data_cfg["train"], data_cfg)
        valid = load_split(data_cfg["valid"], data_cfg)
        if not valid:
            order = rng.permutation(len(train))
            n_valid = max(1, int(round(data_cfg["valid_fraction"] * len(train))))
            if len(train) < 2:
                raise ValueError(f"{data_cfg['train']}: need at least 2 frames to split off validation data")
            valid = [train[i] for i in order[:n_valid]]
            train = [train[i] for i in order[n_valid:]]
        if data_cfg["max_train_frames"] is not None:
            train = train[: data_cfg["max_train_frames"]]
        self.species = sorted({int(z) for f in train for z in f.numbers})
        validate_frames(train, require=("energy",), min_distance=data_cfg["min_distance"])
        validate_frames(valid, require=(), min_distance=data_cfg["min_distance"], known_species=self.species)
        self.train_frames, self.valid_frames = train, valid
        self.test_frames = load_split(data_cfg["test"], data_cfg)

    # ----------------------------------------------------------------- model
    def _initial_model(self) -> tuple[nn.Module, bool]:
        """The model to train and whether its statistics are still to be fitted."""
        cfg = self.config
        if self.checkpoint is not None:
            return model_from_dict(self.checkpoint["model"], str(self.checkpoint_path)).to(self.dtype), False
        torch.manual_seed(cfg["seed"])
        init = cfg["model"]["init_from"]
        if init is None:
            return build_model(cfg["model"], self.species).to(self.dtype), True
        model = load_model(init, dtype=self.dtype)
        missing = sorted(set(self.species) - set(model.species))
        if missing:
            raise ValueError(f"model.init_from {init!r} does not know the element(s) {missing} in the data")
        return model, False

    def prepare_model(self) -> None:
        cfg = self.config
        tcfg = cfg["training"]
        model, fresh = self._initial_model()
        cutoff = model.cutoff
        self.train_graphs = [frame_to_graph(f, cutoff, self.dtype) for f in self.train_frames]
        self.valid_graphs = [frame_to_graph(f, cutoff, self.dtype) for f in self.valid_frames]
        heads = list(getattr(model, "heads", []))
        groups = {None: self.train_frames}
        if heads:
            groups = self._assign_heads(heads)
        refs, shifts = {}, {}
        for head, frames in groups.items():
            refs[head] = _reference_energies(frames, cfg["data"]["reference_energies"], self.species)
            shifts[head] = {z: e + _mean_residual_per_atom(frames, refs[head]) for z, e in refs[head].items()}
        main = heads[-1] if heads else None  # the default head sets the energy-based defaults
        ref = refs[main]
        shift = shifts if heads else shifts[main]  # {head: {Z: e}} for multi-head models
        f_rms = force_rms(self.train_frames) if any(f.forces is not None for f in self.train_frames) else None
        e_std = energy_residual_std(groups[main], ref)
        scale = f_rms if f_rms and math.isfinite(f_rms) and f_rms > 0 else max(e_std, 1e-3)
        if fresh:
            fit_statistics(model, self.train_graphs, shift, scale)
        elif self.checkpoint is None and tcfg["refit_energy_shift"] and hasattr(model, "energy_shift"):
            model.set_energy_shift(shift)  # fine-tuning on another level of theory: new offsets
        frozen = freeze_layers(model, tcfg["freeze"])
        if self.checkpoint is not None:
            self.loss_fn = EnergyForceLoss(**self.checkpoint["loss"])
            ref = {int(k): v for k, v in self.checkpoint["reference_energies"].items()}
        else:
            self.loss_fn = EnergyForceLoss(
                sigma_energy=float(tcfg["sigma_energy"] or max(e_std, 1e-6)),
                sigma_forces=float(tcfg["sigma_forces"] or max(f_rms or 1.0, 1e-6)),
                sigma_stress=float(tcfg["sigma_stress"] or _stress_rms(self.train_frames)),
                stress_weight=float(tcfg["stress_weight"]),
            )
        self.model = model
        self.forcefield = ForceField(model)
        self.reference_energies = ref
        n_params = sum(p.numel() for p in model.parameters())
        n_features = getattr(getattr(model, "descriptor", None), "n_features", "-")
        self.log(
            f"species {self.species}  train {len(self.train_frames)}  valid {len(self.valid_frames)}  "
            f"features {n_features}  parameters {n_params}" + (f" ({frozen} frozen)" if frozen else "")
        )
        self.log(
            f"sigma_E {self.loss_fn.sigma_energy:.4g} eV  sigma_F {self.loss_fn.sigma_forces:.4g} eV/Å  "
            f"energy scale {scale:.4g} eV  reference energies {ref}"
        )

    def _assign_heads(self, heads: list[str]) -> dict[str, list[Frame]]:
        """Tag every graph with its frame's head index; the training frames of each head."""
        key = self.config["data"]["head_key"]
        groups: dict[str, list[Frame]] = {h: [] for h in heads}
        for frames, graphs, train in (
            (self.train_frames, self.train_graphs, True),
            (self.valid_frames, self.valid_graphs, False),
        ):
            for frame, graph in zip(frames, graphs):
                name = frame.info.get(key)
                if name is None or str(name) not in heads:
                    raise ValueError(
                        f"{frame.source}, frame {frame.index}: info[{key!r}] = {name!r} is not one of the "
                        f"model's heads {heads}"
                    )
                graph[keys.HEAD] = torch.tensor([heads.index(str(name))])
                if train:
                    groups[str(name)].append(frame)
        empty = [h for h, frames in groups.items() if not frames]
        if empty:
            raise ValueError(f"no training frames for head(s) {empty}")
        return groups

    def _optimizer(self) -> tuple[torch.optim.Optimizer, object | None]:
        t = self.config["training"]
        cls = torch.optim.AdamW if t["optimizer"] == "adamw" else torch.optim.Adam
        params = [p for p in self.model.parameters() if p.requires_grad]
        opt = cls(params, lr=t["lr"], weight_decay=t["weight_decay"], amsgrad=t["amsgrad"])
        if t["scheduler"] == "plateau":
            sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
                opt, factor=t["scheduler_factor"], patience=t["scheduler_patience"], min_lr=t["min_lr"]
            )
        elif t["scheduler"] == "cosine":
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=t["epochs"], eta_min=t["min_lr"])
        else:
            sched = None
        return opt, sched

    def metadata(self) -> dict:
        """What a model file of this run records besides the weights."""
        meta = {
            "reference_energies": {str(k): v for k, v in self.reference_energies.items()},
            "config": self.config,
        }
        data = self.config["data"]
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

    def _predict(self, graphs: Sequence[dict], stress: bool) -> tuple[float, list[dict]]:
        t = self.config["training"]
        total, n, preds = 0.0, 0, []
        for start in range(0, len(graphs), t["eval_batch_size"]):
            batch = collate(graphs[start : start + t["eval_batch_size"]])
            out = {k: v.detach() for k, v in self.forcefield(batch, forces=True, stress=stress).items()}
            n_g = batch[keys.N_ATOMS].shape[0]
            total += float(self.loss_fn(out, batch)) * n_g
            n += n_g
            preds += split_predictions(out, batch)
        return total / max(n, 1), preds

    def _valid_loss(self) -> tuple[float, dict]:
        """Validation loss and metrics from one pass over the validation graphs."""
        stress = self.loss_fn.needs_stress or any(f.pbc.all() for f in self.valid_frames)
        loss, preds = self._predict(self.valid_graphs, stress)
        return loss, compute_metrics(self.valid_frames, preds)

    # ------------------------------------------------------------- one step
    def _batch_names(self, indices: Sequence[int]) -> str:
        names = [f"{self.train_frames[i].source}:{self.train_frames[i].index}" for i in indices]
        return ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")

    def gradient_step(self, indices: Sequence[int], where: str) -> float:
        """Loss and gradients of the global batch ``indices`` (this rank's share under DDP).

        Returns the batch loss; raises ``FloatingPointError`` (on every rank) if the loss or
        the gradient norm is not finite, before the weights change.
        """
        t = self.config["training"]
        local = self.dist.shard(indices)
        batch = collate([self.train_graphs[i] for i in local])
        out = self.engine(batch, forces=True, stress=self.loss_fn.needs_stress, create_graph=True)
        loss = self.loss_fn(out, batch, n_total=len(indices))
        ok = self.dist.all_ok(bool(torch.isfinite(loss)))
        if not ok:
            raise FloatingPointError(
                f"non-finite loss ({float(loss.detach())} on rank {self.dist.rank}) at {where}; batch frames: "
                f"{self._batch_names(indices)}; the best model and the last checkpoint are unchanged"
            )
        self.optimizer.zero_grad(set_to_none=True)
        (loss * self.dist.world).backward()  # DDP averages over ranks: the sum over shards remains
        params = [p for p in self.model.parameters() if p.requires_grad]
        norm = nn.utils.clip_grad_norm_(params, t["clip_grad_norm"] or math.inf)
        if not torch.isfinite(norm):
            raise FloatingPointError(
                f"non-finite gradient norm ({float(norm)}) at {where}; batch frames: "
                f"{self._batch_names(indices)}; the best model and the last checkpoint are unchanged"
            )
        return float(loss.detach())

    def _set_warmup_lr(self, step: int) -> None:
        t = self.config["training"]
        if step < t["warmup_steps"]:
            for group in self.optimizer.param_groups:
                group["lr"] = t["lr"] * (step + 1) / t["warmup_steps"]
        elif step == t["warmup_steps"] and step > 0:
            for group in self.optimizer.param_groups:
                group["lr"] = t["lr"]

    def _set_budget_lr(self, epoch: int, elapsed: float) -> None:
        """``scheduler: budget``: cosine from the peak lr (``lr``, or the latest stage's) down to
        ``min_lr`` as ``elapsed`` goes from 0 to ``max_time_minutes``."""
        t = self.config["training"]
        peak = t["lr"]
        for stage in t["stages"] or []:
            if stage["epoch"] <= epoch and "lr" in stage:
                peak = float(stage["lr"])
        progress = min(1.0, elapsed / (60.0 * t["max_time_minutes"]))
        lr = t["min_lr"] + (peak - t["min_lr"]) * 0.5 * (1.0 + math.cos(math.pi * progress))
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def _apply_stage(self, epoch: int, loop: dict) -> None:
        """Switch loss weights (and learning rate) at the configured epochs."""
        stages = self.config["training"]["stages"] or []
        active = max((k for k, s in enumerate(stages) if s["epoch"] <= epoch), default=-1)
        if active <= loop["stage"]:
            return
        stage = stages[active]
        for key in ("sigma_energy", "sigma_forces", "sigma_stress", "stress_weight"):
            if key in stage:
                setattr(self.loss_fn, key, float(stage[key]))
        if "lr" in stage:
            for group in self.optimizer.param_groups:
                group["lr"] = float(stage["lr"])
        loop["stage"] = active
        self.log(f"epoch {epoch}: stage {active} {stage}")

    # ----------------------------------------------------------- checkpoints
    def save_checkpoint(self, loop: dict, gen: torch.Generator) -> None:
        if not self.dist.is_main:
            return
        state = {
            "model": model_to_dict(self.model, self.metadata()),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "rng": {"torch": torch.get_rng_state(), "data": gen.get_state()},
            "loop": dict(loop),
            "config": self.config,
            "loss": self.loss_fn.state_dict(),
            "reference_energies": {str(k): v for k, v in self.reference_energies.items()},
        }
        save_checkpoint(state, self.checkpoint_path)

    def _restore(self, gen: torch.Generator) -> dict:
        ck = self.checkpoint
        self.optimizer.load_state_dict(ck["optimizer"])
        if self.scheduler is not None and ck["scheduler"] is not None:
            self.scheduler.load_state_dict(ck["scheduler"])
        if self.ema is not None:
            if ck["ema"] is None:
                raise CheckpointError(f"{str(self.checkpoint_path)!r} holds no EMA state")
            self.ema.load_state_dict(ck["ema"])
        torch.set_rng_state(ck["rng"]["torch"])
        gen.set_state(ck["rng"]["data"])
        return dict(ck["loop"])

    # ----------------------------------------------------------------- train
    def _log_row(self, row: list, tb, step: int) -> None:
        if not self.dist.is_main:
            return
        with open(self.out_dir / "training_log.csv", "a", newline="") as fh:
            csv.writer(fh).writerow(row)
        if tb is not None:
            names = ["train_loss", "valid_loss", "valid_energy_mae", "valid_forces_mae", "lr"]
            for name, value in zip(names, row[2:7]):
                tb.add_scalar(name, value, step)
            tb.flush()

    def _tensorboard(self, step: int):
        if not (self.config["training"]["tensorboard"] and self.dist.is_main):
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            raise ImportError(
                "training.tensorboard needs the tensorboard package: pip install 'nearsight[tensorboard]'"
            ) from exc
        return SummaryWriter(str(self.out_dir / "tensorboard"), purge_step=step or None)

    def setup(self) -> None:
        """Data, model, optimiser, scheduler, EMA and (under torchrun) the DDP wrapper."""
        cfg = self.config
        if cfg["num_threads"]:
            torch.set_num_threads(cfg["num_threads"])
        self.prepare_data()
        self.prepare_model()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.optimizer, self.scheduler = self._optimizer()
        t = cfg["training"]
        self.ema = EMA(self.model, t["ema_decay"]) if t["ema_decay"] else None
        self.engine = self.forcefield
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            self.engine = DistributedDataParallel(self.forcefield, find_unused_parameters=True)

    def train(self) -> Path:
        cfg = self.config
        t = cfg["training"]
        self.setup()
        gen = torch.Generator().manual_seed(cfg["seed"])
        fields = [
            "epoch",
            "step",
            "train_loss",
            "valid_loss",
            "valid_energy_mae",
            "valid_forces_mae",
            "lr",
            "time_s",
        ]
        if self.dist.is_main:  # temporary files of writes a kill interrupted
            for name in ("checkpoint.pt", "best_model.pt", "final_model.pt"):
                for stale in self.out_dir.glob(f".{name}.*.tmp"):
                    stale.unlink(missing_ok=True)
        if self.checkpoint is not None:
            loop = self._restore(gen)
            self.log(
                f"resumed from {self.checkpoint_path} at epoch {loop['epoch']}, step {loop['global_step']}"
            )
        else:
            loop = {
                "epoch": 1, "step_in_epoch": 0, "global_step": 0, "order": None, "best": math.inf,
                "best_epoch": -1, "elapsed_s": 0.0, "running": 0.0, "seen": 0, "stage": -1,
            }  # fmt: skip
            if self.dist.is_main:
                with open(self.out_dir / "training_log.csv", "w", newline="") as fh:
                    csv.writer(fh).writerow(fields)
        tb = self._tensorboard(loop["global_step"])
        clock = self.clock = time.process_time if t["time_limit_clock"] == "cpu" else time.perf_counter
        start = clock() - loop["elapsed_s"]
        n_batches = math.ceil(len(self.train_graphs) / t["batch_size"])
        reason = "epochs"
        try:
            reason = self._loop(loop, gen, start, n_batches, tb)
        finally:
            if tb is not None:
                tb.close()
        loop["elapsed_s"] = clock() - start
        self.save_checkpoint(loop, gen)
        self.wall_time = loop["elapsed_s"]  # by the run's clock: CPU seconds with time_limit_clock: cpu
        if self.dist.is_main:
            with self.evaluation_model():
                save_model(self.model, self.final_path, {**self.metadata(), "epoch": loop["epoch"] - 1})
                if not self.best_path.is_file():  # stopped before the first validation
                    self.model.eval()
                    _, m = self._valid_loss()
                    save_model(self.model, self.best_path, {**self.metadata(), "valid_metrics": m})
            self.finish(loop, reason)
        self.dist.barrier()
        return self.best_path

    def _loop(self, loop: dict, gen: torch.Generator, start: float, n_batches: int, tb) -> str:
        t = self.config["training"]
        while loop["epoch"] <= t["epochs"]:
            epoch = loop["epoch"]
            self._apply_stage(epoch, loop)
            if loop["order"] is None:
                loop["order"] = torch.randperm(len(self.train_graphs), generator=gen).tolist()
            self.model.train()
            while loop["step_in_epoch"] < n_batches:
                if t["max_steps"] is not None and loop["global_step"] >= t["max_steps"]:
                    return "max_steps"
                s = loop["step_in_epoch"] * t["batch_size"]
                indices = loop["order"][s : s + t["batch_size"]]
                where = f"epoch {epoch}, step {loop['global_step']}"
                loss = self.gradient_step(indices, where)
                self._set_warmup_lr(loop["global_step"])
                if t["scheduler"] == "budget" and loop["global_step"] >= t["warmup_steps"]:
                    self._set_budget_lr(epoch, self.dist.max(self.clock() - start))
                self.optimizer.step()
                if self.ema is not None:
                    self.ema.update(self.model)
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
            loop.update(epoch=epoch + 1, step_in_epoch=0, order=None, running=0.0, seen=0)
            if epoch % t["valid_every"] and epoch != t["epochs"] and not out_of_time:
                continue
            if self._validate(epoch, loop, train_loss, elapsed, tb):
                return "early_stopping"
            if out_of_time:
                self.log(f"time limit of {t['max_time_minutes']} min ({t['time_limit_clock']} clock) reached")
                return "max_time"
        return "epochs"

    def _validate(self, epoch: int, loop: dict, train_loss: float, elapsed: float, tb) -> bool:
        """Validation at the end of an epoch; True when early stopping ends the run."""
        t = self.config["training"]
        self.model.eval()
        with self.evaluation_model():
            v_loss, m = self._valid_loss()
            improved = v_loss < loop["best"]
            if improved:
                loop["best"], loop["best_epoch"] = v_loss, epoch
                if self.dist.is_main:
                    save_model(
                        self.model, self.best_path, {**self.metadata(), "epoch": epoch, "valid_metrics": m}
                    )
        warm = loop["global_step"] <= t["warmup_steps"]
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            if not warm:
                lr_before = self.optimizer.param_groups[0]["lr"]
                self.scheduler.step(v_loss)
                lowered = self.optimizer.param_groups[0]["lr"] < lr_before
                if lowered and t["plateau_rollback"] and 0 < loop["best_epoch"] < epoch:
                    self._roll_back(epoch, loop["best_epoch"])
        elif self.scheduler is not None and not warm:
            self.scheduler.step()
        lr = self.optimizer.param_groups[0]["lr"]
        row = [epoch, loop["global_step"], train_loss, v_loss, m["energy_mae"], m["forces_mae"], lr, elapsed]
        self._log_row(row, tb, loop["global_step"])
        if epoch % t["log_every"] == 0 or improved and epoch == 1:
            self.log(
                f"epoch {epoch:5d}  loss {train_loss:.4e}  valid {v_loss:.4e}  "
                f"E MAE {1000 * m['energy_mae']:.2f} meV  F MAE {1000 * m['forces_mae']:.2f} meV/Å  "
                f"lr {lr:.2e}  {elapsed:.0f}s{'  *' if improved else ''}"
            )
        if epoch - loop["best_epoch"] >= t["early_stopping_patience"]:
            self.log(f"early stopping: no improvement for {t['early_stopping_patience']} epochs")
            return True
        return False

    @torch.no_grad()
    def _roll_back(self, epoch: int, best_epoch: int) -> None:
        """``plateau_rollback``: weights (and their EMA) back to the best model's; the optimiser's
        moments and the lowered lr stay."""
        self.dist.barrier()  # the main rank has written the best model file
        best = load_model(self.best_path, dtype=self.dtype).state_dict()
        for name, p in self.model.named_parameters():
            p.copy_(best[name])
        if self.ema is not None:
            for name, value in self.ema.shadow.items():
                value.copy_(best[name])
        self.log(f"epoch {epoch}: lr lowered, weights rolled back to the best epoch {best_epoch}")

    def finish(self, loop: dict, reason: str) -> None:
        """Summary, learning curve, and metrics and parity plots of the best model."""
        summary = {
            "best_epoch": loop["best_epoch"],
            "best_valid_loss": loop["best"],
            "wall_time_s": self.wall_time,
            "time_limit_clock": self.config["training"]["time_limit_clock"],
            "steps": loop["global_step"],
            "stopped_by": reason,
        }
        if self.best_path.is_file():
            best = load_model(self.best_path, dtype=self.dtype)
            saved, self.forcefield = self.forcefield, ForceField(best)
            try:
                for name, frames, graphs in (
                    ("valid", self.valid_frames, self.valid_graphs),
                    ("test", self.test_frames, None),
                ):
                    if not frames:
                        continue
                    if graphs is None:
                        graphs = [frame_to_graph(f, best.cutoff, self.dtype) for f in frames]
                    _, preds = self._predict(graphs, any(f.pbc.all() for f in frames))
                    summary[f"{name}_metrics"] = compute_metrics_by_type(frames, preds)
                    parity_plot(
                        frames, preds, self.out_dir / f"parity_{name}.png", title=f"{name} (best model)"
                    )
            finally:
                self.forcefield = saved
        write_json(summary, self.out_dir / "training_summary.json")
        learning_curve_plot(self.out_dir / "training_log.csv", self.out_dir / "learning_curve.png")
        self.log(
            f"best epoch {loop['best_epoch']}, validation loss {loop['best']:.4e}, "
            f"{self.config['training']['time_limit_clock']} time {self.wall_time:.1f} s ({reason})"
        )


def learning_curve_plot(csv_path: Path, png_path: Path) -> Path | None:
    """Loss and validation errors against epoch, from ``training_log.csv``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(csv_path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        return None
    epoch = [int(r["epoch"]) for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.semilogy(epoch, [float(r["train_loss"]) for r in rows], label="train")
    ax1.semilogy(epoch, [float(r["valid_loss"]) for r in rows], label="validation")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("loss")
    ax1.legend()
    ax2.semilogy(epoch, [1e3 * float(r["valid_forces_mae"]) for r in rows], label="F MAE (meV/Å)")
    ax2.semilogy(epoch, [1e3 * float(r["valid_energy_mae"]) for r in rows], label="E MAE (meV)")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("validation error")
    ax2.legend()
    fig.tight_layout()
    tmp = png_path.with_name(f".{png_path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(png_path)
    return png_path
