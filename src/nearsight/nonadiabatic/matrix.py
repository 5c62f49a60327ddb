"""The layout of a diabatic matrix: its state pairs and per-atom contributions.

A diabatic model with S states predicts, for every atom i, S diagonal contributions and
P = S(S − 1)/2 couplings; per structure

    V_d,aa = Σ_i v_i,a        (size-extensive, with the per-element energy shifts)
    V_d,ab = Σ_i w_i,ab       (a < b: a sum of local couplings)

Pairs are ordered (0,1), (0,2), ..., (1,2), ... (``torch.triu_indices``), the order of the
coupling labels ``keys.STATE_COUPLINGS``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

COUPLINGS = ("scalar", "pseudoscalar", "both")
"""Symmetry of the couplings a model can represent under a reflection of the structure: invariant
(``scalar``), changing sign (``pseudoscalar``, e.g. out-of-plane coupling modes between states of
different reflection symmetry), or a sum of both.  A sum of both has no definite parity: V_ab² and
with it the adiabatic energies change under a reflection.  ``state_parity`` instead gives every
diabatic state a parity p_a = ±1; the coupling of a and b is then scalar where p_a p_b = +1 and
pseudoscalar where p_a p_b = −1, so that V_d(σR) = P V_d(R) P (P = diag(p)) for a reflection σ and
the energies are exactly invariant, for any number of states."""


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


def check_states(
    n_states: int, couplings: str, where: str, state_parity: Sequence[int] | None = None
) -> list[str]:
    """The symmetry of every pair's coupling (``scalar``, ``pseudoscalar`` or ``both``, in pair
    order) from ``couplings`` (one of :data:`COUPLINGS`, the same for all pairs) or, when given,
    ``state_parity`` (one ±1 per state, which overrides it); errors name the bad value."""
    if isinstance(n_states, bool) or not isinstance(n_states, int) or n_states < 1:
        raise ValueError(f"{where}: n_states = {n_states!r} must be an integer >= 1")
    if couplings not in COUPLINGS:
        raise ValueError(f"{where}: couplings = {couplings!r} must be one of {COUPLINGS}")
    if state_parity is None:
        return [couplings] * n_pairs(n_states)
    parity = list(state_parity)
    if len(parity) != n_states or any(isinstance(p, bool) or p not in (1, -1) for p in parity):
        raise ValueError(
            f"{where}: state_parity = {parity!r} must be a list of {n_states} entries, each +1 or -1"
        )
    a, b = pair_indices(n_states).tolist()
    return ["scalar" if parity[i] == parity[j] else "pseudoscalar" for i, j in zip(a, b, strict=True)]


INVARIANT_MODEL_ERROR = (
    "{what} needs a pseudoscalar (0o) readout, a coupling that changes sign under a "
    "reflection of the structure; {model} descriptors are invariant under reflections and cannot "
    "represent one. Use model.type: equivariant with model.equivariant.parity: both, or couplings: scalar "
    "(state_parity: all states of the same parity)"
)
