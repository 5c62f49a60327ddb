"""One optimisation step and what steers it: Adam/AdamW, learning-rate warm-up and schedules
(plateau, cosine, a cosine over the time budget), loss-weight stages, the EMA of the weights,
gradient clipping and the check that stops a run on a non-finite loss or gradient before any
weight changes.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from .distributed import Distributed
from .ema import EMA
from .loss import Loss


class Optimisation:
    """The optimiser, its learning-rate schedule and the EMA of a model's trainable weights."""

    def __init__(self, model: nn.Module, training: dict) -> None:
        self.t = training
        self.model = model
        self.params = [p for p in model.parameters() if p.requires_grad]
        cls = torch.optim.AdamW if training["optimizer"] == "adamw" else torch.optim.Adam
        self.optimizer = cls(
            self.params, lr=training["lr"], weight_decay=training["weight_decay"], amsgrad=training["amsgrad"]
        )
        self.scheduler = None
        if training["scheduler"] == "plateau":
            self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
                self.optimizer,
                factor=training["scheduler_factor"],
                patience=training["scheduler_patience"],
                min_lr=training["min_lr"],
            )
        elif training["scheduler"] == "cosine":
            self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
                self.optimizer, T_max=training["epochs"], eta_min=training["min_lr"]
            )
        self.ema = EMA(model, training["ema_decay"]) if training["ema_decay"] else None

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    # ------------------------------------------------------------- schedules
    def warmup_lr(self, step: int) -> None:
        """Linear warm-up to ``lr`` over ``warmup_steps`` optimiser steps."""
        t = self.t
        if step < t["warmup_steps"]:
            self.set_lr(t["lr"] * (step + 1) / t["warmup_steps"])
        elif step == t["warmup_steps"] and step > 0:
            self.set_lr(t["lr"])

    def budget_lr(self, epoch: int, elapsed: float) -> None:
        """``scheduler: budget``: cosine from the peak lr (``lr``, or the latest stage's) down to
        ``min_lr`` as ``elapsed`` goes from 0 to ``max_time_minutes``."""
        t = self.t
        peak = t["lr"]
        for stage in t["stages"] or []:
            if stage["epoch"] <= epoch and "lr" in stage:
                peak = float(stage["lr"])
        progress = min(1.0, elapsed / (60.0 * t["max_time_minutes"]))
        self.set_lr(t["min_lr"] + (peak - t["min_lr"]) * 0.5 * (1.0 + math.cos(math.pi * progress)))

    def apply_stage(self, epoch: int, current: int, loss: Loss) -> tuple[int, dict | None]:
        """Switch loss weights (``sigma_<term>``, ``<term>_weight``) and the lr at the configured
        epochs; returns the active stage index and the stage entered now (None if unchanged)."""
        stages = self.t["stages"] or []
        active = max((k for k, s in enumerate(stages) if s["epoch"] <= epoch), default=-1)
        if active <= current:
            return current, None
        stage = stages[active]
        for key, value in stage.items():
            if key not in ("epoch", "lr"):
                setattr(loss, key, float(value))
        if "lr" in stage:
            self.set_lr(float(stage["lr"]))
        return active, stage

    def after_validation(self, valid_loss: float, warm: bool) -> bool:
        """Step the epoch-wise scheduler (not during warm-up); True if the plateau scheduler
        lowered the lr now."""
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            if warm:
                return False
            before = self.lr
            self.scheduler.step(valid_loss)
            return self.lr < before
        if self.scheduler is not None and not warm:
            self.scheduler.step()
        return False

    # ------------------------------------------------------------------ step
    def backward(
        self, loss: torch.Tensor, dist: Distributed, where: str, describe_batch: Callable[[], str]
    ) -> float:
        """Gradients of ``loss`` (clipped); raises ``FloatingPointError`` on every rank if the loss
        or the gradient norm is not finite, before the weights change.  Returns the loss."""
        if not dist.all_ok(bool(torch.isfinite(loss))):
            raise FloatingPointError(
                f"non-finite loss ({float(loss.detach())} on rank {dist.rank}) at {where}; batch frames: "
                f"{describe_batch()}; the best model and the last checkpoint are unchanged"
            )
        self.optimizer.zero_grad(set_to_none=True)
        (loss * dist.world).backward()  # DDP averages over ranks: the sum over shards remains
        norm = nn.utils.clip_grad_norm_(self.params, self.t["clip_grad_norm"] or math.inf)
        if not torch.isfinite(norm):
            raise FloatingPointError(
                f"non-finite gradient norm ({float(norm)}) at {where}; batch frames: "
                f"{describe_batch()}; the best model and the last checkpoint are unchanged"
            )
        return float(loss.detach())

    def step(self) -> None:
        """The optimiser step and the EMA update."""
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update(self.model)

    @torch.no_grad()
    def load_weights(self, state_dict: dict) -> None:
        """Weights (and their EMA) from a model state dict; the optimiser's moments and lr stay."""
        for name, p in self.model.named_parameters():
            p.copy_(state_dict[name])
        if self.ema is not None:
            for name, value in self.ema.shadow.items():
                value.copy_(state_dict[name])

    # ----------------------------------------------------------------- state
    def state_dict(self) -> dict:
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "ema": self.ema.state_dict() if self.ema is not None else None,
        }

    def load_state_dict(self, state: dict, source: str) -> None:
        from .checkpoint import CheckpointError

        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if self.ema is not None:
            if state["ema"] is None:
                raise CheckpointError(f"{source!r} holds no EMA state")
            self.ema.load_state_dict(state["ema"])
