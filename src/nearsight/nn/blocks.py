"""Small differentiable building blocks."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

ACTIVATIONS = {
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "softplus": nn.Softplus,
    "gelu": nn.GELU,
}


def scatter_sum(values: torch.Tensor, index: torch.Tensor, size: int) -> torch.Tensor:
    """``out[k] = Σ_{e: index[e] = k} values[e]`` along dimension 0."""
    out = values.new_zeros((size,) + tuple(values.shape[1:]))
    return out.index_add_(0, index, values)


def cosine_cutoff(r: torch.Tensor, r_cut: float) -> torch.Tensor:
    """Behler's cutoff f_c(r) = ½ [cos(π r / r_c) + 1] for r < r_c, else 0.

    f_c and its first derivative vanish at r_c (Behler, J. Chem. Phys. 134, 074106, 2011).
    """
    fc = 0.5 * (torch.cos(r * (math.pi / r_cut)) + 1.0)
    return torch.where(r < r_cut, fc, torch.zeros_like(r))


class MLP(nn.Sequential):
    """Feed-forward network ``n_in -> hidden... -> n_out`` with one activation."""

    def __init__(self, n_in: int, hidden: Sequence[int], n_out: int = 1, activation: str = "silu") -> None:
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose from {sorted(ACTIVATIONS)}")
        layers: list[nn.Module] = []
        sizes = [n_in, *hidden]
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(a, b), ACTIVATIONS[activation]()]
        layers.append(nn.Linear(sizes[-1], n_out))
        super().__init__(*layers)


class ExactConstants(nn.Module):
    """A module whose constant floating buffers (coefficients built once at construction:
    Clebsch-Gordan and coupling tensors, spherical-harmonic polynomials, ...) follow every dtype
    and device change exactly.

    ``register_constant`` keeps a float64 master of each; after every ``.to()``, ``.float()``,
    ``.double()`` or ``.cuda()`` the buffer is re-derived from its master in the new dtype.  A
    model cast to float32 (e.g. trained or saved in float32) and back to float64 so has float64
    constants again, and with them float64-level symmetry, instead of float32-rounded ones.
    """

    def register_constant(self, name: str, value: torch.Tensor, persistent: bool = False) -> None:
        masters = self.__dict__.setdefault("_constant_masters", {})
        masters[name] = value.detach().to(device="cpu", dtype=torch.float64).clone()
        self.register_buffer(name, value, persistent=persistent)

    def _apply(self, fn, recurse: bool = True):
        super()._apply(fn, recurse)
        for name, master in self.__dict__.get("_constant_masters", {}).items():
            current = self._buffers[name]
            self._buffers[name] = master.to(device=current.device, dtype=current.dtype)
        return self
