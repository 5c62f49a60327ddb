"""The active-learning config (YAML, checked, defaults filled) and the QM oracle it names."""

from __future__ import annotations

import copy
import importlib
import os
from pathlib import Path
from typing import Any

import yaml

from ..qm import Oracle


class ActiveLearningConfigError(ValueError):
    """Invalid active-learning configuration."""


_DEFAULTS: dict[str, Any] = {
    "output_dir": "runs/active_learning",
    "seed": 0,
    "seeds": None,  # structures file (any ASE format): the initial structures, labelled first
    "test": None,  # optional labelled test set (extxyz with energy/forces) for errors per iteration
    "max_iterations": 10,
    "oracle": {"type": "pyscf"},
    "labelling": {"n_workers": 2, "timeout_s": None},
    "committee": {"n_members": 4, "bootstrap": False, "fine_tune": False, "valid_fraction": 0.0, "train": {}},
    "explore": {
        "temperatures": [300.0],
        "steps": 1000,
        "timestep_fs": 0.5,
        "friction_per_fs": 0.02,
        "interval": 5,
        "n_starts": 2,
    },
    "select": {"threshold": 0.2, "batch_size": 8, "min_sigma_fraction": 0.5},
}


def _merge(default: dict, given: dict, where: str) -> dict:
    unknown = sorted(set(given) - set(default))
    if unknown:
        raise ActiveLearningConfigError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(default)}")
    out = copy.deepcopy(default)
    for k, v in given.items():
        if isinstance(default[k], dict) and k not in ("train",) and k != "oracle":
            if not isinstance(v, dict):
                raise ActiveLearningConfigError(f"{where}.{k} = {v!r}: must be a mapping")
            out[k] = _merge(default[k], v, f"{where}.{k}")
        else:
            out[k] = v
    return out


def load_al_config(path: str | os.PathLike | dict, base: Path | None = None) -> dict:
    """Read and check an active-learning config (YAML file or dict); paths resolve against its folder."""
    if isinstance(path, dict):
        raw, source, base = path, "<config>", base or Path.cwd()
    else:
        p = Path(path)
        if not p.is_file():
            raise ActiveLearningConfigError(f"config file {str(p)!r} does not exist")
        source, base = repr(str(p)), p.resolve().parent
        try:
            raw = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:  # e.g. a !!python/... tag: safe_load refuses to build objects
            raise ActiveLearningConfigError(f"{source}: invalid YAML ({exc})") from exc
    if not isinstance(raw, dict):
        raise ActiveLearningConfigError(f"{source}: top level must be a mapping, got {type(raw).__name__}")
    cfg = _merge(_DEFAULTS, raw, source)
    if cfg["seeds"] is None:
        raise ActiveLearningConfigError(f"{source}: 'seeds' (a structures file) is required")
    for key in ("seeds", "test", "output_dir"):
        if cfg[key] is not None:
            q = Path(cfg[key]).expanduser()
            cfg[key] = str(q if q.is_absolute() else base / q)
    sel, exp, com = cfg["select"], cfg["explore"], cfg["committee"]
    checks = [
        (sel["threshold"] > 0, "select.threshold", sel["threshold"], "> 0"),
        (int(sel["batch_size"]) >= 1, "select.batch_size", sel["batch_size"], ">= 1"),
        (int(com["n_members"]) >= 2, "committee.n_members", com["n_members"], ">= 2"),
        (
            0 <= float(com["valid_fraction"]) < 1,
            "committee.valid_fraction",
            com["valid_fraction"],
            "in [0, 1)",
        ),
        (int(exp["steps"]) >= 1, "explore.steps", exp["steps"], ">= 1"),
        (int(exp["interval"]) >= 1, "explore.interval", exp["interval"], ">= 1"),
        (len(exp["temperatures"]) >= 1, "explore.temperatures", exp["temperatures"], "a non-empty list"),
        (int(cfg["max_iterations"]) >= 1, "max_iterations", cfg["max_iterations"], ">= 1"),
    ]
    for ok, key, value, must in checks:
        if not ok:
            raise ActiveLearningConfigError(f"{source}: {key} = {value!r}: must be {must}")
    if not isinstance(cfg["oracle"], dict) or "type" not in cfg["oracle"]:
        raise ActiveLearningConfigError(
            f"{source}: oracle = {cfg['oracle']!r}: must be a mapping with 'type'"
        )
    return cfg


def make_oracle(spec: dict, allow_python: bool = False) -> Oracle:
    """``{type: pyscf, method, basis, ...}``, ``{type: emt}`` or ``{type: python, object: "mod:Name", kwargs}``.

    ``type: python`` imports and calls user code: only with ``allow_python=True``.
    """
    spec = dict(spec)
    kind = spec.pop("type")
    if kind == "pyscf":
        from ..qm import PySCFOracle

        return PySCFOracle(**spec)
    if kind == "emt":
        from ase.calculators.emt import EMT

        from ..qm import ASECalculatorOracle

        return ASECalculatorOracle(EMT, method="emt", timeout_s=spec.get("timeout_s"))
    if kind == "python":
        if not allow_python:
            raise ActiveLearningConfigError(
                f"oracle.type = 'python' (object {spec.get('object')!r}) imports and runs Python code, "
                "which a config alone may not do: pass --allow-python-oracle to nearsight active-learn "
                "(allow_python_oracle=True to run_active_learning) if you trust this config"
            )
        if "object" not in spec:
            raise ActiveLearningConfigError("oracle.type = 'python' needs oracle.object: 'module:Name'")
        module, _, name = str(spec["object"]).partition(":")
        obj = getattr(importlib.import_module(module), name)(**spec.get("kwargs", {}))
        if not isinstance(obj, Oracle):
            raise ActiveLearningConfigError(
                f"oracle.object {spec['object']!r} made a {type(obj).__name__}, not an Oracle"
            )
        return obj
    raise ActiveLearningConfigError(f"oracle.type = {kind!r}: must be pyscf, emt or python")
