"""Exponential moving average of model weights.

    θ_EMA ← d θ_EMA + (1 − d) θ,   d = min(decay, (1 + n) / (10 + n))

after every optimiser step n (the ramp keeps early averages from being dominated by the
random initial weights).  Validation, the best model and the final model use the
averaged weights; training continues on the raw ones.  Buffers (descriptor statistics,
energy shifts) are not averaged: they are copied as they are.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


class EMA:
    """Shadow copy of a module's trainable parameters."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay!r}")
        self.decay = float(decay)
        self.num_updates = 0
        self.shadow = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = min(self.decay, (1.0 + self.num_updates) / (10.0 + self.num_updates))
        for name, p in model.named_parameters():
            if name in self.shadow:
                self.shadow[name].mul_(d).add_(p.detach(), alpha=1.0 - d)
        self.num_updates += 1

    @contextmanager
    def applied(self, model: nn.Module) -> Iterator[nn.Module]:
        """Within the block, ``model`` holds the averaged weights; the raw ones come back after."""
        params = dict(model.named_parameters())
        saved = {name: params[name].detach().clone() for name in self.shadow}
        with torch.no_grad():
            for name, value in self.shadow.items():
                params[name].copy_(value)
        try:
            yield model
        finally:
            with torch.no_grad():
                for name, value in saved.items():
                    params[name].copy_(value)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "num_updates": self.num_updates, "shadow": dict(self.shadow)}

    def load_state_dict(self, state: dict) -> None:
        missing = set(self.shadow) ^ set(state["shadow"])
        if missing:
            raise ValueError(f"EMA state does not fit the model (parameters {sorted(missing)})")
        self.decay = float(state["decay"])
        self.num_updates = int(state["num_updates"])
        for name, value in state["shadow"].items():
            self.shadow[name].copy_(value)
