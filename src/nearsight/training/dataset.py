"""Data preparation for training: reading, Δ-learning baselines, the train/validation split,
validation of the labels, graphs, multi-head grouping and the statistics fitted on the
training split (per-element reference energies, energy scale, label spreads).

Δ-learning (``data.baseline_energy_key``): the targets are the differences between the labels
and a cheaper method's labels stored with each frame; the model file records the baseline so
its calculator adds it back.  ``data.dispersion``: D3 is subtracted from the labels of every split
after the split (:mod:`~nearsight.training.dispersion`); ``TrainingData.original`` keeps the
frames with their original labels.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .. import keys
from ..data.frame import Frame
from ..data.neighbours import frame_to_graph
from ..data.readers import read_frames
from ..data.stats import energy_residual_std, fit_reference_energies, force_rms, isolated_atom_energies
from ..data.validate import (
    check_full_or_no_periodicity,
    check_inputs_in_every_frame,
    label_shapes,
    validate_frames,
)
from .dispersion import subtract_dispersion


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
            extra_labels=data_cfg.get("extra_labels"),
            total_charge_key=data_cfg.get("total_charge_key", "charge"),
            multiplicity_key=data_cfg.get("multiplicity_key", "multiplicity"),
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


def structure_key(frame: Frame) -> str:
    """A hash of a frame's structure: species, positions (to 1e-6 Å), cell and periodicity, and the
    inputs beside the geometry (total charge, spin multiplicity, external field): one geometry in
    two charge states is two data points, not a duplicate."""
    digest = hashlib.sha1(frame.numbers.astype(np.int64).tobytes())
    field = np.asarray(frame.info.get("external_field", np.zeros(3)), dtype=np.float64).reshape(-1)
    electronic = np.array([frame.total_charge, frame.spin_multiplicity, *field], dtype=np.float64)
    for array in (frame.positions, frame.cell, electronic):
        digest.update((np.round(array, 6) + 0.0).tobytes())  # + 0.0: -0.0 and 0.0 hash alike
    digest.update(frame.pbc.astype(np.uint8).tobytes())
    return digest.hexdigest()


def split_duplicates(train: Sequence[Frame], others: Sequence[Frame]) -> tuple[list[Frame], list[Frame]]:
    """``others`` split into frames whose structure is not in ``train`` and those that are."""
    seen = {structure_key(f) for f in train}
    fresh, repeated = [], []
    for frame in others:
        (repeated if structure_key(frame) in seen else fresh).append(frame)
    return fresh, repeated


@dataclass
class TrainingData:
    """The frames of a run: training, validation and (optional) test splits."""

    train: list[Frame]
    valid: list[Frame]
    test: list[Frame]
    species: list[int]  # atomic numbers of the training split
    label_shapes: dict[str, tuple[int, ...]]  # extra labels: trailing shape of each
    # frames of the validation / test split whose structure is also in the training split
    duplicates: dict[str, int] = dataclasses.field(default_factory=dict)
    # with data.dispersion: each split's frames with their original labels (D3 not subtracted)
    original: dict[str, list[Frame]] = dataclasses.field(default_factory=dict)

    def graphs(self, frames: Sequence[Frame], cutoff: float, dtype: torch.dtype) -> list[dict]:
        """Graphs with neighbour lists (computed once per frame) and every label and mask."""
        return [frame_to_graph(f, cutoff, dtype, extra_labels=self.label_shapes) for f in frames]


def prepare_data(config: dict) -> TrainingData:
    """Read, split (``valid_fraction`` drawn with ``split_seed``) and validate a run's frames."""
    data_cfg = config["data"]
    seed = config["seed"] if data_cfg["split_seed"] is None else data_cfg["split_seed"]
    rng = np.random.default_rng(seed)
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
    n_states = config["model"].get("n_states", 1)
    if n_states > 1:  # state labels fit the model; frames without an energy get E_0
        from ..nonadiabatic.labels import check_state_labels

        check_state_labels(train + valid, n_states)
    species = sorted({int(z) for f in train for z in f.numbers})
    validate_frames(train, require=("energy",), min_distance=data_cfg["min_distance"])
    validate_frames(valid, require=(), min_distance=data_cfg["min_distance"], known_species=species)
    test = load_split(data_cfg["test"], data_cfg)
    if n_states > 1:
        check_state_labels(test, n_states)
    check_model_inputs(train + valid + test, config)
    fresh, repeated = split_duplicates(train, valid)
    _, in_test = split_duplicates(train, test)
    duplicates = {"valid": len(repeated), "test": len(in_test)}
    if repeated and data_cfg.get("remove_duplicates", True):
        if not fresh:
            raise ValueError(
                f"every one of the {len(valid)} validation frames is also in the training data "
                f"(e.g. {repeated[0].where}); give other validation data or data.remove_duplicates: false"
            )
        valid = fresh
    shapes = label_shapes(train + valid, data_cfg.get("extra_labels") or {})
    original = {}
    if data_cfg.get("dispersion") is not None:  # the labels without D3 (nearsight.training.dispersion)
        original = {"train": train, "valid": valid, "test": test}
        train, valid, test = (subtract_dispersion(f, data_cfg["dispersion"]) for f in (train, valid, test))
    return TrainingData(train, valid, test, species, shapes, duplicates, original)


def check_model_inputs(frames: Sequence[Frame], config: dict) -> None:
    """The data give what the configured model reads, or a ``ConfigError`` at data load (not a
    failure mid-training) naming the frame and the setting: the total charge stated in every frame
    or in none with ``model.charge_embedding`` or a Coulomb term, the spin multiplicity likewise
    with ``model.charge_embedding``; no slabs or wires (mixed pbc) with a Coulomb term."""
    from .config import ConfigError

    model, data = config["model"], config["data"]
    coulomb = (model.get("longrange") or {}).get("coulomb") is not None
    embedding = bool(model.get("charge_embedding"))
    names = (["total_charge"] if embedding or coulomb else []) + (["spin_multiplicity"] if embedding else [])
    readers = " and ".join(k for k, on in (("model.charge_embedding", embedding),
                                           ("model.longrange.coulomb", coulomb)) if on)  # fmt: skip
    keys_in_file = {
        "total_charge": data.get("total_charge_key", "charge"),
        "spin_multiplicity": data.get("multiplicity_key", "multiplicity"),
    }
    try:
        check_inputs_in_every_frame(frames, names, keys_in_file)
    except ValueError as exc:
        raise ConfigError(f"{exc} ({readers})") from exc
    if coulomb:
        try:
            check_full_or_no_periodicity(frames)
        except ValueError as exc:
            raise ConfigError(f"{exc} (model.longrange.coulomb)") from exc


def assign_heads(
    heads: list[str], head_key: str, labelled: Sequence[tuple[Sequence[Frame], Sequence[dict], bool]]
) -> dict[str, list[Frame]]:
    """Tag every graph with its frame's head index; returns the training frames of each head.

    ``labelled``: ``(frames, graphs, is_training_split)`` of each split.
    """
    groups: dict[str, list[Frame]] = {h: [] for h in heads}
    for frames, graphs, train in labelled:
        for frame, graph in zip(frames, graphs):
            name = frame.info.get(head_key)
            if name is None or str(name) not in heads:
                raise ValueError(
                    f"{frame.source}, frame {frame.index}: info[{head_key!r}] = {name!r} is not one of the "
                    f"model's heads {heads}"
                )
            graph[keys.HEAD] = torch.tensor([heads.index(str(name))])
            if train:
                groups[str(name)].append(frame)
    empty = [h for h, frames in groups.items() if not frames]
    if empty:
        raise ValueError(f"no training frames for head(s) {empty}")
    return groups


# ------------------------------------------------------------ statistics
def reference_energies(frames: Sequence[Frame], spec: str | dict, species: Sequence[int]) -> dict[int, float]:
    """Per-element reference energies: least squares on ``frames`` or isolated atoms from a file."""
    if spec == "least_squares":
        return fit_reference_energies(frames, list(species))
    ref = isolated_atom_energies(spec)
    missing = [z for z in species if z not in ref]
    if missing:
        raise ValueError(f"reference_energies {spec!r} lacks elements with atomic numbers {missing}")
    return ref


def mean_residual_per_atom(frames: Sequence[Frame], ref: dict[int, float]) -> float:
    """Mean of (E - Σ_i e_Z_i) / n over labelled frames: the start value of the atomic energies."""
    values = [
        (f.energy - sum(ref.get(int(z), 0.0) for z in f.numbers)) / f.n_atoms
        for f in frames
        if f.energy is not None
    ]
    return float(np.mean(values)) if values else 0.0


def training_statistics(
    groups: dict[str | None, list[Frame]],
    all_train: Sequence[Frame],
    spec: str | dict,
    species: Sequence[int],
) -> dict:
    """What model initialisation and the loss's σ defaults need from the training split.

    ``groups``: the training frames of each head (``{None: frames}`` for single-head models;
    the last head sets the energy-based values).  Returns ``reference_energies`` (of the default
    head), ``energy_shift`` (e_Z, the mean energy per atom: ``{Z: e}``, or ``{head: {Z: e}}`` for
    multi-head models), ``isolated_energy`` (E0_Z, the reference energies, in the same layout),
    ``energy_std`` (eV), ``force_rms`` (eV/Å, None without forces) and ``energy_scale`` (eV).
    """
    refs, shifts = {}, {}
    for head, frames in groups.items():
        refs[head] = reference_energies(frames, spec, species)
        shifts[head] = {z: e + mean_residual_per_atom(frames, refs[head]) for z, e in refs[head].items()}
    main = list(groups)[-1]
    f_rms = force_rms(all_train) if any(f.forces is not None for f in all_train) else None
    e_std = energy_residual_std(groups[main], refs[main])
    scale = f_rms if f_rms and math.isfinite(f_rms) and f_rms > 0 else max(e_std, 1e-3)
    return {
        "reference_energies": refs[main],
        "energy_shift": shifts if main is not None else shifts[main],
        "isolated_energy": refs if main is not None else refs[main],
        "energy_std": e_std,
        "force_rms": f_rms,
        "energy_scale": scale,
    }
