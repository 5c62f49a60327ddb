"""What the umbrella and metadynamics drivers share: Langevin MD settings, velocities, run manifests.

A run directory holds ``run.json``, the parameters it was started with.  A rerun with
``resume=True`` must pass the same parameters (a ``ValueError`` names the first that differs);
without ``resume`` a directory that already holds a run is refused, so nothing is overwritten.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms, units
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

from .._files import atomic_write

try:
    from ase.md.velocitydistribution import thermalize_momenta
except ImportError:  # ASE < 3.29
    thermalize_momenta = None

MANIFEST = "run.json"


def check_md(steps: int, timestep_fs: float, temperature_K: float, friction_per_fs: float) -> None:
    """ValueError naming the first MD setting out of range."""
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"steps = {steps!r} must be an integer >= 1")
    for name, value in (
        ("timestep_fs", timestep_fs),
        ("temperature_K", temperature_K),
        ("friction_per_fs", friction_per_fs),
    ):
        if not (isinstance(value, (int, float, np.floating)) and np.isfinite(value) and value > 0):
            raise ValueError(f"{name} = {value!r} must be a positive number")


def langevin(
    atoms: Atoms, timestep_fs: float, temperature_K: float, friction_per_fs: float, rng: np.random.Generator
) -> Langevin:
    """ASE's Langevin integrator (Vanden-Eijnden & Ciccotti) sampling the canonical ensemble.

    ``fixcm=False``: the thermostat acts on every degree of freedom, as a bias or an external
    potential (the toy surfaces) breaks translation invariance anyway.
    """
    return Langevin(
        atoms,
        timestep=timestep_fs * units.fs,
        temperature_K=temperature_K,
        friction=friction_per_fs / units.fs,
        fixcm=False,
        rng=rng,
    )


def draw_velocities(atoms: Atoms, temperature_K: float, rng: np.random.Generator) -> None:
    """Maxwell-Boltzmann momenta at ``temperature_K`` (no centre-of-mass removal: see :func:`langevin`)."""
    if thermalize_momenta is not None:
        thermalize_momenta(atoms, temperature_K, rng=rng)
    else:  # ASE < 3.29
        MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_K, rng=rng)


def structure_fingerprint(atoms: Atoms) -> str:
    """sha256 of the numbers, positions, cell and pbc: the same start structure on a resume."""
    h = hashlib.sha256()
    for array in (atoms.numbers, atoms.positions, atoms.cell.array, atoms.pbc):
        h.update(np.ascontiguousarray(array).tobytes())
    return h.hexdigest()[:16]


def start_run(output_dir: Path, parameters: dict[str, Any], resume: bool) -> None:
    """Create ``output_dir`` with its manifest, or check the manifest of the run being resumed."""
    manifest = output_dir / MANIFEST
    parameters = json.loads(json.dumps(parameters))  # the form it has in the file
    if manifest.exists():
        if not resume:
            raise ValueError(
                f"{output_dir} already holds a run ({manifest}); pass resume=True (--resume) to continue "
                "it, or choose another output directory"
            )
        saved = json.loads(manifest.read_text())
        for key in sorted(set(saved) | set(parameters)):
            if saved.get(key) != parameters.get(key):
                raise ValueError(
                    f"{manifest}: cannot resume, {key} was {saved.get(key)!r} and is now "
                    f"{parameters.get(key)!r}"
                )
        return
    atomic_write(manifest, lambda fh: json.dump(parameters, fh, indent=1))


def rng_state(rng: np.random.Generator) -> str:
    """The generator's exact state as JSON (restored by :func:`set_rng_state`)."""
    return json.dumps(rng.bit_generator.state)


def set_rng_state(rng: np.random.Generator, state: str) -> None:
    rng.bit_generator.state = json.loads(state)
