"""Training configuration: a YAML file validated against a schema.

Unknown keys and bad values raise ``ConfigError`` naming the file, the key
path and the value.  Relative data paths (``data.train``, ``valid``, ``test``,
``reference_energies``, ``model.init_from``) resolve against the config file's
directory; a relative ``output_dir`` resolves against the working directory of
the command (as a shell path would), not the config file's: ``nearsight train``
prints the absolute output directory first.  ``yaml.safe_load`` only.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """Invalid configuration."""


_NUM = (int, float)
_OPT_STR = (str, type(None))
_PATHS = (str, list, type(None))


def _positive(v: Any) -> bool:
    return v > 0


def _non_negative(v: Any) -> bool:
    return v >= 0


def _fraction(v: Any) -> bool:
    return 0 <= v < 1


def _choice(*options: str) -> Callable[[Any], bool]:
    def check(v: Any) -> bool:
        return v in options

    check.__doc__ = f"one of {list(options)}"
    return check


# section -> key -> (accepted types, default, extra check or None)
SCHEMA: dict[str, dict[str, tuple[tuple[type, ...] | type, Any, Callable[[Any], bool] | None]]] = {
    "": {
        "seed": (int, 0, None),
        "dtype": (str, "float64", _choice("float64", "float32")),
        # relative to the working directory of the command (not the config file's, unlike data paths)
        "output_dir": (str, "runs/nearsight", None),
        "num_threads": ((int, type(None)), None, None),
    },
    "data": {
        "train": (_PATHS, None, None),
        "valid": (_PATHS, None, None),
        "test": (_PATHS, None, None),
        "valid_fraction": (_NUM, 0.1, _fraction),
        # seed of the train/validation split (default: the run's seed); fixed, committee members
        # (seeds seed, seed + 1, ...) differ in initialisation and batch order only
        "split_seed": ((int, type(None)), None, None),
        "format": (_OPT_STR, None, None),
        "energy_key": (str, "energy", None),
        "forces_key": (str, "forces", None),
        "stress_key": (str, "stress", None),
        "max_train_frames": ((int, type(None)), None, None),
        "reference_energies": ((str, dict), "least_squares", None),
        "min_distance": (_NUM, 0.5, _non_negative),
        # validation frames whose structure (species, positions to 1e-6 Å, cell) is also in the
        # training split are dropped (and counted in the log and training_summary.json); false:
        # counted only.  Test frames are always only counted
        "remove_duplicates": (bool, True, None),
        "config_type_key": (str, "config_type", None),
        # multi-head models: the info key naming each frame's head (level of theory)
        "head_key": (str, "head", None),
        "weight_key": (str, "weight", None),
        # Δ-learning: the labels of a cheaper method stored with each frame; the model learns
        # the difference (energy_key − baseline_energy_key, forces likewise)
        "baseline_energy_key": (_OPT_STR, None, None),
        "baseline_forces_key": (_OPT_STR, None, None),
        "baseline_stress_key": (_OPT_STR, None, None),
        # labels beyond energy/forces/stress: {declared output field: key in the file}, e.g.
        # {charges: mulliken, dipole: dipole} (atoms.arrays for per-atom fields, atoms.info for
        # per-structure ones; DeePMD: set.*/KEY.npy); batched as ref_<field> with mask has_<field>
        "extra_labels": ((dict, type(None)), None, None),
        # info keys of each structure's total charge Q (e, a whole number; 0 where absent) and spin
        # multiplicity M = 2S + 1 (1 where absent): inputs of charge-aware models
        "total_charge_key": (str, "charge", None),
        "multiplicity_key": (str, "multiplicity", None),
        # D3(BJ) dispersion subtracted from the labels at load time and added back in the saved model
        # (nearsight.training.dispersion): {functional: pbe, and any of parameters, cutoff, cn_cutoff,
        # taper}; excludes model.longrange.dispersion
        "dispersion": ((dict, type(None)), None, None),
    },
    "model": {
        "type": (str, "bpnn", _choice("bpnn", "equivariant")),
        # type: equivariant (MACE/NequIP-style, nearsight.models.equivariant): {preset: small | medium
        # | large, and any of channels, l_max, sh_l_max, correlation, num_layers, n_radial, envelope_p,
        # radial_hidden, readout_hidden, parity, gate}; cutoff is model.cutoff
        "equivariant": ((dict, type(None)), None, None),
        "descriptor": (str, "acsf", _choice("acsf", "soap")),
        "cutoff": (_NUM, 5.0, _positive),
        "cutoff_angular": ((int, float, type(None)), None, None),
        "n_radial": (int, 12, _positive),
        "n_angular_eta": (int, 2, _choice(1, 2, 3)),
        "angular": (str, "ani", _choice("g4", "ani")),
        "n_angle_sections": (int, 8, _positive),
        "n_angular_shifts": (int, 4, _positive),
        "g2_params": ((list, type(None)), None, None),
        "g4_params": ((list, type(None)), None, None),
        "g5_params": ((list, type(None)), None, None),
        "ga_params": ((list, type(None)), None, None),
        "g3_params": ((list, type(None)), None, None),
        # SOAP (descriptor: soap); the weighting defaults to DScribe's "poly" with r0 = cutoff,
        # c = 1, m = 2, which makes the potential smooth at the cutoff
        "n_max": (int, 8, _positive),
        "l_max": (int, 6, _non_negative),
        "sigma": (_NUM, 0.5, _positive),
        "rbf": (str, "gto", _choice("gto", "polynomial")),
        "weighting": ((dict, type(None)), None, None),
        # four-body bispectrum appended to the SOAP power spectrum: {n_max: 4, l_max: 3}
        # (nearsight.descriptors.bispectrum)
        "bispectrum": ((dict, type(None)), None, None),
        "hidden": (list, [64, 64], None),
        "activation": (str, "silu", _choice("silu", "tanh", "softplus", "gelu")),
        # multi-head (multi-fidelity) model: one readout per level, listed cheap to accurate;
        # each frame names its head in info[data.head_key]; the last head is the default
        "heads": ((list, type(None)), None, None),
        # long range on top of the short-range model (nearsight.longrange): {coulomb: {method: auto |
        # ewald | pme, accuracy: 1e-6 eV/Å, widths, exclusion_radius, ...} or null, dispersion:
        # {functional: pbe, ...} or null, charges: head | qeq, qeq: {solver: auto | dense | cg, ...},
        # initial_charges: fit | zero | {element: e}, repulsion: {scale: 1, envelope_degree: 6} (ZBL)};
        # a Coulomb term gives the short-range model a charge head (charges conserved per structure;
        # with charges: qeq its output is the electronegativity of charge equilibration)
        "longrange": ((dict, type(None)), None, None),
        # total charge Q and spin multiplicity M (data.total_charge_key, data.multiplicity_key) as
        # inputs of the short-range model (nearsight.models.electronic): one geometry in two charge
        # or spin states has two energies; a neutral singlet gives the model without it
        "charge_embedding": (bool, False, None),
        # several electronic states (nearsight.nonadiabatic): the model predicts a diabatic matrix
        # V_d of n_states states; its eigenvalues are the adiabatic energies (labels: data.extra_labels
        # state_energies, state_forces, state_couplings); couplings: scalar | pseudoscalar | both
        # (their symmetry under a reflection; pseudoscalar needs type: equivariant with parity: both);
        # or state_parity: [±1 per state] (scalar coupling between states of equal parity,
        # pseudoscalar between states of opposite parity: energies exactly reflection invariant);
        # diabatic_epsilon (eV) rounds a degeneracy over 2ε so that derivatives stay finite
        "n_states": (int, 1, _positive),
        "couplings": (str, "scalar", _choice("scalar", "pseudoscalar", "both")),
        "state_parity": ((list, type(None)), None, None),
        "diabatic_epsilon": (_NUM, 1e-10, _positive),
        # fine-tuning: start from this model file (its architecture; the keys above are ignored)
        "init_from": (_OPT_STR, None, None),
        # Δ-learning: the ASE calculator that supplies the baseline at inference
        # ({"calculator": "pyscf", "method": "hf", "basis": "6-31g*"}, "emt", "lj", ...)
        "baseline": ((dict, type(None)), None, None),
    },
    "training": {
        "epochs": (int, 300, _positive),
        "batch_size": (int, 16, _positive),
        "optimizer": (str, "adam", _choice("adam", "adamw")),
        "amsgrad": (bool, False, None),  # Adam's step bounded by the largest second moment seen (stabler)
        "lr": (_NUM, 1e-3, _positive),
        "weight_decay": (_NUM, 0.0, _non_negative),
        # plateau: x scheduler_factor after scheduler_patience epochs without a better validation
        # loss; cosine: to min_lr over `epochs`; budget: cosine to min_lr over max_time_minutes
        # (by time_limit_clock, updated every step), independent of the noisy validation loss
        "scheduler": (str, "plateau", _choice("plateau", "cosine", "budget", "none")),
        "scheduler_patience": (int, 10, _non_negative),
        "scheduler_factor": (_NUM, 0.5, _fraction),
        "min_lr": (_NUM, 1e-6, _non_negative),
        # plateau: when the scheduler lowers the lr, continue from the best weights so far (the
        # best model file) instead of the current ones, which a loss spike may have left behind
        "plateau_rollback": (bool, False, None),
        "early_stopping_patience": (int, 40, _positive),
        "sigma_energy": ((int, float, type(None)), None, None),
        "sigma_forces": ((int, float, type(None)), None, None),
        "sigma_stress": ((int, float, type(None)), None, None),
        "stress_weight": (_NUM, 0.0, _non_negative),
        # the loss as declared terms (nearsight.training.loss): {term: {sigma: σ or null (the
        # term's data default), weight: λ (default 1)}}, e.g. {energy: {sigma: 0.5}, forces: {},
        # charges: {weight: 10}}; without it: energy, forces and stress from the four keys above
        "loss": ((dict, type(None)), None, None),
        "clip_grad_norm": ((int, float, type(None)), None, None),
        "max_time_minutes": ((int, float, type(None)), None, None),
        # clock of max_time_minutes: "wall" (elapsed time) or "cpu" (this process's CPU time,
        # all threads): a fixed compute budget on a shared machine
        "time_limit_clock": (str, "wall", _choice("wall", "cpu")),
        "valid_every": (int, 1, _positive),
        "log_every": (int, 1, _positive),
        "eval_batch_size": (int, 64, _positive),
        "max_steps": ((int, type(None)), None, None),
        "warmup_steps": (int, 0, _non_negative),
        "ema_decay": ((int, float, type(None)), None, None),
        # [{"epoch": 200, "sigma_energy": 0.05, "lr": 1e-4}, ...]: from that epoch on
        "stages": ((list, type(None)), None, None),
        "checkpoint_every": (int, 200, _non_negative),
        "tensorboard": (bool, False, None),
        # fine-tuning: None, "readout" (train only each element network's last layer) or N
        # (freeze the first N layers of each element network)
        "freeze": ((str, int, type(None)), None, None),
        "refit_energy_shift": (bool, True, None),
        # descriptor (ACSF/SOAP) models: the descriptors of the training and validation frames and
        # their derivatives computed once (nearsight.descriptors.cache): ~3x fewer CPU seconds per
        # epoch (SOAP) for n_edges x 3 x n_features numbers of memory, paid back after ~40 epochs
        "cache_descriptors": (bool, False, None),
    },
}


def _check(section: str, key: str, value: Any, source: str) -> Any:
    types, _, check = SCHEMA[section][key]
    where = f"{source}: {section + '.' if section else ''}{key}"
    if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise ConfigError(f"{where} = {value!r}: expected {types}, got a boolean")
    if not isinstance(value, types):
        if isinstance(value, int) and float in (types if isinstance(types, tuple) else (types,)):
            value = float(value)
        else:
            names = [t.__name__ for t in (types if isinstance(types, tuple) else (types,))]
            raise ConfigError(f"{where} = {value!r}: expected {' or '.join(names)}")
    if check is not None and value is not None and not check(value):
        hint = check.__doc__ or check.__name__.strip("_").replace("_", " ")
        raise ConfigError(f"{where} = {value!r}: must be {hint}")
    return value


def validate_config(raw: dict | None, source: str = "<config>") -> dict:
    """Fill defaults and check every key; returns a new nested dict."""
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: top level must be a mapping, got {type(raw).__name__}")
    out: dict[str, Any] = {}
    for key, (_, default, _) in SCHEMA[""].items():
        out[key] = _check("", key, raw[key], source) if key in raw else copy.deepcopy(default)
    for section in (s for s in SCHEMA if s):
        given = raw.get(section, {}) or {}
        if not isinstance(given, dict):
            raise ConfigError(f"{source}: section {section!r} must be a mapping")
        unknown = sorted(set(given) - set(SCHEMA[section]))
        if unknown:
            raise ConfigError(
                f"{source}: unknown key(s) {unknown} in section {section!r}; "
                f"allowed: {sorted(SCHEMA[section])}"
            )
        out[section] = {
            key: _check(section, key, given[key], source) if key in given else copy.deepcopy(default)
            for key, (_, default, _) in SCHEMA[section].items()
        }
    unknown = sorted(set(raw) - set(SCHEMA[""]) - {s for s in SCHEMA if s})
    if unknown:
        raise ConfigError(f"{source}: unknown top-level key(s) {unknown}")
    if out["data"]["train"] is None:
        raise ConfigError(f"{source}: data.train is required")
    model = out["model"]
    if model["cutoff_angular"] is not None and not 0 < model["cutoff_angular"] <= model["cutoff"]:
        raise ConfigError(
            f"{source}: model.cutoff_angular = {model['cutoff_angular']!r}: must be in (0, model.cutoff]"
        )
    if not model["hidden"] or not all(isinstance(h, int) and h > 0 for h in model["hidden"]):
        raise ConfigError(f"{source}: model.hidden = {model['hidden']!r}: must be a list of positive ints")
    if model["type"] == "equivariant":
        from ..models.equivariant import equivariant_arguments

        try:
            equivariant_arguments(model["equivariant"])
        except ValueError as exc:
            raise ConfigError(f"{source}: model.equivariant: {exc}") from exc
    elif model["equivariant"] is not None:
        raise ConfigError(f"{source}: model.equivariant is only read with model.type: equivariant")
    if model["bispectrum"] is not None:
        _check_bispectrum(model, source)
    if model["longrange"] is not None:
        from .config_longrange import check_longrange

        check_longrange(model["longrange"], source)
    _check_states(model, source)
    heads = model["heads"]
    if heads is not None and (len(heads) < 2 or len(set(map(str, heads))) != len(heads)):
        raise ConfigError(f"{source}: model.heads = {heads!r}: must be two or more distinct names")
    _check_training(out, source)
    return out


def _check_bispectrum(model: dict, source: str) -> None:
    if model["type"] != "bpnn" or model["descriptor"] != "soap":
        raise ConfigError(f"{source}: model.bispectrum is read only with model.descriptor: soap (a BPNN)")
    from ..descriptors.bispectrum import checked_spec

    try:
        checked_spec(model["bispectrum"], model["n_max"], model["l_max"])
    except ValueError as exc:
        raise ConfigError(f"{source}: model.bispectrum: {exc}") from None


def _check_states(model: dict, source: str) -> None:
    """A multi-state (diabatic) model: no long range or heads; pseudoscalar couplings need the
    equivariant model with both parities."""
    if model["n_states"] == 1:
        if model["state_parity"] is not None:
            raise ConfigError(f"{source}: model.state_parity needs model.n_states > 1 (a diabatic model)")
        return
    for key in ("longrange", "heads", "baseline"):
        if model[key] is not None:
            raise ConfigError(
                f"{source}: model.n_states = {model['n_states']} does not combine with model.{key}"
            )
    from ..nonadiabatic.matrix import INVARIANT_MODEL_ERROR, check_states

    parities = model["state_parity"]
    if parities is not None and model["couplings"] != "scalar":
        raise ConfigError(
            f"{source}: model.state_parity sets the symmetry of every coupling; leave out "
            f"model.couplings = {model['couplings']!r}"
        )
    try:
        kinds = check_states(model["n_states"], model["couplings"], "model", parities)
    except ValueError as error:
        raise ConfigError(f"{source}: {error}") from None
    if all(kind == "scalar" for kind in kinds):
        return
    key = "state_parity" if parities is not None else "couplings"
    value = parities if parities is not None else model["couplings"]
    if model["type"] != "equivariant":
        message = INVARIANT_MODEL_ERROR.format(what=f"{key} = {value!r}", model=model["descriptor"].upper())
        raise ConfigError(f"{source}: model.{key}: {message}")
    parity = (model["equivariant"] or {}).get("parity", "natural")
    if parity != "both":
        raise ConfigError(
            f"{source}: model.{key} = {value!r} needs a pseudoscalar (0o) readout: set "
            f"model.equivariant.parity: both (now {parity!r})"
        )


def _stage_keys(training: dict) -> set[str]:
    """Keys a stage may set: ``lr`` and σ/λ of the loss's terms (``sigma_<term>``, ``<term>_weight``)."""
    names = set(training["loss"]) if training["loss"] is not None else {"energy", "forces", "stress"}
    return {"epoch", "lr"} | {f"sigma_{n}" for n in names} | {f"{n}_weight" for n in names}


def _check_loss(t: dict, source: str) -> None:
    for key in ("sigma_energy", "sigma_forces", "sigma_stress"):
        if t[key] is not None and not t[key] > 0:
            raise ConfigError(f"{source}: training.{key} = {t[key]!r}: must be positive")
    if t["loss"] is None:
        return
    from .loss import TERMS

    legacy = [k for k in ("sigma_energy", "sigma_forces", "sigma_stress") if t[k] is not None]
    legacy += ["stress_weight"] if t["stress_weight"] else []
    if legacy:
        raise ConfigError(
            f"{source}: training.loss and training.{legacy[0]} are both given; set σ and weight of each "
            f"term under training.loss (e.g. loss: {{energy: {{sigma: 0.5}}}})"
        )
    if not t["loss"]:
        raise ConfigError(f"{source}: training.loss is empty; list at least one term of {sorted(TERMS)}")
    for name, spec in list(t["loss"].items()):
        where = f"{source}: training.loss.{name}"
        if name not in TERMS:
            raise ConfigError(f"{where}: unknown loss term; registered terms: {sorted(TERMS)}")
        spec = {} if spec is None else spec
        if not isinstance(spec, dict) or set(spec) - {"sigma", "weight"}:
            raise ConfigError(f"{where} = {spec!r}: must be a mapping with keys sigma and/or weight")
        sigma, weight = spec.get("sigma"), spec.get("weight", 1.0)
        per_state = isinstance(sigma, list) and name.startswith("state_")  # one σ per state (pair)
        for value in sigma if per_state else [sigma]:
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, _NUM) or not value > 0
            ):
                raise ConfigError(
                    f"{where}.sigma = {sigma!r}: must be a positive number or null"
                    + (" (or a list of them, one per state)" if name.startswith("state_") else "")
                )
        if isinstance(weight, bool) or not isinstance(weight, _NUM) or not weight >= 0:
            raise ConfigError(f"{where}.weight = {weight!r}: must be a number >= 0")
        if per_state:
            sigma = [float(v) for v in sigma]
        t["loss"][name] = {
            "sigma": sigma if sigma is None or per_state else float(sigma),
            "weight": float(weight),
        }
    if not any(spec["weight"] > 0 for spec in t["loss"].values()):
        raise ConfigError(f"{source}: training.loss: every term has weight 0")


def _check_training(config: dict, source: str) -> None:
    t, data = config["training"], config["data"]
    _check_loss(t, source)
    if data["extra_labels"] is not None:
        from ..data.readers import extra_label_keys

        try:
            extra_label_keys(data["extra_labels"])
        except ValueError as exc:
            raise ConfigError(f"{source}: data.extra_labels: {exc}") from exc
    if data["dispersion"] is not None:
        from .dispersion import check_dispersion_settings

        try:
            data["dispersion"] = check_dispersion_settings(data["dispersion"], config["model"]["longrange"])
        except ValueError as exc:
            raise ConfigError(f"{source}: data.dispersion: {exc}") from exc
    if t["max_time_minutes"] is not None and not t["max_time_minutes"] > 0:
        raise ConfigError(
            f"{source}: training.max_time_minutes = {t['max_time_minutes']!r}: must be positive"
        )
    if t["scheduler"] == "budget" and t["max_time_minutes"] is None:
        raise ConfigError(f"{source}: training.scheduler = 'budget' needs training.max_time_minutes")
    if t["plateau_rollback"] and t["scheduler"] != "plateau":
        raise ConfigError(
            f"{source}: training.plateau_rollback needs scheduler: plateau, not {t['scheduler']!r}"
        )
    if t["ema_decay"] is not None and not 0 < t["ema_decay"] < 1:
        raise ConfigError(f"{source}: training.ema_decay = {t['ema_decay']!r}: must be in (0, 1)")
    if t["max_steps"] is not None and t["max_steps"] < 1:
        raise ConfigError(f"{source}: training.max_steps = {t['max_steps']!r}: must be >= 1")
    freeze = t["freeze"]
    if freeze is not None and freeze != "readout" and not (isinstance(freeze, int) and freeze >= 0):
        raise ConfigError(f"{source}: training.freeze = {freeze!r}: must be 'readout' or a layer count >= 0")
    if freeze is not None and config["model"]["init_from"] is None:
        raise ConfigError(f"{source}: training.freeze needs model.init_from (a model to fine-tune)")
    last = 0
    for k, stage in enumerate(t["stages"] or []):
        where = f"{source}: training.stages[{k}]"
        if not isinstance(stage, dict) or not isinstance(stage.get("epoch"), int) or stage["epoch"] < 1:
            raise ConfigError(f"{where} = {stage!r}: must be a mapping with an integer 'epoch' >= 1")
        allowed = _stage_keys(t)
        unknown = sorted(set(stage) - allowed)
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")
        for key, value in stage.items():
            if key == "epoch":
                continue
            smallest_ok = 0 if key.endswith("_weight") else 1e-300  # a term's weight may switch off
            if isinstance(value, bool) or not isinstance(value, _NUM) or value < smallest_ok:
                raise ConfigError(f"{where}.{key} = {value!r}: must be a positive number")
        if stage["epoch"] <= last:
            raise ConfigError(f"{where}: epochs must increase, got {stage['epoch']} after {last}")
        last = stage["epoch"]
    if data["baseline_forces_key"] and not data["baseline_energy_key"]:
        raise ConfigError(f"{source}: data.baseline_forces_key needs data.baseline_energy_key")
    if config["model"]["baseline"] is not None and not data["baseline_energy_key"]:
        raise ConfigError(f"{source}: model.baseline (Δ-learning) needs data.baseline_energy_key")


def _resolve(value: Any, base: Path) -> Any:
    if value is None:
        return None
    if isinstance(value, list):
        return [_resolve(v, base) for v in value]
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else (base / p))


def load_config(path: str | Path) -> dict:
    """Read, validate and resolve a YAML config file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{str(path)!r}: invalid YAML ({exc})") from exc
    config = validate_config(raw, source=repr(str(path)))
    base = path.resolve().parent
    for key in ("train", "valid", "test"):
        config["data"][key] = _resolve(config["data"][key], base)
    if config["model"]["init_from"] is not None:
        config["model"]["init_from"] = _resolve(config["model"]["init_from"], base)
    ref = config["data"]["reference_energies"]
    if isinstance(ref, str) and ref != "least_squares":
        config["data"]["reference_energies"] = _resolve(ref, base)
    out_dir = Path(config["output_dir"]).expanduser()
    config["output_dir"] = str(out_dir if out_dir.is_absolute() else Path.cwd() / out_dir)
    return config
