"""An ASE calculator as an i-PI force provider: the PES class of an ``ffdirect`` force field.

i-PI (``ipi`` 3.3.1) evaluates a Python "PES" inside its own process when the input has

.. code-block:: xml

    <ffdirect name="nearsight">
      <pes>custom</pes> <pes_path>nearsight_pes.py</pes_path>
      <parameters>{config: nearsight_driver.json}</parameters>
    </ffdirect>

``nearsight_pes.py`` (:data:`PES_SOURCE`, written beside the input) names :class:`IPIDriver`;
i-PI calls ``driver(cell, pos)`` once per bead with the cell matrix h (lattice vectors as
*columns*) and the positions ``[n, 3]``, both in bohr, and expects back, in atomic units,

    V (hartree),   F = -∂V/∂q (hartree/bohr, ``[n, 3]``),   W (hartree, 3×3),   extras (JSON text).

Units: q[Å] = q[bohr]·a₀, V[Ha] = V[eV]/E_h, F[Ha/bohr] = F[eV/Å]·a₀/E_h, with i-PI's own
constants (:mod:`ipi.utils.units`, 8 digits: they differ from :mod:`ase.units` by ~1e-7 relative).
i-PI converts the start structure (Å) and its outputs (eV, Å) with them, so converting back with
the same numbers makes the round trip exact: the model sees the positions of ``init.extxyz`` to the
last digit, and the ``potential`` i-PI prints in eV is the model's energy (ASE's constants would
shift both by ~1e-7, e.g. 4e-4 eV on a 4000 eV cell).

The virial.  i-PI's convention is W = −σ·Ω (σ the stress, ASE sign, Ω the volume), so that the
pressure estimators read P = tr(W + kinetic stress)/(3Ω).  W enters only the pressure, stress and
virial properties (``pressure_cv``, ``stress_cv``, ``virial_cv``, ``*_md``, ``*_tdsc``,
``vir_component``) and barostats.  The centroid-virial kinetic energy does **not** use it: i-PI
computes K_cv = 3N k_B T/2 − (1/2P) Σ_b (q_b − q_c)·F_b from the bead positions and forces alone.
So a system without a stress (a molecule, a partly periodic slab, a model without stress) gets
W = 0 (a 3×3 zero matrix), and :func:`nearsight.simulate.ipi_input.check_estimators` refuses the
properties above for it.  (i-PI 3.3.1's own ASE driver, ``ipi/pes/_ase.py``, crashes instead: with
``has_stress=False`` it builds ``np.zeros(9)`` and then rejects it for not being 3×3.)

The driver reads ``nearsight_driver.json`` (:func:`write_driver_config`): the template structure
(species, masses, pbc, charge), the model file (or none: then the calculator is bound in-process
by :func:`nearsight.simulate.pimd.run_pimd`), ``dtype``, ``device``, whether to return the
virial, and which extra outputs (``dipole``, ``charges``) to pass to i-PI as extras.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.calculators.calculator import BaseCalculator, PropertyNotImplementedError, all_changes
from ase.io import read
from ase.stress import voigt_6_to_full_3x3_stress
from ipi.pes.dummy import Dummy_driver
from ipi.utils.units import unit_to_internal

from .._files import atomic_write

PES_FILE = "nearsight_pes.py"
CONFIG_FILE = "nearsight_driver.json"
TEMPLATE_FILE = "init.extxyz"
FORCEFIELD_NAME = "nearsight"
EXTRAS = ("dipole", "charges")  # calculator results that can be passed on as i-PI extras

PES_SOURCE = '''"""i-PI PES module written by nearsight: the force field is nearsight.simulate.ipi_driver."""

from nearsight.simulate.ipi_driver import IPIDriver

__DRIVER_NAME__ = "nearsight"
__DRIVER_CLASS__ = "IPIDriver"
'''

_ENERGY = unit_to_internal("energy", "electronvolt", 1.0)  # eV -> hartree
_BOHR = 1.0 / unit_to_internal("length", "angstrom", 1.0)  # bohr -> Å
_FORCE = _ENERGY * _BOHR  # eV/Å -> hartree/bohr (i-PI's "ev/ang" differs by 1e-7: F = -∂V/∂q holds)


def write_driver_config(
    directory: str | os.PathLike,
    atoms: Atoms,
    *,
    model: str | os.PathLike | None,
    dtype: str = "float64",
    device: str = "cpu",
    virial: bool = False,
    extras: tuple[str, ...] = (),
) -> Path:
    """Write ``PES_FILE``, ``TEMPLATE_FILE`` and ``CONFIG_FILE`` into ``directory`` (atomically).

    ``model``: a model file (made absolute, so the input runs from anywhere) or None (a calculator
    object bound in-process).  Returns the path of the configuration file.
    """
    directory = Path(directory)
    unknown = sorted(set(extras) - set(EXTRAS))
    if unknown:
        raise ValueError(f"extras {unknown}: the driver can pass on only {list(EXTRAS)}")
    template = atoms.copy()
    template.calc = None
    for key in ("momenta", "forces"):
        template.arrays.pop(key, None)
    atomic_write(directory / TEMPLATE_FILE, lambda fh: template.write(fh, format="extxyz"))
    atomic_write(directory / PES_FILE, lambda fh: fh.write(PES_SOURCE))
    config = {
        "template": TEMPLATE_FILE,
        "model": None if model is None else str(Path(model).resolve()),
        "dtype": dtype,
        "device": device,
        "virial": bool(virial),
        "extras": list(extras),
    }
    return atomic_write(directory / CONFIG_FILE, lambda fh: json.dump(config, fh, indent=1))


class IPIDriver(Dummy_driver):
    """i-PI PES that evaluates an ASE calculator (a :class:`~nearsight.NearsightCalculator` by default).

    ``config``: path of the JSON written by :func:`write_driver_config` (relative to the directory
    i-PI runs in).  ``calculator`` is None until :meth:`bind` or the first evaluation, which then
    loads the model file named in the configuration.
    """

    def __init__(self, config: str = CONFIG_FILE, *args, **kwargs) -> None:
        self.config_path = Path(str(config))
        self.calculator = None
        self.evaluations = 0
        super().__init__(*args, **kwargs)  # calls check_parameters

    def check_parameters(self) -> None:
        """Read the configuration and the template structure (i-PI calls this on construction)."""
        try:
            config = json.loads(self.config_path.read_text())
            base = self.config_path.parent
            self.template = read(base / config["template"], format="extxyz")
        except (OSError, ValueError, KeyError) as exc:
            raise ValueError(
                f"{self.config_path}: not a nearsight i-PI driver configuration ({exc})"
            ) from exc
        self.template.calc = None
        self.model = config.get("model")
        self.dtype = config.get("dtype", "float64")
        self.device = config.get("device", "cpu")
        self.virial = bool(config.get("virial", False))
        self.extras = tuple(config.get("extras", ()))
        self.periodic = bool(np.all(self.template.pbc))
        self._atoms = self.template.copy()

    def bind(self, calculator: BaseCalculator) -> None:
        """Use ``calculator`` (any ASE calculator) for the forces."""
        self.calculator = calculator

    def _calculator(self) -> BaseCalculator:
        if self.calculator is None:
            if not self.model:
                raise ValueError(
                    f"{self.config_path} names no model file: this input was written for an in-process run "
                    "with a calculator object (nearsight.simulate.pimd.run_pimd); give a model file to run "
                    "it with the i-pi command"
                )
            from ..calculator import NearsightCalculator

            self.calculator = NearsightCalculator(self.model, dtype=self.dtype, device=self.device)
        return self.calculator

    def structure(self, cell: np.ndarray, pos: np.ndarray) -> Atoms:
        """The template with i-PI's positions and (if periodic) cell, in Å (one Atoms object, reused)."""
        atoms = self._atoms
        atoms.positions = np.asarray(pos, dtype=np.float64).reshape(-1, 3) * _BOHR
        if atoms.pbc.any():
            atoms.cell = np.asarray(cell, dtype=np.float64).T * _BOHR
        return atoms

    def compute_structure(
        self, cell: np.ndarray, pos: np.ndarray
    ) -> tuple[float, np.ndarray, np.ndarray, str]:
        """(V, F, W, extras) of one bead in atomic units; see the module docstring.

        Every call is a new structure, so the calculator's ``calculate`` is called directly (ASE's
        change detection, which compares every array, would only cost time).
        """
        atoms = self.structure(cell, pos)
        calculator = self._calculator()
        stress = self.virial and self.periodic
        wanted = ["energy", "forces"] + (["stress"] if stress else []) + list(self.extras)
        calculator.calculate(atoms, wanted, all_changes)
        results = calculator.results
        missing = [name for name in wanted if name not in results]
        if missing:
            raise PropertyNotImplementedError(
                f"{type(calculator).__name__} returned no {', '.join(missing)} for the i-PI driver"
            )
        virial = np.zeros((3, 3))
        if stress:
            sigma = np.asarray(results["stress"], dtype=np.float64)  # eV/Å³, ASE sign
            sigma = voigt_6_to_full_3x3_stress(sigma) if sigma.shape == (6,) else sigma.reshape(3, 3)
            virial = -sigma * atoms.get_volume() * _ENERGY
        extras = {name: np.asarray(results[name], dtype=np.float64).tolist() for name in self.extras}
        self.evaluations += 1
        energy = float(results["energy"]) * _ENERGY
        forces = np.asarray(results["forces"], dtype=np.float64) * _FORCE
        return energy, forces, virial, json.dumps(extras) if extras else ""
