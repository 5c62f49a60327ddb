"""Checks of multi-state labels before a diabatic model trains on them.

Labels are read with ``data.extra_labels``: ``state_energies`` (per structure, ``[S]`` eV, ascending:
the adiabatic order, ground state first), ``state_forces`` (per atom, ``[S, 3]`` eV/Å, or flattened
``[3S]`` in extxyz) and ``state_couplings`` (per atom, ``[P, 3]`` eV/Å, h_ij for the pairs i < j in the
order (0,1), (0,2), ..., (1,2), ...; sign arbitrary).  Every error names the file and frame.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .. import keys
from ..data.frame import Frame
from .matrix import n_pairs

ENERGY_TOLERANCE = 1e-6  # eV: an energy label must equal the ground state's energy label


def check_state_labels(frames: Sequence[Frame], n_states: int) -> None:
    """Every frame's state labels fit a model of ``n_states`` states: S energies, in ascending order;
    S forces per atom; P = S(S − 1)/2 couplings per atom, only beside both states' energies.  A frame
    without an energy (forces) label gets the ground state's, E_0 (F_0), the energy a diabatic model
    gives; one with both must agree.  Raises ``ValueError`` naming the frame and the value."""
    for frame in frames:
        labels = frame.labels
        energies = labels.get(keys.STATE_ENERGIES)
        if energies is not None:
            energies = np.asarray(energies, dtype=np.float64).reshape(-1)
            if energies.size != n_states:
                raise ValueError(
                    f"{frame.where}: {keys.STATE_ENERGIES} has {energies.size} state(s), the model has "
                    f"n_states = {n_states}"
                )
            if np.any(np.diff(energies) < 0):
                raise ValueError(
                    f"{frame.where}: {keys.STATE_ENERGIES} {energies.tolist()} are not in ascending order "
                    "(labels are adiabatic states, ground state first)"
                )
            _ground_state(frame, "energy", float(energies[0]))
        forces = labels.get(keys.STATE_FORCES)
        if forces is not None:
            forces = _per_atom(frame, keys.STATE_FORCES, forces, n_states, "n_states")
            if frame.forces is None:
                frame.forces = forces[:, 0].copy()
        couplings = labels.get(keys.STATE_COUPLINGS)
        if couplings is not None:
            if n_states < 2:
                raise ValueError(f"{frame.where}: {keys.STATE_COUPLINGS} given to a model of one state")
            _per_atom(frame, keys.STATE_COUPLINGS, couplings, n_pairs(n_states), "pairs i < j")
            if energies is None:
                raise ValueError(
                    f"{frame.where}: a {keys.STATE_COUPLINGS} label needs the energies of both states "
                    f"({keys.STATE_ENERGIES}) in the same frame"
                )
        if energies is None and forces is None and couplings is None and frame.energy is not None:
            raise ValueError(
                f"{frame.where}: no {keys.STATE_ENERGIES} label for a model of {n_states} states (name it "
                f"in data.extra_labels, e.g. {{{keys.STATE_ENERGIES}: {keys.STATE_ENERGIES}}})"
            )


def _per_atom(frame: Frame, name: str, value: np.ndarray, count: int, what: str) -> np.ndarray:
    """``value`` as ``[n_atoms, count, 3]`` (flattened ``[n_atoms, 3 count]`` accepted), stored back."""
    arr = np.asarray(value, dtype=np.float64)
    if arr.size != frame.n_atoms * count * 3:
        raise ValueError(
            f"{frame.where}: {name} has shape {arr.shape}; expected ({frame.n_atoms}, {count}, 3) for "
            f"{count} {what}"
        )
    arr = arr.reshape(frame.n_atoms, count, 3)
    frame.labels[name] = arr
    return arr


def _ground_state(frame: Frame, name: str, value: float) -> None:
    if frame.energy is None:
        frame.energy = value
    elif abs(frame.energy - value) > ENERGY_TOLERANCE:
        raise ValueError(
            f"{frame.where}: energy {frame.energy!r} differs from the ground state's "
            f"{keys.STATE_ENERGIES}[0] = {value!r} (a diabatic model's energy is E_0)"
        )
