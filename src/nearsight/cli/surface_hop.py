"""``nearsight surface-hop CONFIG.yaml``: swarms of FSSH trajectories from a validated YAML config.

::

    potential: {analytic: tully1}     # tully1|tully2|tully3|ferretti, or {model: M.pt, structure: S.xyz}
    initial: {state: 0, x0: -15.0, k0: 20.0, sigma_x: 5.0}
    trajectories: 2000
    swarm_size: 500
    timestep_au: 1.0                  # or timestep_fs
    steps: 4000                       # or time_fs / time_au
    frustrated: keep                  # keep | reverse
    decoherence: null                 # or C in Eh (Granucci-Persico, 0.1)
    seed: 0
    output_dir: runs/fssh_tully1

``initial.state`` is the adiabatic state index, 0 = the lowest (S0).  ``initial`` for Tully's models:
``x0, k0, sigma_x`` (bohr, a.u. of momentum); Ferretti: ``q0: [X, Y]``, optional ``p0`` and ``sigma``
(``potential.masses`` overrides M_X, M_Y); a molecule: ``temperature_K`` (0: zero-point) of the
Wigner sampling at the structure (``potential.index``: its frame).  Optional: ``record_every`` (steps
between population rows, 1) and ``checkpoint_every`` (100).  ``model`` and ``structure`` resolve
against the config's directory, ``output_dir`` against the working directory.  Library code:
:mod:`nearsight.simulate.swarm_run`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

AU_TIME_FS = 0.02418884326585747  # fs per atomic unit of time (as in swarm_run, which imports torch)
ANALYTIC = ("tully1", "tully2", "tully3", "ferretti")
TOP = {
    "potential", "initial", "trajectories", "swarm_size", "timestep_au", "timestep_fs", "steps", "time_fs",
    "time_au", "frustrated", "decoherence", "seed", "output_dir", "record_every", "checkpoint_every",
}  # fmt: skip
INITIAL = {
    "tully": {"state", "x0", "k0", "sigma_x"},
    "ferretti": {"state", "q0", "p0", "sigma"},
    "model": {"state", "temperature_K"},
}


def _number(source: str, key: str, value, *, integer: bool = False, positive: bool = False, minimum=None):
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind):
        raise ValueError(f"{source}: {key} = {value!r}: must be {'an integer' if integer else 'a number'}")
    if (positive and not value > 0) or (minimum is not None and value < minimum):
        bound = "positive" if positive else f">= {minimum}"
        raise ValueError(f"{source}: {key} = {value!r}: must be {bound}")
    return value if integer else float(value)


def _vector(source: str, key: str, value, length: int, positive: bool = False) -> list[float]:
    if not isinstance(value, list) or len(value) != length:
        raise ValueError(f"{source}: {key} = {value!r}: must be a list of {length} numbers")
    return [_number(source, f"{key}[{i}]", v, positive=positive) for i, v in enumerate(value)]


def _one_of(source: str, config: dict, keys: tuple[str, ...]) -> str:
    given = [k for k in keys if k in config]
    if len(given) != 1:
        raise ValueError(f"{source}: give exactly one of {list(keys)}, got {given or 'none'}")
    return given[0]


def load_surface_hop_config(path: str | Path) -> dict:
    """Read and validate a config (``yaml.safe_load``); errors name the file, the key and the value.
    Returns a dict with every key filled in, ``timestep_au`` and ``steps`` computed."""
    import yaml

    path = Path(path)
    source = str(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"{source}: cannot read the config ({exc})") from exc
    if not isinstance(raw, dict):
        raise ValueError(f"{source}: the config must be a mapping of keys, got {type(raw).__name__}")
    unknown = sorted(set(raw) - TOP)
    if unknown:
        raise ValueError(f"{source}: unknown key(s) {unknown}; allowed: {sorted(TOP)}")
    c = {
        "frustrated": "keep",
        "decoherence": None,
        "seed": 0,
        "record_every": 1,
        "checkpoint_every": 100,
        **raw,
    }
    for key in ("potential", "initial", "trajectories", "output_dir"):
        if key not in c:
            raise ValueError(f"{source}: missing key {key!r}")
    base = path.resolve().parent
    c["potential"] = _potential(source, c["potential"], base)
    kind = "model" if "model" in c["potential"] else c["potential"]["analytic"].rstrip("123")
    c["initial"] = _initial(source, c["initial"], kind)
    for key in ("trajectories", "record_every", "checkpoint_every"):
        c[key] = _number(source, key, c[key], integer=True, positive=True)
    c["swarm_size"] = _number(source, "swarm_size", c.get("swarm_size", min(c["trajectories"], 500)), integer=True, positive=True)  # fmt: skip
    c["seed"] = _number(source, "seed", c["seed"], integer=True, minimum=0)
    if c["frustrated"] not in ("keep", "reverse"):
        raise ValueError(f"{source}: frustrated = {c['frustrated']!r}: must be 'keep' or 'reverse'")
    if c["decoherence"] is not None:
        c["decoherence"] = _number(source, "decoherence", c["decoherence"], positive=True)
    if not isinstance(c["output_dir"], str) or not c["output_dir"]:
        raise ValueError(f"{source}: output_dir = {c['output_dir']!r}: must be a directory name")
    key = _one_of(source, c, ("timestep_au", "timestep_fs"))
    dt = _number(source, key, c[key], positive=True)
    c["timestep_au"] = dt / AU_TIME_FS if key == "timestep_fs" else dt
    key = _one_of(source, c, ("steps", "time_fs", "time_au"))
    if key == "steps":
        c["steps"] = _number(source, "steps", c["steps"], integer=True, positive=True)
    else:
        total = _number(source, key, c[key], positive=True) / (AU_TIME_FS if key == "time_fs" else 1.0)
        c["steps"] = max(1, round(total / c["timestep_au"]))
    return c


def _potential(source: str, p, base: Path) -> dict:
    if not isinstance(p, dict):
        raise ValueError(f"{source}: potential = {p!r}: must be a mapping ({{analytic: tully1}} or {{model: ..., structure: ...}})")  # fmt: skip
    key = _one_of(source + " potential", p, ("analytic", "model"))
    allowed = {"analytic", "masses"} if key == "analytic" else {"model", "structure", "index"}
    unknown = sorted(set(p) - allowed)
    if unknown:
        raise ValueError(f"{source}: unknown key(s) {unknown} in potential; allowed: {sorted(allowed)}")
    p = dict(p)
    if key == "analytic":
        if p["analytic"] not in ANALYTIC:
            raise ValueError(
                f"{source}: potential.analytic = {p['analytic']!r}: must be one of {list(ANALYTIC)}"
            )
        if "masses" in p:
            if p["analytic"] != "ferretti":
                raise ValueError(f"{source}: potential.masses: only for ferretti (Tully's models use 2000)")
            p["masses"] = _vector(source, "potential.masses", p["masses"], 2, positive=True)
        return p
    for name in ("model", "structure"):
        if not isinstance(p.get(name), str):
            raise ValueError(f"{source}: potential.{name} = {p.get(name)!r}: must be a file name")
        p[name] = str(base / p[name])
        if not Path(p[name]).is_file():
            raise ValueError(f"{source}: potential.{name} = {p[name]!r}: no such file")
    p["index"] = _number(source, "potential.index", p.get("index", 0), integer=True)
    return p


def _initial(source: str, i, kind: str) -> dict:
    if not isinstance(i, dict):
        raise ValueError(f"{source}: initial = {i!r}: must be a mapping")
    unknown = sorted(set(i) - INITIAL[kind])
    if unknown:
        raise ValueError(
            f"{source}: unknown key(s) {unknown} in initial; allowed here: {sorted(INITIAL[kind])}"
        )
    i = {"state": 0, **i}
    i["state"] = _number(source, "initial.state", i["state"], integer=True, minimum=0)
    if kind == "tully":
        for key in ("x0", "k0", "sigma_x"):
            if key not in i:
                raise ValueError(f"{source}: missing key initial.{key}")
            i[key] = _number(source, f"initial.{key}", i[key], positive=key == "sigma_x")
    elif kind == "ferretti":
        if "q0" not in i:
            raise ValueError(f"{source}: missing key initial.q0 ([X, Y] bohr)")
        i["q0"] = _vector(source, "initial.q0", i["q0"], 2)
        i["p0"] = _vector(source, "initial.p0", i.get("p0", [0.0, 0.0]), 2)
        if i.get("sigma") is not None:
            i["sigma"] = _vector(source, "initial.sigma", i["sigma"], 2, positive=True)
    else:
        i["temperature_K"] = _number(source, "initial.temperature_K", i.get("temperature_K", 0.0), minimum=0)
    return i


def build_problem(config: dict):
    """The :class:`~nearsight.simulate.swarm_run.Problem` of a validated config."""
    from ..simulate import swarm_run as sr

    p, i = config["potential"], config["initial"]
    if "model" in p:
        potential = sr.load_molecular(p["model"], p["structure"], p["index"])
        description = {"model": p["model"], "structure": p["structure"], "index": p["index"]}
        problem = sr.molecular_problem(potential, i["temperature_K"], description)
    elif p["analytic"] == "ferretti":
        problem = sr.ferretti_problem(i["q0"], i["p0"], i.get("sigma"), p.get("masses", sr.FERRETTI_MASSES))
    else:
        problem = sr.tully_problem(int(p["analytic"][-1]), i["x0"], i["k0"], i["sigma_x"])
    if i["state"] >= problem.n_states:
        raise ValueError(
            f"initial.state = {i['state']}: must be 0 .. {problem.n_states - 1} (adiabatic index, 0 = lowest)"
        )
    return problem


def _check_output(out_dir: Path, args: argparse.Namespace) -> None:
    """As ``nearsight train``: a directory holding a run is refused unless --resume or --overwrite."""
    from ..simulate.swarm_run import RUN_FILES

    if args.resume and args.overwrite:
        raise ValueError(
            "--resume continues the run in the output directory, --overwrite replaces it: pick one"
        )
    found = [name for name in RUN_FILES if (out_dir / name).is_file()]
    if args.resume:
        if not (out_dir / "checkpoint.pt").is_file():
            raise ValueError(f"--resume: no checkpoint.pt in {str(out_dir)!r} to continue from")
        return
    if found and args.overwrite:
        for name in RUN_FILES:
            (out_dir / name).unlink(missing_ok=True)
    elif found:
        state = "finished" if (out_dir / "summary.json").is_file() else "started"
        raise ValueError(
            f"output directory {str(out_dir)!r} already holds a {state} run ({', '.join(found)}): pass --resume "
            "to continue it, --overwrite to replace it, or another --output-dir"
        )


def surface_hop_command(args: argparse.Namespace) -> int:
    config = load_surface_hop_config(args.config)
    out_dir = Path(args.output_dir or config["output_dir"]).resolve()
    _check_output(out_dir, args)
    problem = build_problem(config)
    from ..simulate.swarm_run import run_swarms

    c = config
    print(
        f"output directory: {out_dir}\n{c['trajectories']} trajectories in swarms of {c['swarm_size']}, "
        f"{c['steps']} steps of {c['timestep_au']:.6g} a.u. ({c['timestep_au'] * AU_TIME_FS:.4g} fs), "
        f"starting on state {c['initial']['state']}",
        flush=True,
    )
    result = run_swarms(
        problem, out_dir, trajectories=c["trajectories"], swarm_size=c["swarm_size"],
        timestep_au=c["timestep_au"], steps=c["steps"], state=c["initial"]["state"], frustrated=c["frustrated"],
        decoherence=c["decoherence"], seed=c["seed"], record_every=c["record_every"],
        checkpoint_every=c["checkpoint_every"], resume=args.resume, progress=lambda line: print(line, flush=True),
    )  # fmt: skip
    outcomes = result.outcomes()
    t = float(result.time_au[-1])
    print(f"final populations at t = {t:.6g} a.u. ({t * AU_TIME_FS:.4g} fs), {result.final_state.numel()} trajectories, "
          f"{result.total_hops} hops, {result.frustrated} frustrated")  # fmt: skip
    print("state  active  electronic" + ("  transmitted  reflected" if outcomes else ""))
    for s in range(result.active.shape[1]):
        line = f"{s:>5}  {float(result.active[-1, s]):6.3f}  {float(result.electronic[-1, s]):10.3f}"
        if outcomes:
            line += f"  {outcomes[f'transmitted_{s}']:11.3f}  {outcomes[f'reflected_{s}']:9.3f}"
        print(line)
    print(f"{out_dir / 'populations.csv'}")
    return 0
