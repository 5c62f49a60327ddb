"""The i-PI input of a path-integral MD run, and the check that the model can give what it asks for.

:func:`pimd_input_xml` builds the XML with :mod:`xml.etree.ElementTree` (every text and attribute
escaped; i-PI reads it with :mod:`xml.sax`, which unescapes).  The run is NVT PIMD (Parrinello &
Rahman 1984; i-PI: Kapil et al., Comput. Phys. Commun. 236, 214 (2019)) with P beads per atom,

    H_P = Σ_b [ Σ_i p_ib²/(2 m_i) + ½ m_i ω_P² (q_ib − q_i,b+1)² ] + Σ_b V(q_b),   ω_P = P k_B T/ħ,

sampled at P·T, thermostatted in the normal modes of the free ring polymer by PILE (Ceriotti et al.,
J. Chem. Phys. 133, 124104 (2010)): each internal mode k gets a Langevin friction
γ_k = 2 λ ω_k (λ = ``pile_lambda``, 1 = critical damping) and the centroid γ_0 = 1/τ, locally
(``pile_l``) or by a global velocity rescaling (``pile_g``).

Output properties (``simulation.out``, eV, K, fs): ``step``, ``time``, ``conserved``,
``temperature``, ``kinetic_md``, ``potential`` (bead average), ``kinetic_cv`` (the centroid-virial
quantum kinetic energy) and ``kinetic_cv(X)`` for each species X (the sum over the atoms of X),

    K_cv = (3N/2) k_B T − (1/2P) Σ_b (q_b − q_c)·F_b,      q_c = (1/P) Σ_b q_b,

plus any further i-PI property named in ``estimators`` (``kinetic_td``, ``r_gyration(H)``,
``pressure_cv``, ...).  ``dipole`` and ``charges`` are not i-PI properties here: they are the
model's own outputs, written per bead as extras (``simulation.dipole_NN``, e·Å).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.calculators.calculator import BaseCalculator

from .ipi_driver import CONFIG_FILE, EXTRAS, FORCEFIELD_NAME, PES_FILE, TEMPLATE_FILE

PREFIX = "simulation"
THERMOSTATS = ("pile_l", "pile_g", "svr", "langevin")
TRAJECTORIES = ("beads", "centroid", "none")
# i-PI properties that read the force field's virial W, or the cell volume: a system that is not
# periodic in all three directions (or a model without stress) cannot give them
VIRIAL_PROPERTIES = frozenset(
    "pressure_cv stress_cv virial_cv pressure_md stress_md virial_md pressure_tdsc vir_tdsc "
    "vir_component vir_component_raw".split()
)
VOLUME_PROPERTIES = frozenset("kstress_cv kstress_md kstress_tdsc density volume".split())
# electric-field driven dynamics only (i-PI's "dipole" means the eda dipole; ours is the model's)
UNSUPPORTED = frozenset("Efield Eenvelope interaction_energy".split())
# user units of i-PI's dimensions (else atomic units)
UNITS = {
    "energy": "electronvolt",
    "temperature": "kelvin",
    "time": "femtosecond",
    "length": "angstrom",
    "pressure": "ev/ang3",
    "force": "ev/ang",
}
_ESTIMATOR = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(?:\(([A-Za-z0-9_.;= ]*)\))?$")


@dataclass(frozen=True)
class PIMDSettings:
    """What the i-PI input asks for; times in fs, temperature in K."""

    n_beads: int
    temperature_K: float
    steps: int  # total number of steps (a resumed run continues up to it)
    timestep_fs: float
    thermostat: str = "pile_l"
    tau_fs: float = 100.0  # centroid thermostat time constant
    pile_lambda: float = 1.0  # internal-mode friction relative to critical damping
    seed: int = 0
    stride: int = 1  # properties every `stride` steps
    trajectory: str = "beads"  # positions of every bead, of the centroid, or none
    trajectory_stride: int = 10
    checkpoint_stride: int = 1000
    estimators: tuple[str, ...] = ()  # further i-PI properties, and/or "dipole", "charges"
    fixcom: bool = True  # remove the centre-of-mass momentum

    def __post_init__(self) -> None:
        if self.n_beads < 1 or self.steps < 1 or self.stride < 1 or self.trajectory_stride < 1:
            raise ValueError(
                "need n_beads, steps, stride, trajectory_stride >= 1; got "
                f"{self.n_beads}, {self.steps}, {self.stride}, {self.trajectory_stride}"
            )
        if not (self.temperature_K > 0 and self.timestep_fs > 0 and self.tau_fs > 0 and self.pile_lambda > 0):
            raise ValueError(
                "need temperature_K, timestep_fs, tau_fs, pile_lambda > 0; got "
                f"{self.temperature_K}, {self.timestep_fs}, {self.tau_fs}, {self.pile_lambda}"
            )
        if self.thermostat not in THERMOSTATS:
            raise ValueError(f"thermostat {self.thermostat!r}: choose one of {list(THERMOSTATS)}")
        if self.trajectory not in TRAJECTORIES:
            raise ValueError(f"trajectory {self.trajectory!r}: choose one of {list(TRAJECTORIES)}")
        if self.checkpoint_stride < 1 or self.seed < 0:
            raise ValueError(
                f"need checkpoint_stride >= 1 and seed >= 0, got {self.checkpoint_stride}, {self.seed}"
            )


def split_estimators(estimators: tuple[str, ...]) -> tuple[list[tuple[str, str]], list[str]]:
    """i-PI properties as (name, argument) pairs, and model extras; unknown names raise ValueError."""
    from ipi.engine.properties import Properties

    known = Properties().property_dict
    properties, extras = [], []
    for text in estimators:
        match = _ESTIMATOR.match(str(text).strip())
        if match is None:
            raise ValueError(
                f"estimator {text!r}: write an i-PI property as name or name(argument), e.g. kinetic_td(H)"
            )
        name, argument = match.group(1), match.group(2) or ""
        if name in EXTRAS:
            if argument:
                raise ValueError(f"estimator {text!r}: {name} takes no argument")
            extras.append(name)
        elif name in UNSUPPORTED or name not in known:
            raise ValueError(
                f"estimator {text!r}: not an i-PI property for NVT PIMD (known: "
                f"{', '.join(sorted(set(known) - UNSUPPORTED))}; and the model outputs {', '.join(EXTRAS)})"
            )
        else:
            properties.append((name, argument))
    return properties, sorted(set(extras))


def check_estimators(
    estimators: tuple[str, ...], atoms: Atoms, calculator: BaseCalculator, model_name: str
) -> tuple[list[tuple[str, str]], list[str], bool]:
    """(i-PI properties, model extras, virial needed) of ``estimators``, or a ValueError naming the
    property and the model when the model (or a system that is not periodic) cannot give it.

    The calculator is asked once, on ``atoms``, for each quantity an estimator needs: ``stress``
    for the virial properties, ``dipole`` / ``charges`` for those extras.
    """
    from ase.calculators.calculator import PropertyNotImplementedError

    properties, extras = split_estimators(estimators)
    periodic = bool(np.all(atoms.pbc))
    needs_cell = [n for n, _ in properties if n in VIRIAL_PROPERTIES | VOLUME_PROPERTIES]
    if needs_cell and not periodic:
        raise ValueError(
            f"estimator {needs_cell[0]!r} needs a cell periodic in all three directions (a virial or a "
            f"volume), but the structure has pbc={atoms.pbc.tolist()}; model {model_name}"
        )
    needs_virial = any(n in VIRIAL_PROPERTIES for n, _ in properties)
    probe = atoms.copy()
    probe.calc = calculator
    wanted = (["stress"] if needs_virial else []) + extras
    for quantity in wanted:
        try:
            value = probe.calc.get_property(quantity, probe)
        except (PropertyNotImplementedError, NotImplementedError) as exc:
            what = next((n for n, _ in properties if n in VIRIAL_PROPERTIES), quantity)
            raise ValueError(
                f"estimator {what!r} needs the model's {quantity}, which model {model_name} does not "
                f"provide ({exc})"
            ) from exc
        if value is None:
            raise ValueError(f"estimator {quantity!r}: model {model_name} returned no {quantity}")
    return properties, extras, needs_virial


def _units(name: str) -> str:
    """``{unit}`` for i-PI's property ``name`` (empty: atomic units or a pure number)."""
    from ipi.engine.properties import Properties

    dimension = Properties().property_dict[name].get("dimension", "undefined")
    return f"{{{UNITS[dimension]}}}" if dimension in UNITS else ""


def property_list(species: list[str], properties: list[tuple[str, str]]) -> str:
    """i-PI's property list: the defaults, ``kinetic_cv(X)`` per species, then ``properties``."""
    items = [
        "step",
        "time{femtosecond}",
        "conserved{electronvolt}",
        "temperature{kelvin}",
        "kinetic_md{electronvolt}",
        "potential{electronvolt}",
        "kinetic_cv{electronvolt}",
    ]
    items += [f"kinetic_cv{{electronvolt}}({s})" for s in species]
    for name, argument in properties:
        item = f"{name}{_units(name)}" + (f"({argument})" if argument else "")
        if item not in items:
            items.append(item)
    return "[ " + ", ".join(items) + " ]"


def _sub(parent: ET.Element, tag: str, text: object = None, **attrib: object) -> ET.Element:
    element = ET.SubElement(parent, tag, {k: str(v) for k, v in attrib.items()})
    if text is not None:
        element.text = f" {text} "
    return element


def _numbers(values: np.ndarray) -> str:
    return "[" + ", ".join(repr(float(v)) for v in np.asarray(values, dtype=np.float64).ravel()) + "]"


def pimd_input_xml(
    atoms: Atoms,
    settings: PIMDSettings,
    properties: list[tuple[str, str]],
    extras: list[str],
    box_A: np.ndarray,
) -> str:
    """The i-PI input of ``settings`` for ``atoms`` (written to ``TEMPLATE_FILE`` beside it).

    ``box_A``: the 3×3 cell i-PI gets (rows = lattice vectors, Å; lower triangular): the cell of a
    periodic structure, a box around a molecule (unused by the forces, i-PI needs a volume).
    """
    s = settings
    species = list(dict.fromkeys(atoms.get_chemical_symbols()))
    root = ET.Element("simulation", {"verbosity": "low", "threading": "False", "safe_stride": str(100)})
    ff = _sub(root, "ffdirect", name=FORCEFIELD_NAME, pbc="False", threaded="False")
    _sub(ff, "pes", "custom")
    _sub(ff, "pes_path", PES_FILE)
    _sub(ff, "parameters", f"{{config: {CONFIG_FILE}}}")

    flush = max(1, 100 // s.stride)
    output = _sub(root, "output", prefix=PREFIX)
    _sub(
        output, "properties", property_list(species, properties), filename="out", stride=s.stride, flush=flush
    )
    traj = {"beads": "positions{ase}", "centroid": "x_centroid{ase}"}.get(s.trajectory)
    if traj is not None:
        name = "pos" if s.trajectory == "beads" else "centroid"
        _sub(
            output,
            "trajectory",
            traj,
            filename=name,
            stride=s.trajectory_stride,
            format="ase",
            cell_units="ase",
        )
    for extra in extras:
        _sub(output, "trajectory", "extras", filename=extra, stride=s.stride, extra_type=extra)
    _sub(output, "checkpoint", filename="checkpoint", stride=s.checkpoint_stride, overwrite="True")

    _sub(root, "total_steps", s.steps)
    _sub(_sub(root, "prng"), "seed", s.seed)
    system = _sub(root, "system")
    init = _sub(system, "initialize", nbeads=s.n_beads)
    _sub(init, "file", TEMPLATE_FILE, mode="ase")
    _sub(init, "masses", _numbers(atoms.get_masses()), mode="manual", units="dalton")
    _sub(init, "cell", _numbers(np.asarray(box_A).T), mode="manual", units="angstrom")  # h: columns
    _sub(init, "velocities", s.temperature_K, mode="thermal", units="kelvin")
    _sub(_sub(system, "forces"), "force", forcefield=FORCEFIELD_NAME)
    _sub(_sub(system, "ensemble"), "temperature", s.temperature_K, units="kelvin")
    motion = _sub(system, "motion", mode="dynamics")
    _sub(motion, "fixcom", s.fixcom)
    dynamics = _sub(motion, "dynamics", mode="nvt")
    _sub(dynamics, "timestep", s.timestep_fs, units="femtosecond")
    thermostat = _sub(dynamics, "thermostat", mode=s.thermostat)
    _sub(thermostat, "tau", s.tau_fs, units="femtosecond")
    if s.thermostat.startswith("pile"):
        _sub(thermostat, "pile_lambda", s.pile_lambda)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"
