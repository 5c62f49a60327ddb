"""Path-integral molecular dynamics with i-PI, nearsight giving the forces in the same process.

    from nearsight.simulate.pimd import run_pimd
    result = run_pimd(atoms, "model.pt", n_beads=32, temperature_K=300, steps=20000, timestep_fs=0.25,
                      output_dir="pimd")
    result.kinetic_energy_per_atom()   # {"H": (K, σ_K), "O": ...}: centroid-virial K per atom, eV

The route: i-PI's ``ffdirect`` force field with a custom PES (:mod:`.ipi_driver`) that calls the
ASE calculator; i-PI runs in this process (no socket, no second process), inside ``output_dir``
because i-PI names its files relative to the working directory (``RESTART``, the ``EXIT`` file it
watches).  The files: ``input.xml`` (:mod:`.ipi_input`), ``init.extxyz``, ``nearsight_pes.py``,
``nearsight_driver.json``, ``pimd.json`` (the settings), i-PI's ``simulation.out`` (properties),
``simulation.pos_NN.extxyz`` (bead NN) or ``simulation.centroid.extxyz``, ``simulation.checkpoint``
and ``RESTART``, and ``ipi.log`` (i-PI's messages).  With a model *file* the input also runs
without Python glue: ``cd DIR && i-pi input.xml``.

Resuming: i-PI writes ``RESTART`` at the end and on SIGINT/SIGTERM (the run then raises
``KeyboardInterrupt``), ``simulation.checkpoint`` every ``checkpoint_stride`` steps; ``resume=True``
continues from ``RESTART`` up to ``steps`` in total, appending to the outputs (rows and frames
written twice after a kill are read once, the later kept).  ``steps`` is always the total.

Statistics: :func:`block_average` (mean of ``n_blocks`` consecutive block means; σ = their standard
deviation/√n_blocks, valid when a block is longer than the correlation time), after discarding the
first ``discard`` fraction as equilibration.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from ase import Atoms
from ase.calculators.calculator import BaseCalculator

from .._files import atomic_write
from .ipi_input import PREFIX, PIMDSettings
from .pimd_setup import SETTINGS_FILE, prepare_pimd, resolve_calculator

if TYPE_CHECKING:
    import torch


@dataclass
class PIMDResult:
    """i-PI's properties of a run (keys as i-PI names them, ``kinetic_cv(H)``; ``units`` per key)."""

    output_dir: Path
    settings: PIMDSettings
    species_counts: dict[str, int]
    properties: dict[str, np.ndarray]
    units: dict[str, str]
    pbc: tuple[bool, bool, bool] = (False, False, False)
    steps_run: int = 0  # steps run by this call (fewer than settings.steps when resumed)
    wall_time_s: float = 0.0
    model: str = ""
    extras: dict[str, np.ndarray] = field(default_factory=dict)  # name -> [frames, beads, ...]

    @property
    def step(self) -> np.ndarray:
        return self.properties["step"]

    @property
    def potential(self) -> np.ndarray:
        """Bead-averaged potential energy, eV."""
        return self.properties["potential"]

    @property
    def kinetic_cv(self) -> np.ndarray:
        """Centroid-virial kinetic energy of the system, eV."""
        return self.properties["kinetic_cv"]

    @property
    def temperature(self) -> np.ndarray:
        """i-PI's kinetic temperature of the ring polymer (it averages to T), K."""
        return self.properties["temperature"]

    def estimate(self, name: str, discard: float = 0.2, n_blocks: int = 20) -> tuple[float, float]:
        """Block-averaged mean and standard error of property ``name`` after the first ``discard``."""
        if name not in self.properties:
            raise KeyError(
                f"{name!r} is not among the properties of {self.output_dir}: {list(self.properties)}"
            )
        values = self.properties[name]
        return block_average(values[int(discard * len(values)) :], n_blocks)

    def kinetic_energy_per_atom(
        self, discard: float = 0.2, n_blocks: int = 20
    ) -> dict[str, tuple[float, float]]:
        """Centroid-virial kinetic energy per atom of each species, (mean, σ) in eV."""
        out = {}
        for symbol, count in self.species_counts.items():
            mean, sem = self.estimate(f"kinetic_cv({symbol})", discard, n_blocks)
            out[symbol] = (mean / count, sem / count)
        return out

    def trajectory(self, bead: int | None = None, discard: float = 0.0) -> list[Atoms]:
        """Frames of the bead trajectories (all beads, bead after bead, or bead ``bead``), or of the
        centroid, without the first ``discard`` fraction of each; positions in Å, the cell and pbc of
        the simulated structure (``info["step"]``: the MD step)."""
        from ase.io import read

        if self.settings.trajectory == "none":
            raise ValueError(f"{self.output_dir}: the run wrote no trajectory (trajectory='none')")
        if self.settings.trajectory == "centroid":
            files = [self.output_dir / f"{PREFIX}.centroid.extxyz"]
        else:
            files = sorted(
                self.output_dir.glob(f"{PREFIX}.pos_*.extxyz"), key=lambda p: int(p.stem.split("_")[-1])
            )
            if bead is not None:
                files = [files[bead]]
        frames = []
        for path in files:
            by_step: dict[int, Atoms] = {}
            for atoms in read(path, ":", format="extxyz"):
                match = re.search(r"Step:\s*(\d+)", str(atoms.info.get("ipi_comment", "")))
                atoms.pbc = self.pbc
                if not any(self.pbc):
                    atoms.cell = np.zeros((3, 3))  # i-PI's box around a molecule is not a cell
                step = int(match.group(1)) if match else len(by_step)
                atoms.info["step"] = step
                by_step[step] = atoms  # a frame written twice (resumed after a kill): the later wins
            ordered = [by_step[k] for k in sorted(by_step)]
            frames += ordered[int(discard * len(ordered)) :]
        return frames


def block_average(values: np.ndarray, n_blocks: int = 20) -> tuple[float, float]:
    """Mean and standard error from ``n_blocks`` block means (the oldest remainder dropped).

    σ = std(block means, ddof=1)/√n_blocks: an honest error bar when each block is longer than the
    correlation time of ``values`` (Flyvbjerg & Petersen, J. Chem. Phys. 91, 461 (1989)).
    """
    values = np.asarray(values, dtype=np.float64)
    if n_blocks < 2 or len(values) < n_blocks:
        raise ValueError(
            f"block averaging needs at least n_blocks = {n_blocks} >= 2 values, got {len(values)}"
        )
    size = len(values) // n_blocks
    blocks = values[len(values) - size * n_blocks :].reshape(n_blocks, size).mean(axis=1)
    return float(blocks.mean()), float(blocks.std(ddof=1) / np.sqrt(n_blocks))


def read_properties(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Columns of an i-PI properties file by name (``kinetic_cv(H)``) and their units.

    Rows with the wrong number of columns (a line cut by a kill) are skipped; of rows with the same
    step (written twice when a run was resumed after a kill) the last is kept.
    """
    header = re.compile(r"#\s*(?:column|cols\.)\s+(\d+)(?:\s*-\s*(\d+))?\s+-->\s+(\S+)")
    columns: list[tuple[int, int, str, str]] = []
    rows = []
    path = Path(path)
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            match = header.match(line)
            if match:
                first, last, token = (
                    int(match.group(1)),
                    int(match.group(2) or match.group(1)),
                    match.group(3),
                )
                unit = re.search(r"\{([^}]*)\}", token)
                columns.append(
                    (first - 1, last, re.sub(r"\{[^}]*\}", "", token), unit.group(1) if unit else "")
                )
        elif line.strip():
            rows.append(line.split())
    if not columns:
        raise ValueError(f"{path}: no i-PI property header")
    width = max(last for _, last, _, _ in columns)
    try:
        data = np.array([[float(v) for v in row] for row in rows if len(row) == width], dtype=np.float64)
    except ValueError as exc:
        raise ValueError(f"{path}: unreadable data row ({exc})") from exc
    data = data.reshape(-1, width)
    step_col = next((first for first, _, name, _ in columns if name == "step"), None)
    if step_col is not None and len(data):
        steps = data[:, step_col]
        _, last = np.unique(steps[::-1], return_index=True)  # last occurrence of each step
        data = data[np.sort(len(steps) - 1 - last)]
    values = {name: data[:, a:b].squeeze(axis=1) if b - a == 1 else data[:, a:b] for a, b, name, _ in columns}
    return values, {name: unit for _, _, name, unit in columns}


@contextlib.contextmanager
def _inside(directory: Path) -> Iterator[None]:
    """Run in ``directory`` (i-PI resolves RESTART, EXIT and its file names against it)."""
    before = os.getcwd()
    os.chdir(directory)
    try:
        yield
    finally:
        os.chdir(before)


def _run_ipi(directory: Path, xml: str, calculator: BaseCalculator) -> tuple[int, float]:
    """Run the i-PI input ``xml`` in ``directory`` with ``calculator`` bound; (steps run, wall s).

    Afterwards i-PI's exit routine has written RESTART and closed the outputs, its signal handlers
    are restored and its monitor thread has ended, also when the force evaluation raised (the error
    is raised again with the step in front).
    """
    from ipi.engine.simulation import Simulation
    from ipi.utils.softexit import softexit

    from .ipi_driver import FORCEFIELD_NAME

    simulation, start, first, error = None, time.perf_counter(), 0, None
    with _inside(directory), open("ipi.log", "a") as log, contextlib.redirect_stdout(log):
        try:
            simulation = Simulation.load_from_xml(io.StringIO(xml))
            first = simulation.step
            simulation.fflist[FORCEFIELD_NAME].driver.bind(calculator)
            simulation.run()
        except (ValueError, TypeError, RuntimeError, ArithmeticError, KeyError) as exc:  # model or i-PI
            where = "setting up i-PI" if simulation is None else f"step {simulation.step}"
            error = copy.copy(exc)
            error.args = (f"PIMD in {directory}, {where}: {exc}",)
            error.__cause__ = exc
        finally:
            killed, monitor = softexit._killed, softexit._thread
            if simulation is not None and softexit.flist:
                status = "success" if error is None else "bad"
                softexit.cleanup(status, " @nearsight: run finished.")  # writes RESTART, closes the outputs
            if simulation is not None:
                simulation.stop()
            softexit.reset()  # i-PI's exit machinery is a module global: leave it as found
            if monitor is not None:
                monitor.join(timeout=5.0)
    if error is not None:
        raise error
    done = 0 if simulation is None else simulation.step - first
    if killed:
        try:
            saved = f"RESTART holds step {_restart_steps(directory / 'RESTART')[0]}"
        except (OSError, ValueError):
            saved = "no complete RESTART"
        raise KeyboardInterrupt(
            f"PIMD in {directory} stopped by a signal after {done} steps; {saved}, resume=True continues"
        )
    return done, time.perf_counter() - start


IPI_DEFAULT_TOTAL_STEPS = 1000  # i-PI leaves total_steps out of a RESTART file when it has this value


def _restart_steps(restart: Path) -> tuple[int, int]:
    """(step reached, total_steps) recorded in a complete i-PI RESTART file, else ValueError."""
    text = restart.read_text()
    step, total = re.search(r"<step>\s*(\d+)\s*</step>", text), re.search(r"<total_steps>\s*(\d+)", text)
    if step is None or not text.rstrip().endswith("</simulation>"):
        raise ValueError(f"{restart}: not a complete i-PI RESTART file")
    return int(step.group(1)), IPI_DEFAULT_TOTAL_STEPS if total is None else int(total.group(1))


def _with_total_steps(xml: str, steps: int) -> str:
    """An i-PI input or RESTART text asking for ``steps`` steps in total (the element is replaced, or
    added where i-PI left its default out)."""
    element = f"<total_steps>{steps}</total_steps>"
    replaced, n = re.subn(r"<total_steps>\s*\d+\s*</total_steps>", element, xml)
    if n:
        return replaced
    return re.sub(r"(<simulation\b[^>]*>)", lambda m: m.group(1) + "\n   " + element, xml, count=1)


def latest_restart(directory: Path) -> tuple[Path, int]:
    """The complete restart file of ``directory`` with the most steps, and that step: ``RESTART``,
    i-PI's backups of earlier ones (``#RESTART#N#``) or the periodic ``simulation.checkpoint``
    (i-PI does not write them atomically: a kill while writing leaves a truncated one)."""
    found = []
    for path in [directory / "RESTART", *directory.glob("#RESTART#*#"), directory / f"{PREFIX}.checkpoint"]:
        try:
            found.append((_restart_steps(path)[0], path))
        except (OSError, ValueError):
            continue
    if not found:
        raise ValueError(f"resume=True: no i-PI RESTART in {directory} (no run to continue)")
    step, path = max(found, key=lambda item: item[0])
    return path, step


def read_pimd(output_dir: str | os.PathLike) -> PIMDResult:
    """The result of the run in ``output_dir`` (finished, interrupted or still running)."""
    directory = Path(output_dir)
    try:
        meta = json.loads((directory / SETTINGS_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{directory}: no nearsight PIMD run ({SETTINGS_FILE}: {exc})") from exc
    settings = PIMDSettings(**{**meta["settings"], "estimators": tuple(meta["settings"]["estimators"])})
    values, units = read_properties(directory / f"{PREFIX}.out")
    extras = {}
    for name in meta.get("extras", []):
        extras[name] = _read_extras(directory, name)
    return PIMDResult(
        output_dir=directory,
        settings=settings,
        species_counts=meta["species_counts"],
        properties=values,
        units=units,
        pbc=tuple(meta["pbc"]),
        model=meta.get("model", ""),
        extras=extras,
    )


def _read_extras(directory: Path, name: str) -> np.ndarray:
    """Model extras written per bead by i-PI, as ``[frames, beads, ...]`` (units of the calculator)."""
    from ipi.scripting.parsing import read_trajectory

    files = sorted(directory.glob(f"{PREFIX}.{name}_*"), key=lambda p: int(p.name.split("_")[-1]))
    per_bead = []
    for path in files:
        data = read_trajectory(str(path), format="extras")
        steps = np.asarray(data["step"])
        _, last = np.unique(steps[::-1], return_index=True)
        per_bead.append(np.asarray(data[name], dtype=np.float64)[np.sort(len(steps) - 1 - last)])
    return np.stack(per_bead, axis=1) if per_bead else np.empty((0,))


def run_pimd(
    atoms: Atoms,
    calc_or_model: str | os.PathLike | torch.nn.Module | BaseCalculator,
    *,
    n_beads: int,
    temperature_K: float,
    steps: int,
    timestep_fs: float,
    output_dir: str | os.PathLike,
    thermostat: str = "pile_l",
    tau_fs: float = 100.0,
    pile_lambda: float = 1.0,
    seed: int = 0,
    stride: int = 1,
    trajectory: str = "beads",
    trajectory_stride: int = 10,
    checkpoint_stride: int = 1000,
    estimators: tuple[str, ...] = (),
    fixcom: bool = True,
    resume: bool = False,
    overwrite: bool = False,
    write_input_only: bool = False,
    dtype: str = "float64",
    device: str = "cpu",
) -> PIMDResult | Path:
    """NVT path-integral MD of ``atoms`` with ``n_beads`` beads at ``temperature_K`` (see the module
    docstring and :class:`~nearsight.simulate.ipi_input.PIMDSettings` for the options).

    ``calc_or_model``: a model file, a model (``nn.Module``) or any ASE calculator.  ``estimators``:
    further i-PI properties (``"kinetic_td"``, ``"r_gyration(H)"``, ``"pressure_cv"``) and the
    model's ``"dipole"`` / ``"charges"``; one the model or structure cannot give raises a ValueError
    naming it and the model.  Returns the :class:`PIMDResult`, or the input file's path with
    ``write_input_only``.
    """
    settings = PIMDSettings(
        n_beads=n_beads, temperature_K=temperature_K, steps=steps, timestep_fs=timestep_fs,
        thermostat=thermostat, tau_fs=tau_fs, pile_lambda=pile_lambda, seed=seed, stride=stride,
        trajectory=trajectory, trajectory_stride=trajectory_stride, checkpoint_stride=checkpoint_stride,
        estimators=tuple(estimators), fixcom=fixcom,
    )  # fmt: skip
    directory = Path(output_dir)
    calculator, model_path, model_name = resolve_calculator(calc_or_model, dtype=dtype, device=device)
    if resume:
        restart, done = latest_restart(directory)
        recorded = json.loads((directory / "nearsight_driver.json").read_text()).get("model")
        if model_path is not None and recorded is not None and Path(recorded) != Path(model_path).resolve():
            raise ValueError(f"resume=True: {directory} was run with model {recorded}, not {model_path}")
        xml = _with_total_steps(restart.read_text(), steps)
        meta = json.loads((directory / SETTINGS_FILE).read_text())
        for name in ("n_beads", "temperature_K", "timestep_fs", "thermostat", "tau_fs"):
            if meta["settings"][name] != getattr(settings, name):
                raise ValueError(
                    f"resume=True: the run in {directory} has {name}={meta['settings'][name]!r}, not "
                    f"{getattr(settings, name)!r} (a resumed run keeps its settings; only steps changes)"
                )
        meta["settings"]["steps"] = steps
        atomic_write(directory / SETTINGS_FILE, lambda fh: json.dump(meta, fh, indent=1))
        if done >= steps:
            return read_pimd(directory)
    else:
        input_path = prepare_pimd(
            atoms, calculator, directory, settings, model_path=model_path, model_name=model_name,
            overwrite=overwrite, dtype=dtype, device=device,
        )  # fmt: skip
        if write_input_only:
            return input_path
        xml = input_path.read_text()
    ran, wall = _run_ipi(directory, xml, calculator)
    result = read_pimd(directory)
    result.steps_run, result.wall_time_s = ran, wall
    return result
