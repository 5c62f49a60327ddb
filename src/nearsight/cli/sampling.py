"""``nearsight umbrella`` / ``nearsight metad``: free-energy profiles from a validated YAML config.

::

    structure: start.xyz            # any file ASE reads (frame ``index``, default 0)
    model: model.pt                 # or a list: a committee (mean forces); or instead
    # toy: {surface: double_well, barrier: 0.065, tilt: 0.013}   # or mueller_brown (no model)
    cv: {type: distance, atoms: [0, 1]}   # angle [i,j,k] | dihedral [i,j,k,l] |
                                    # coordination {group_a, group_b, r0, n, m} | position {atom, direction}
    md: {timestep_fs: 0.5, temperature_K: 300, friction_per_fs: 0.01, seed: 0}
    umbrella:                       # nearsight umbrella
      centres: {start: 0.9, stop: 2.0, num: 12}   # or a list
      k: 10.0                       # eV per CV unit²
      steps: 2000                   # recorded steps per window (after equilibration_steps)
      equilibration_steps: 200
      bins: 40                      # or {start, stop, num}
    metad:                          # nearsight metad (cv: one spec or a list of two)
      {height: 0.01, sigma: 0.05, bias_factor: 8, pace: 100, steps: 50000,
       grid: [[0.5, 4.0, 350]], bins: {start: 0.8, stop: 3.0, num: 45}}
    output_dir: runs/umbrella

Writes ``output_dir/profile.json`` and ``profile.png`` (and the resumable run files); ``--resume``
continues a killed run.  Paths in the config resolve against its directory, ``output_dir``
against the working directory.  Library code: :mod:`nearsight.sampling`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

TOP = {"structure", "index", "model", "toy", "dtype", "device", "cv", "md", "output_dir", "umbrella", "metad"}
MD = {"timestep_fs", "temperature_K", "friction_per_fs", "seed"}
UMBRELLA = {"centres", "k", "steps", "equilibration_steps", "sample_interval", "bins", "min_overlap"}
METAD = {
    "height", "sigma", "bias_factor", "pace", "steps", "grid", "checkpoint_every", "sample_interval", "bins",
    "discard_fraction",
}  # fmt: skip
TOY = {"double_well": {"barrier", "half_width", "tilt", "k_perp"}, "mueller_brown": {"scale", "k_z"}}


def _keys(source: str, where: str, section: Any, allowed: set[str], required: tuple[str, ...] = ()) -> dict:
    if not isinstance(section, dict):
        raise ValueError(f"{source}: {where} = {section!r}: must be a mapping")
    unknown = sorted(set(section) - allowed)
    if unknown:
        raise ValueError(f"{source}: unknown key {unknown[0]!r} in {where}; allowed: {sorted(allowed)}")
    for key in required:
        if key not in section:
            raise ValueError(f"{source}: missing key {where}.{key}")
    return dict(section)


def _num(source: str, key: str, value: Any, integer: bool = False, positive: bool = True) -> Any:
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
        raise ValueError(f"{source}: {key} = {value!r}: must be {'an integer' if integer else 'a number'}")
    if positive and not value > 0:
        raise ValueError(f"{source}: {key} = {value!r}: must be positive")
    return value if integer else float(value)


def _points(source: str, key: str, value: Any) -> list[float]:
    """A list of numbers, or {start, stop, num} (num points, ends included)."""
    import numpy as np

    if isinstance(value, dict):
        v = _keys(source, key, value, {"start", "stop", "num"}, ("start", "stop", "num"))
        num = _num(source, f"{key}.num", v["num"], integer=True)
        lo, hi = (_num(source, f"{key}.{k}", v[k], positive=False) for k in ("start", "stop"))
        return np.linspace(lo, hi, num).tolist()
    if not isinstance(value, list) or not value:
        raise ValueError(f"{source}: {key} = {value!r}: must be a list of numbers or {{start, stop, num}}")
    return [_num(source, f"{key}[{i}]", x, positive=False) for i, x in enumerate(value)]


def load_sampling_config(path: str | Path, method: str) -> dict:
    """Read (``yaml.safe_load``) and check a config for ``method`` ("umbrella" or "metad")."""
    import yaml

    path = Path(path)
    source = str(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"{source}: cannot read the config ({exc})") from exc
    c = _keys(source, "the config", raw, TOP, ("cv", "output_dir", method))
    other = "metad" if method == "umbrella" else "umbrella"
    if other in c:
        raise ValueError(
            f"{source}: key {other!r} belongs to `nearsight {other}`, this is `nearsight {method}`"
        )
    if ("model" in c) == ("toy" in c):
        raise ValueError(f"{source}: give exactly one of 'model' (model file(s)) and 'toy'")
    base = path.resolve().parent
    if "model" in c:
        models = c["model"] if isinstance(c["model"], list) else [c["model"]]
        for m in models:
            if not isinstance(m, str) or not (base / m).is_file():
                raise ValueError(f"{source}: model = {m!r}: no such file")
        c["model"] = [str(base / m) for m in models]
        if not isinstance(c.get("structure"), str) or not (base / c["structure"]).is_file():
            raise ValueError(f"{source}: structure = {c.get('structure')!r}: no such file")
    else:
        toy = _keys(source, "toy", c["toy"], {"surface"} | set().union(*TOY.values()), ("surface",))
        if toy["surface"] not in TOY:
            raise ValueError(f"{source}: toy.surface = {toy['surface']!r}: must be one of {sorted(TOY)}")
        _keys(source, "toy", toy, {"surface"} | TOY[toy["surface"]])
        c["toy"] = toy
    if "structure" in c:
        c["structure"] = str(base / c["structure"])
    c["index"] = _num(source, "index", c.get("index", 0), integer=True, positive=False)
    md = _keys(source, "md", c.get("md", {}), MD)
    c["md"] = {"timestep_fs": 1.0, "temperature_K": 300.0, "friction_per_fs": 0.01, "seed": 0, **md}
    for key in ("timestep_fs", "temperature_K", "friction_per_fs"):
        c["md"][key] = _num(source, f"md.{key}", c["md"][key])
    c["md"]["seed"] = _num(source, "md.seed", c["md"]["seed"], integer=True, positive=False)
    from ..sampling.colvars import cv_from_dict

    specs = c["cv"] if isinstance(c["cv"], list) else [c["cv"]]
    if not 1 <= len(specs) <= (1 if method == "umbrella" else 2):
        raise ValueError(
            f"{source}: cv: {method} takes {'one CV' if method == 'umbrella' else 'one or two CVs'}"
        )
    c["cv"] = [cv_from_dict(s, f"{source}: cv") for s in specs]
    if method == "umbrella":
        u = _keys(source, "umbrella", c["umbrella"], UMBRELLA, ("centres", "k", "steps"))
        u["centres"] = _points(source, "umbrella.centres", u["centres"])
        u["k"] = _num(source, "umbrella.k", u["k"])
        u["min_overlap"] = _num(source, "umbrella.min_overlap", u.get("min_overlap", 0.03), positive=False)
    else:
        u = _keys(source, "metad", c["metad"], METAD, ("height", "sigma", "bias_factor", "pace", "steps"))
        u["height"] = _num(source, "metad.height", u["height"])
        u["bias_factor"] = _num(source, "metad.bias_factor", u["bias_factor"])
        sigma = u["sigma"] if isinstance(u["sigma"], list) else [u["sigma"]] * len(specs)
        u["sigma"] = [_num(source, "metad.sigma", s) for s in sigma]
        for key, default in (("pace", None), ("checkpoint_every", 1000)):
            u[key] = _num(source, f"metad.{key}", u.get(key, default), integer=True)
        u["discard_fraction"] = _num(
            source, "metad.discard_fraction", u.get("discard_fraction", 0.2), positive=False
        )
        if "grid" in u:
            if not isinstance(u["grid"], list) or len(u["grid"]) != len(specs):
                raise ValueError(f"{source}: metad.grid = {u['grid']!r}: one [lower, upper, bins] per CV")
            u["grid"] = [tuple(_points(source, "metad.grid", g)) for g in u["grid"]]
    u["steps"] = _num(source, f"{method}.steps", u["steps"], integer=True)
    u["sample_interval"] = _num(
        source, f"{method}.sample_interval", u.get("sample_interval", 1), integer=True
    )
    if method == "umbrella":
        eq = u.get("equilibration_steps", 0)
        u["equilibration_steps"] = _num(
            source, "umbrella.equilibration_steps", eq, integer=True, positive=False
        )
    bins = u.get("bins", 50)
    if isinstance(bins, (dict, list)):
        u["bins"] = _points(source, f"{method}.bins", bins)
    else:
        u["bins"] = _num(source, f"{method}.bins", bins, integer=True)
    c[method] = u
    if not isinstance(c["output_dir"], str) or not c["output_dir"]:
        raise ValueError(f"{source}: output_dir = {c['output_dir']!r}: must be a directory name")
    return c


def _system(c: dict):
    """(atoms, calculator) of a checked config."""
    from ase import Atoms
    from ase.io import read

    if "toy" in c:
        from ..sampling.toy_surfaces import DoubleWell, MuellerBrown

        params = {k: v for k, v in c["toy"].items() if k != "surface"}
        calc = DoubleWell(**params) if c["toy"]["surface"] == "double_well" else MuellerBrown(**params)
        start = [-1.0, 0.0, 0.0] if c["toy"]["surface"] == "double_well" else [-0.558, 1.442, 0.0]
        atoms = read(c["structure"], index=c["index"]) if "structure" in c else Atoms("H", positions=[start])
        return atoms, calc
    try:
        atoms = read(c["structure"], index=c["index"])
    except Exception as exc:  # noqa: BLE001 - re-raised naming the file
        raise ValueError(f"{c['structure']!r}: cannot read structure ({exc})") from exc
    options = {"dtype": c.get("dtype", "float64"), "device": c.get("device", "cpu")}
    if len(c["model"]) == 1:
        from ..calculator import NearsightCalculator

        return atoms, NearsightCalculator(c["model"][0], **options)
    from ..uncertainty import EnsembleCalculator

    return atoms, EnsembleCalculator(c["model"], **options)


def umbrella_command(args: argparse.Namespace) -> int:
    from ..sampling.plots import plot_profiles
    from ..sampling.umbrella import mbar_profile, run_umbrella

    c = load_sampling_config(args.config, "umbrella")
    u, md, out = c["umbrella"], c["md"], Path(args.output_dir or c["output_dir"])
    atoms, calc = _system(c)
    windows = run_umbrella(
        atoms, calc, c["cv"][0], u["centres"], u["k"], steps=u["steps"],
        equilibration_steps=u["equilibration_steps"], sample_interval=u["sample_interval"], output_dir=out,
        resume=args.resume, progress=print, **md,
    )  # fmt: skip
    profile = mbar_profile(windows, md["temperature_K"], u["bins"], min_overlap=u["min_overlap"])
    _report(
        profile, out, lambda path: plot_profiles({"MBAR": profile}, path, windows=windows, xlabel=_label(c))
    )
    return 0


def metad_command(args: argparse.Namespace) -> int:
    import numpy as np

    from ..sampling.bias import WellTemperedMetadynamics
    from ..sampling.metadynamics import bias_profile, reweighted_profile, run_metadynamics, save_run_json
    from ..sampling.plots import plot_metadynamics_run, plot_profiles

    c = load_sampling_config(args.config, "metad")
    m, md, out = c["metad"], c["md"], Path(args.output_dir or c["output_dir"])
    atoms, calc = _system(c)
    bias = WellTemperedMetadynamics(
        c["cv"], m["height"], m["sigma"], m["bias_factor"], md["temperature_K"], m["pace"], grid=m.get("grid")
    )
    run = run_metadynamics(
        atoms, calc, bias, steps=m["steps"], sample_interval=m["sample_interval"],
        checkpoint_every=m["checkpoint_every"], output_dir=out, resume=args.resume, progress=print, **md,
    )  # fmt: skip
    bins = m["bins"]
    if not isinstance(bins, list):
        lo, hi = run.cv[:, :, 0].min(), run.cv[:, :, 0].max()
        bins = np.linspace(lo, hi + 1e-9, bins + 1)
    profiles = {"reweighted": reweighted_profile(run, bins, discard_fraction=m["discard_fraction"])}
    if len(bias.cvs) == 1:
        profiles["bias"] = bias_profile(bias, bins)
    path = save_run_json(out / "profile.json", profiles)
    png = plot_profiles(profiles, out / "profile.png", xlabel=_label(c))
    plot_metadynamics_run(run, out / "hills.png")
    p = profiles["reweighted"]
    print(
        f"{bias.n_hills} hills; reweighted F over {len(p.bin_centres)} bins of CV 0 spans "
        f"{np.nanmax(p.free_energy) / p.kT:.2f} k_BT"
    )
    print(path)
    print(png)
    return 0


def _label(c: dict) -> str:
    return repr(c["cv"][0])


def _report(profile, out: Path, plot) -> None:
    import numpy as np

    d = profile.diagnostics
    print(
        f"MBAR: {len(d['window_centres'])} windows, smallest neighbour overlap "
        f"{d['min_neighbour_overlap']:.3f}, "
        f"F range {np.nanmax(profile.free_energy) / profile.kT:.2f} k_BT, "
        f"largest error bar {np.nanmax(profile.uncertainty) / profile.kT:.2f} k_BT"
    )
    print(profile.save_json(out / "profile.json"))
    print(plot(out / "profile.png"))


def add_sampling_parsers(sub: argparse._SubParsersAction) -> None:
    """``nearsight umbrella CONFIG [--resume]`` and ``nearsight metad CONFIG [--resume]``."""
    for name, func, text in (
        (
            "umbrella",
            umbrella_command,
            "umbrella sampling along a CV, MBAR free-energy profile with error bars",
        ),
        ("metad", metad_command, "well-tempered metadynamics on one or two CVs, reweighted free energy"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("config", help="YAML config (see nearsight.cli.sampling)")
        p.add_argument("--output-dir", default=None, help="override output_dir of the config")
        p.add_argument("--resume", action="store_true", help="continue the run in output_dir after a kill")
        p.set_defaults(func=func)
