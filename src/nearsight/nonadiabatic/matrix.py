"""The layout of a diabatic matrix: its state pairs and per-atom contributions.

A diabatic model with S states predicts, for every atom i, S diagonal contributions and
P = S(S − 1)/2 couplings; per structure

    V_d,aa = Σ_i v_i,a        (size-extensive, with the per-element energy shifts)
    V_d,ab = Σ_i w_i,ab       (a < b: a sum of local couplings)

Pairs are ordered (0,1), (0,2), ..., (1,2), ... (``torch.triu_indices``), the order of the
coupling labels ``keys.STATE_COUPLINGS``.
"""

from __future__ import annotations

import torch

COUPLINGS = ("scalar", "pseudoscalar", "both")
"""Symmetry of the couplings a model can represent under a reflection of the structure: invariant
(``scalar``), changing sign (``pseudoscalar``, e.g. out-of-plane coupling modes between states of
different reflection symmetry), or a sum of both."""


def n_pairs(n_states: int) -> int:
    """P = S(S − 1)/2, the number of state pairs a < b."""
    return n_states * (n_states - 1) // 2


def pair_indices(n_states: int, device: torch.device | None = None) -> torch.Tensor:
    """``[2, P]``: rows a and b of every pair a < b, in label order."""
    return torch.triu_indices(n_states, n_states, 1, device=device)


def assemble(diagonal: torch.Tensor, couplings: torch.Tensor) -> torch.Tensor:
    """Symmetric matrices ``[n, S, S]`` from diagonals ``[n, S]`` and couplings ``[n, P]``."""
    n, S = diagonal.shape
    if couplings.shape != (n, n_pairs(S)):
        raise ValueError(
            f"couplings of shape {list(couplings.shape)} for {S} states; expected {[n, n_pairs(S)]}"
        )
    a, b = pair_indices(S, diagonal.device)
    V = torch.diag_embed(diagonal)
    if couplings.shape[1]:
        flat = diagonal.new_zeros((n, S * S)).index_copy(1, a * S + b, couplings).view(n, S, S)
        V = V + flat + flat.transpose(1, 2)
    return V


def check_states(n_states: int, couplings: str, where: str) -> None:
    """``n_states`` a positive integer and ``couplings`` one of :data:`COUPLINGS`."""
    if isinstance(n_states, bool) or not isinstance(n_states, int) or n_states < 1:
        raise ValueError(f"{where}: n_states = {n_states!r} must be an integer >= 1")
    if couplings not in COUPLINGS:
        raise ValueError(f"{where}: couplings = {couplings!r} must be one of {COUPLINGS}")


INVARIANT_MODEL_ERROR = (
    "couplings = {couplings!r} needs a pseudoscalar (0o) readout, a coupling that changes sign under a "
    "reflection of the structure; {model} descriptors are invariant under reflections and cannot "
    "represent one. Use model.type: equivariant with model.equivariant.parity: both, or couplings: scalar"
)
