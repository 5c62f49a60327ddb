"""The model a run trains: built from the config, started from a model file (fine-tuning) or a
checkpoint (resume), and initialised from the training statistics.

Fine-tuning (``model.init_from``): start from a model file, optionally freezing layers
(``training.freeze``) and refitting the per-element energy shifts to the new data
(``training.refit_energy_shift``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path

import psutil
import torch
from torch import nn

from .. import keys
from ..data.neighbours import collate
from ..descriptors.acsf import default_acsf_params
from ..models.bpnn import BehlerParrinello
from ..models.equivariant import build_equivariant
from ..models.forcefield import edge_vectors
from ..models.io import load_model, model_from_dict
from .config import ConfigError


def build_model(model_cfg: dict, species: Sequence[int]) -> nn.Module:
    """A model from the ``model`` section of a config (with ``longrange``: wrapped in
    :class:`~nearsight.longrange.model.LongRangePotential`)."""
    longrange = model_cfg.get("longrange")
    if longrange is not None:
        from ..longrange.model import LongRangePotential

        charges = longrange.get("coulomb") is not None
        short = _short_range_model(model_cfg, species, charges)
        return LongRangePotential(
            short,
            longrange.get("coulomb"),
            longrange.get("dispersion"),
            longrange.get("charges", "head"),
            longrange.get("qeq"),
            longrange.get("repulsion"),
        )
    return _short_range_model(model_cfg, species, False)


def _short_range_model(model_cfg: dict, species: Sequence[int], charges: bool) -> nn.Module:
    cutoff = float(model_cfg["cutoff"])
    embedding = bool(model_cfg.get("charge_embedding", False))  # total charge and spin as inputs
    states = {}  # several electronic states: a diabatic model (nearsight.nonadiabatic)
    if model_cfg.get("n_states", 1) > 1:
        states = {
            "n_states": model_cfg["n_states"],
            "couplings": model_cfg["couplings"],
            "epsilon": model_cfg["diabatic_epsilon"],
            "state_parity": model_cfg.get("state_parity"),
        }
    if model_cfg["type"] == "equivariant":
        return build_equivariant(model_cfg["equivariant"], species, cutoff, charges, embedding, **states)
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
            "bispectrum": model_cfg.get("bispectrum"),
        }
        return BehlerParrinello(
            species, descriptor, model_cfg["hidden"], model_cfg["activation"], model_cfg["heads"], charges,
            embedding, **states,
        )  # fmt: skip
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
        species, descriptor, model_cfg["hidden"], model_cfg["activation"], model_cfg["heads"], charges,
        embedding, **states,
    )  # fmt: skip


@torch.no_grad()
def fit_statistics(
    model: BehlerParrinello,
    graphs: Sequence[dict],
    reference: dict,
    energy_scale: float,
    isolated_energy: dict | None = None,
) -> None:
    """Descriptor mean/std over all training atoms and their range per element; shift and scale
    of atomic energies; with ``isolated_energy`` (E0_Z) the isolated-atom reference
    (:mod:`nearsight.models.reference`).  A long-range model's short-range part is fitted."""
    model = getattr(model, "short", model)
    if hasattr(model, "fit_statistics"):  # the equivariant model: mean neighbour count, shift, scale
        model.fit_statistics(graphs, reference, energy_scale, isolated_energy)
        return
    total = total_sq = low = high = None
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
        element = model.z_to_index[batch[keys.ATOMIC_NUMBERS]][:, None].expand_as(x)  # [n_atoms, n_feat]
        n_el = len(model.species)
        batch_low = x.new_full((n_el, x.shape[1]), math.inf).scatter_reduce(0, element, x, "amin")
        batch_high = x.new_full((n_el, x.shape[1]), -math.inf).scatter_reduce(0, element, x, "amax")
        low = batch_low if low is None else torch.minimum(low, batch_low)
        high = batch_high if high is None else torch.maximum(high, batch_high)
    mean = total / count
    std = (total_sq / count - mean**2).clamp(min=0).sqrt()
    model.set_statistics(mean, std, reference, energy_scale, feature_range=(low, high))
    if isolated_energy is not None:
        model.set_isolated_energy(isolated_energy)


def freeze_layers(model: nn.Module, spec: str | int | None) -> int:
    """Freeze parts of a Behler-Parrinello model for fine-tuning; returns the frozen parameter count.

    ``"readout"``: only the last layer of each element network trains.  ``N``: the first N
    linear layers of each element network are frozen.
    """
    if spec is None:
        return 0
    model = getattr(model, "short", model)
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


def initial_model(
    config: dict, species: Sequence[int], dtype: torch.dtype, checkpoint: dict | None, checkpoint_path: Path
) -> tuple[nn.Module, bool]:
    """The model to train and whether its statistics are still to be fitted.

    From the checkpoint when resuming, else a fresh model (seeded by ``config["seed"]``) or the
    model file of ``model.init_from``.
    """
    if checkpoint is not None:
        return model_from_dict(checkpoint["model"], str(checkpoint_path)).to(dtype), False
    torch.manual_seed(config["seed"])
    init = config["model"]["init_from"]
    if init is None:
        return build_model(config["model"], species).to(dtype), True
    model = load_model(init, dtype=dtype)
    if config["data"].get("dispersion") is not None:  # the labels are without D3: so is the model trained
        from .dispersion import without_dispersion

        model = without_dispersion(model)
    missing = sorted(set(species) - set(model.species))
    if missing:
        raise ValueError(f"model.init_from {init!r} does not know the element(s) {missing} in the data")
    return model, False


def initialise(
    model: nn.Module, fresh: bool, resumed: bool, graphs: Sequence[dict], stats: dict, training: dict
) -> int:
    """Statistics of a fresh model, new energy shifts of a fine-tuned one, frozen layers.

    Returns the number of frozen parameters.
    """
    if fresh:
        fit_statistics(model, graphs, stats["energy_shift"], stats["energy_scale"], stats["isolated_energy"])
    elif (
        not resumed
        and training["refit_energy_shift"]
        and hasattr(getattr(model, "short", model), "energy_shift")
    ):
        model = getattr(model, "short", model)
        model.set_energy_shift(stats["energy_shift"])  # fine-tuning on another level of theory: new offsets
        if hasattr(model, "set_isolated_energy"):
            model.set_isolated_energy(stats["isolated_energy"])
    return freeze_layers(model, training["freeze"])


MAX_START_CHARGE = 4.0
"""Fitted starting charges beyond this (e) are taken as a fit the data do not determine."""


def initialise_charges(
    model: nn.Module, graphs: Sequence[dict], longrange: dict | None, seed: int
) -> str | None:
    """Start a fresh charge head from ``model.longrange.initial_charges``: per-element charges
    fitted to the training energies (``fit``, :mod:`nearsight.longrange.charge_fit`) or given
    (``{element: charge}``); the per-element energy shifts lose the mean Coulomb energy per atom of
    these charges, so the starting model is not offset by it.  Returns a line for the log (None
    when nothing was done)."""
    choice = (longrange or {}).get("initial_charges", "zero")
    coulomb = getattr(model, "coulomb", None)
    if choice == "zero" or coulomb is None or getattr(model, "qeq", None) is not None:
        return None
    from ..longrange.charge_fit import fit_element_charges, mean_coulomb_per_atom
    from ..longrange.coulomb import element_values

    short = model.short
    if isinstance(choice, dict):
        charges = element_values(choice, "model.longrange.initial_charges", "e", positive=False)
        missing = sorted(set(short.species) - set(charges))
        if missing:
            raise ValueError(f"model.longrange.initial_charges: no charge for element(s) {missing}")
        per_atom = mean_coulomb_per_atom(graphs, coulomb, short.species, charges)
        line = f"initial charges (given) {charges}"
    else:
        fit = fit_element_charges(graphs, coulomb, short.species, model.cutoff, seed=seed)
        charges, per_atom = fit.charges, fit.coulomb_per_atom
        if max(abs(c) for c in charges.values()) > MAX_START_CHARGE:  # data that do not pin them down
            return (
                f"initial charges: the fit gave {charges}, beyond ±{MAX_START_CHARGE} e; the charge head "
                "starts from its random initialisation instead"
            )
        line = (
            f"initial charges fitted to the energies of {fit.n_structures} structures (sign from "
            f"{fit.sign_from}): "
            + ", ".join(f"{z}: {c:+.3f}" for z, c in charges.items())
            + f"; linear fit RMSE {1000 * fit.rmse:.3g} meV/atom (charges zero: {1000 * fit.rmse_zero:.3g})"
        )
    short.set_charge_offsets(charges)
    with torch.no_grad():
        short.energy_shift -= per_atom
    return line + f"; energy shifts lowered by the mean Coulomb energy {per_atom:.4g} eV/atom"


def cache_descriptors(model: nn.Module, graphs: Sequence[dict], dtype: torch.dtype, clock: str, log) -> float:
    """``training.cache_descriptors``: store the descriptors of ``graphs`` and their derivatives in
    them (:mod:`nearsight.descriptors.cache`); the seconds it took by the run's ``clock``
    (``"cpu"`` or ``"wall"``), which the trainer counts in the time budget."""
    from ..descriptors.cache import attach_descriptor_cache, cache_size_bytes

    short = getattr(model, "short", model)
    if not hasattr(short, "descriptor"):
        raise ConfigError(
            f"training.cache_descriptors: the {getattr(short, 'model_type', type(short).__name__)} model "
            "has no fixed descriptors to cache (only ACSF/SOAP Behler-Parrinello models have)"
        )
    size = cache_size_bytes(graphs, short.descriptor.n_features, dtype)
    available = psutil.virtual_memory().available  # free plus reclaimable page cache
    if size > 0.8 * available:
        raise ConfigError(
            f"training.cache_descriptors: the cache of {len(graphs)} frames needs {size / 2**30:.2f} GiB, "
            f"more than 80 % of the {available / 2**30:.2f} GiB of available memory; set it to false"
        )
    timer = time.process_time if clock == "cpu" else time.perf_counter
    start = timer()
    attach_descriptor_cache(short.descriptor, graphs)
    seconds = timer() - start
    log(f"descriptor cache: {len(graphs)} frames, {size / 2**30:.2f} GiB, {seconds:.1f} s ({clock} clock, "
        "counted in the time budget)")  # fmt: skip
    return seconds
