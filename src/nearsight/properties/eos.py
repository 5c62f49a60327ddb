"""Equation of state: E(V) of a crystal scaled isotropically, fitted for V0, E0, B and B'.

The input cell h is scaled by s_k = 1 − ε … 1 + ε (``strain`` = ε, the largest linear strain, in
``n_points`` equal steps), so V_k = s_k³ V; with ``relax_internal`` the positions are relaxed at each
fixed cell (the cell shape is kept: for a non-cubic crystal this is E along the isotropic path). The
energies are fitted by ASE's :class:`~ase.eos.EquationOfState`; the default is the third-order
Birch-Murnaghan form (Birch, Phys. Rev. 71, 809 (1947); as written in PRB 70, 224107, Eq. 3):

    E(V) = E0 + (9 V0 B0 / 16) [(η² − 1)³ B' + (η² − 1)² (6 − 4 η²)],   η = (V0/V)^(1/3),

with B0 = V d²E/dV² at V0 (ASE returns it in eV/Å³; reported in GPa via ``ase.units.GPa``) and
B' = dB/dP at V0. ASE's ``fit()`` returns only (V0, E0, B0); B' is the third fitted parameter
(``eos_parameters = (E0, B0, B', V0)``) of each form offered here (Birch-Murnaghan, Vinet, Murnaghan,
Birch, Poirier-Tarantola). The lattice parameters at the minimum are the input cell's scaled by
(V0/V)^(1/3): a0 = a (V0/V)^(1/3).

The minimum must lie inside the sampled volumes, with the lowest sampled energy not at either end;
otherwise the fit extrapolates and :func:`equation_of_state` stops with a message (relax first, or
sample a wider range).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator
from ase.units import GPa

from .common import ModelLike, require_periodic
from .relax import CommitteeResult, committee, relax

EOS_FORMS = ("birchmurnaghan", "vinet", "murnaghan", "birch", "pouriertarantola")


@dataclass
class EOSResult:
    """An E(V) curve and its fit.

    ``volumes`` [n] (Å³, whole cell) and ``energies`` [n] (eV); ``v0`` (Å³), ``e0`` (eV),
    ``bulk_modulus_GPa`` B0, ``bulk_modulus_derivative`` B' (dimensionless); ``lattice_parameters``
    a, b, c (Å), α, β, γ (°) of the input cell scaled to V0; ``parameters`` the fitted
    (E0 eV, B0 eV/Å³, B', V0 Å³) of ``eos``.
    """

    volumes: np.ndarray
    energies: np.ndarray
    eos: str
    v0: float
    e0: float
    bulk_modulus_GPa: float
    bulk_modulus_derivative: float
    lattice_parameters: np.ndarray
    parameters: np.ndarray
    n_atoms: int

    @property
    def a0(self) -> float:
        """The first lattice parameter at V0 (Å): the lattice constant of a cubic input cell."""
        return float(self.lattice_parameters[0])

    def energy(self, volumes: np.ndarray | float) -> np.ndarray:
        """The fitted E(V) (eV) at ``volumes`` (Å³)."""
        import ase.eos

        return getattr(ase.eos, self.eos)(np.asarray(volumes, dtype=float), *self.parameters)

    def summary(self) -> dict[str, Any]:
        """Plain numbers for JSON and :func:`committee_spread` (Å, Å³, eV, GPa)."""
        return {
            "eos": self.eos,
            "v0": self.v0,
            "v0_per_atom": self.v0 / self.n_atoms,
            "e0": self.e0,
            "e0_per_atom": self.e0 / self.n_atoms,
            "bulk_modulus_GPa": self.bulk_modulus_GPa,
            "bulk_modulus_derivative": self.bulk_modulus_derivative,
            "a0": self.a0,
            "lattice_parameters": self.lattice_parameters.tolist(),
            "volumes": self.volumes.tolist(),
            "energies": self.energies.tolist(),
        }

    def plot(self, path: str | Path) -> Path:
        """A PNG of the points and the fitted curve (see :func:`plot_eos`)."""
        return plot_eos([self], path)


def equation_of_state(
    atoms: Atoms,
    calc: Calculator,
    strain: float = 0.04,
    n_points: int = 9,
    eos: str = "birchmurnaghan",
    relax_internal: bool = True,
    fmax: float = 1e-3,
    steps: int = 200,
    where: str = "the structure",
) -> EOSResult:
    """E(V) of ``atoms`` with ``calc`` over linear strains ±``strain`` (``n_points`` cells) and its fit
    (see the module docstring). ``relax_internal`` relaxes the positions at each cell to ``fmax``
    (eV/Å) in at most ``steps``. ``where`` names the structure in error messages."""
    require_periodic(atoms, "an equation of state", where)
    if not 0 < strain < 0.3:
        raise ValueError(f"strain = {strain!r}: the largest linear strain must be in (0, 0.3)")
    if n_points < 5:
        raise ValueError(f"n_points = {n_points!r}: a fit of four parameters needs at least 5 volumes")
    if eos not in EOS_FORMS:
        raise ValueError(f"eos = {eos!r}: must be one of {', '.join(EOS_FORMS)} (forms with B')")
    volumes, energies = [], []
    for s in np.linspace(1.0 - strain, 1.0 + strain, n_points):
        scaled = atoms.copy()
        scaled.set_cell(np.asarray(atoms.cell) * s, scale_atoms=True)
        scaled.calc = calc
        if relax_internal and len(scaled) > 1:
            result = relax(scaled, calc, fmax=fmax, cell=False, steps=steps)
            result.require_converged(f"{where} scaled by {s:.4f} (positions at fixed cell)")
            energy = result.energy
        else:
            energy = float(scaled.get_potential_energy())
        volumes.append(abs(scaled.cell.volume))
        energies.append(energy)
    return fit_eos(np.array(volumes), np.array(energies), eos, atoms, where)


def fit_eos(
    volumes: np.ndarray, energies: np.ndarray, eos: str, atoms: Atoms, where: str = "the structure"
) -> EOSResult:
    """Fit E(V) (Å³, eV) of the cells of ``atoms`` scaled isotropically; stop if the minimum is not
    bracketed by the samples."""
    from ase.eos import EquationOfState

    lowest = int(np.argmin(energies))
    v_in = abs(atoms.cell.volume)
    sampled = f"sampled V = {volumes.min():.4g} … {volumes.max():.4g} Å³ about the input V = {v_in:.4g} Å³"
    advice = (
        "the input cell is far from its equilibrium volume: relax it first (nearsight relax, or relax()) "
        "or sample a wider range (a larger strain)"
    )
    if lowest in (0, len(energies) - 1):
        side = "smallest" if lowest == 0 else "largest"
        raise ValueError(
            f"{where}: E(V) has no minimum in the sampled range: the {side} volume has the lowest "
            f"energy ({sampled}); {advice}"
        )
    fit = EquationOfState(volumes, energies, eos=eos)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (overflow in trial parameters; the result is checked below)
        try:
            v0, e0, b0 = fit.fit(warn=False)
        except (RuntimeError, ValueError) as exc:
            raise ValueError(f"{where}: the {eos} fit of E(V) failed ({exc}); {sampled}") from exc
    params = np.asarray(fit.eos_parameters, dtype=float)
    if not (volumes.min() < v0 < volumes.max()) or not b0 > 0:
        raise ValueError(
            f"{where}: the fitted {eos} minimum V0 = {v0:.4g} Å³ (B = {b0 / GPa:.3g} GPa) lies outside "
            f"the {sampled}; {advice}"
        )
    cellpar = np.asarray(atoms.cell.cellpar(), dtype=float)
    cellpar[:3] *= (v0 / v_in) ** (1.0 / 3.0)
    return EOSResult(
        volumes=volumes,
        energies=energies,
        eos=eos,
        v0=float(v0),
        e0=float(e0),
        bulk_modulus_GPa=float(b0 / GPa),
        bulk_modulus_derivative=float(params[2]),
        lattice_parameters=cellpar,
        parameters=params,
        n_atoms=len(atoms),
    )


def plot_eos(results: list[EOSResult], path: str | Path, labels: list[str] | None = None) -> Path:
    """A PNG of E − E0 per atom (meV) against V per atom (Å³) for one result or a committee's, each
    fitted curve with its samples and V0 marked (matplotlib's Agg canvas, no global backend)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    fig = Figure(figsize=(5.0, 3.6), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for k, r in enumerate(results):
        label = labels[k] if labels else (f"member {k}" if len(results) > 1 else r.eos)
        v = np.linspace(r.volumes.min(), r.volumes.max(), 200)
        n = r.n_atoms
        line = ax.plot(v / n, 1e3 * (r.energy(v) - r.e0) / n, label=label)[0]
        ax.plot(r.volumes / n, 1e3 * (r.energies - r.e0) / n, "o", color=line.get_color(), ms=4)
        ax.axvline(r.v0 / n, color=line.get_color(), lw=0.6, ls=":")

    def stat(values: list[float], fmt: str) -> str:
        v = np.asarray(values)
        return f"{v.mean():{fmt}}" + (f" ± {v.std():{fmt}}" if len(v) > 1 else "")

    b = stat([r.bulk_modulus_GPa for r in results], ".1f")
    bp = stat([r.bulk_modulus_derivative for r in results], ".2f")
    a0 = stat([r.a0 for r in results], ".4f")
    ax.set_title(f"{results[0].eos} fit: B = {b} GPa, B' = {bp}, a0 = {a0} Å", fontsize=9)
    ax.set_xlabel("volume per atom (Å³)")
    ax.set_ylabel("E − E0 per atom (meV)")
    ax.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def committee_equation_of_state(
    atoms: Atoms, models: ModelLike | list[ModelLike], **kwargs: Any
) -> CommitteeResult[EOSResult]:
    """:func:`equation_of_state` with each committee member: mean ± σ of V0, B, B', a0, ..."""
    return committee(equation_of_state, atoms, models, **kwargs)
