"""Training a potential from a validated config.

Data are read and validated, split, turned into graphs once (neighbour lists
are computed a single time per frame), model statistics are fitted on the
training split (per-element reference energies, descriptor standardisation,
energy scale), and the seed's loss is minimised with Adam/AdamW, a learning
rate schedule and early stopping on the validation loss.  The best model is
written atomically whenever the validation loss improves.
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Sequence
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
from ..models.forcefield import ForceField, edge_vectors
from ..models.io import save_model
from .loss import EnergyForceLoss
from .metrics import compute_metrics, split_predictions, write_json

DTYPES = {"float64": torch.float64, "float32": torch.float32}


def load_split(paths: str | list[str] | None, data_cfg: dict) -> list[Frame]:
    if paths is None:
        return []
    frames: list[Frame] = []
    for path in [paths] if isinstance(paths, str) else paths:
        frames += read_frames(
            path,
            format=data_cfg["format"],
            energy_key=data_cfg["energy_key"],
            forces_key=data_cfg["forces_key"],
            stress_key=data_cfg["stress_key"],
        )
    return frames


def build_model(model_cfg: dict, species: Sequence[int]) -> nn.Module:
    """A model from the ``model`` section of a config."""
    cutoff = float(model_cfg["cutoff"])
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
        return BehlerParrinello(species, descriptor, model_cfg["hidden"], model_cfg["activation"])
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
    return BehlerParrinello(species, descriptor, model_cfg["hidden"], model_cfg["activation"])


@torch.no_grad()
def fit_statistics(
    model: BehlerParrinello, graphs: Sequence[dict], reference: dict[int, float], energy_scale: float
) -> None:
    """Descriptor mean/std over all training atoms; shift and scale of atomic energies."""
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


class Trainer:
    """Runs one training job described by a validated config dict."""

    def __init__(self, config: dict, log=None) -> None:
        self.config = config
        self.log = log or (lambda message: print(message, flush=True))
        self.dtype = DTYPES[config["dtype"]]
        self.out_dir = Path(config["output_dir"])
        self.best_path = self.out_dir / "best_model.pt"

    # ------------------------------------------------------------------ data
    def prepare_data(self) -> None:
        cfg = self.config
        data_cfg = cfg["data"]
        rng = np.random.default_rng(cfg["seed"])
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

    # ----------------------------------------------------------------- model
    def prepare_model(self) -> None:
        cfg = self.config
        torch.manual_seed(cfg["seed"])
        model = build_model(cfg["model"], self.species).to(self.dtype)
        cutoff = model.cutoff
        self.train_graphs = [frame_to_graph(f, cutoff, self.dtype) for f in self.train_frames]
        self.valid_graphs = [frame_to_graph(f, cutoff, self.dtype) for f in self.valid_frames]
        ref = _reference_energies(self.train_frames, cfg["data"]["reference_energies"], self.species)
        f_rms = force_rms(self.train_frames) if any(f.forces is not None for f in self.train_frames) else None
        e_std = energy_residual_std(self.train_frames, ref)
        scale = f_rms if f_rms and math.isfinite(f_rms) and f_rms > 0 else max(e_std, 1e-3)
        shift = {z: e + _mean_residual_per_atom(self.train_frames, ref) for z, e in ref.items()}
        fit_statistics(model, self.train_graphs, shift, scale)
        tcfg = cfg["training"]
        self.loss_fn = EnergyForceLoss(
            sigma_energy=float(tcfg["sigma_energy"] or max(e_std, 1e-6)),
            sigma_forces=float(tcfg["sigma_forces"] or max(f_rms or 1.0, 1e-6)),
            sigma_stress=float(tcfg["sigma_stress"] or _stress_rms(self.train_frames)),
            stress_weight=float(tcfg["stress_weight"]),
        )
        self.model = model
        self.forcefield = ForceField(model)
        self.reference_energies = ref
        self.log(
            f"species {self.species}  train {len(self.train_frames)}  valid {len(self.valid_frames)}  "
            f"features {model.descriptor.n_features}  parameters {sum(p.numel() for p in model.parameters())}"
        )
        self.log(
            f"sigma_E {self.loss_fn.sigma_energy:.4g} eV  sigma_F {self.loss_fn.sigma_forces:.4g} eV/Å  "
            f"energy scale {scale:.4g} eV  reference energies {ref}"
        )

    def _optimizer(self) -> tuple[torch.optim.Optimizer, object | None]:
        t = self.config["training"]
        cls = torch.optim.AdamW if t["optimizer"] == "adamw" else torch.optim.Adam
        opt = cls(self.model.parameters(), lr=t["lr"], weight_decay=t["weight_decay"])
        if t["scheduler"] == "plateau":
            sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
                opt, factor=t["scheduler_factor"], patience=t["scheduler_patience"], min_lr=t["min_lr"]
            )
        elif t["scheduler"] == "cosine":
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=t["epochs"], eta_min=t["min_lr"])
        else:
            sched = None
        return opt, sched

    def _valid_loss(self) -> tuple[float, dict]:
        """Validation loss and metrics from one pass over the validation graphs."""
        t = self.config["training"]
        stress = self.loss_fn.needs_stress or any(f.pbc.all() for f in self.valid_frames)
        total, n, preds = 0.0, 0, []
        for start in range(0, len(self.valid_graphs), t["eval_batch_size"]):
            batch = collate(self.valid_graphs[start : start + t["eval_batch_size"]])
            out = {k: v.detach() for k, v in self.forcefield(batch, forces=True, stress=stress).items()}
            n_g = batch[keys.N_ATOMS].shape[0]
            total += float(self.loss_fn(out, batch)) * n_g
            n += n_g
            preds += split_predictions(out, batch)
        return total / max(n, 1), compute_metrics(self.valid_frames, preds)

    # ----------------------------------------------------------------- train
    def train(self) -> Path:
        cfg = self.config
        t = cfg["training"]
        if cfg["num_threads"]:
            torch.set_num_threads(cfg["num_threads"])
        self.prepare_data()
        self.prepare_model()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        opt, sched = self._optimizer()
        gen = torch.Generator().manual_seed(cfg["seed"])
        stress = self.loss_fn.needs_stress
        best, best_epoch, start = math.inf, -1, time.perf_counter()
        log_path = self.out_dir / "training_log.csv"
        fields = ["epoch", "train_loss", "valid_loss", "valid_energy_mae", "valid_forces_mae", "lr", "time_s"]
        with open(log_path, "w", newline="") as fh:
            csv.writer(fh).writerow(fields)
        metadata = {"reference_energies": {str(k): v for k, v in self.reference_energies.items()}}
        for epoch in range(1, t["epochs"] + 1):
            self.model.train()
            order = torch.randperm(len(self.train_graphs), generator=gen).tolist()
            running, seen = 0.0, 0
            for s in range(0, len(order), t["batch_size"]):
                batch = collate([self.train_graphs[i] for i in order[s : s + t["batch_size"]]])
                out = self.forcefield(batch, forces=True, stress=stress, create_graph=True)
                loss = self.loss_fn(out, batch)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"non-finite loss {float(loss)} at epoch {epoch}, step {s}")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if t["clip_grad_norm"]:
                    nn.utils.clip_grad_norm_(self.model.parameters(), t["clip_grad_norm"])
                opt.step()
                running += float(loss.detach()) * batch[keys.N_ATOMS].shape[0]
                seen += batch[keys.N_ATOMS].shape[0]
            elapsed = time.perf_counter() - start
            out_of_time = t["max_time_minutes"] is not None and elapsed > 60 * t["max_time_minutes"]
            if epoch % t["valid_every"] and epoch != t["epochs"] and not out_of_time:
                continue
            self.model.eval()
            v_loss, m = self._valid_loss()
            if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
                sched.step(v_loss)
            elif sched is not None:
                sched.step()
            lr = opt.param_groups[0]["lr"]
            improved = v_loss < best
            if improved:
                best, best_epoch = v_loss, epoch
                metadata.update(epoch=epoch, valid_metrics=m, config=cfg)
                save_model(self.model, self.best_path, metadata)
            row = [epoch, running / seen, v_loss, m["energy_mae"], m["forces_mae"], lr, elapsed]
            with open(log_path, "a", newline="") as fh:
                csv.writer(fh).writerow(row)
            if epoch % t["log_every"] == 0 or improved and epoch == 1:
                self.log(
                    f"epoch {epoch:5d}  loss {running / seen:.4e}  valid {v_loss:.4e}  "
                    f"E MAE {1000 * m['energy_mae']:.2f} meV  F MAE {1000 * m['forces_mae']:.2f} meV/Å  "
                    f"lr {lr:.2e}  {elapsed:.0f}s{'  *' if improved else ''}"
                )
            if epoch - best_epoch >= t["early_stopping_patience"]:
                self.log(f"early stopping: no improvement for {t['early_stopping_patience']} epochs")
                break
            if out_of_time:
                self.log(f"time limit of {t['max_time_minutes']} min reached")
                break
        self.wall_time = time.perf_counter() - start
        write_json(
            {"best_epoch": best_epoch, "best_valid_loss": best, "wall_time_s": self.wall_time},
            self.out_dir / "training_summary.json",
        )
        self.log(f"best epoch {best_epoch}, validation loss {best:.4e}, wall time {self.wall_time:.1f} s")
        return self.best_path
