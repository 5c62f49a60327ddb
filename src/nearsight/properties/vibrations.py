"""Harmonic vibrations of a molecule: frequencies, normal modes, thermochemistry and IR intensities.

The Hessian comes from central finite differences of the forces (ASE's
:class:`~ase.vibrations.Vibrations`, displacements ±δ of each Cartesian coordinate, ``nfree=4`` adds
±2δ), symmetrised::

    H_{iα,jβ} = ∂²E/∂r_{iα}∂r_{jβ} ≈ −[F_{jβ}(r + δ e_{iα}) − F_{jβ}(r − δ e_{iα})] / (2δ),   H ← (H + Hᵀ)/2

(eV/Å²). The mass-weighted Hessian D = M^{-1/2} H M^{-1/2} (eV/(Å² amu)) has eigenvalues ω_k² and
orthonormal eigenvectors e_k, the normal modes; the frequency ν̃_k = ω_k / (2πc) is reported in cm⁻¹,
**an imaginary frequency (ω_k² < 0) as the negative number −√|ω_k²| / (2πc)**, in ascending order of
ω_k². Cartesian displacements along mode k are e_k / √m_i.

A rigid molecule has 6 zero modes, 5 if linear (3 for one atom): translations √m_i ê_α and rotations
√m_i a_p × (r_i − R_cm) about the principal axes a_p. At a finite-difference Hessian of a relaxed
structure they come out at a few cm⁻¹, a few tens for stiff bonds (the residual force, and the O(δ²)
error of the differences, O(δ⁴) with ``nfree=4``); they are identified by their overlap with that rigid-body space, Σ_b (b·e_k)², not by size, so a
soft torsion below a rotation's residual frequency is still a vibration. The 3N − 6 (5) others are
the vibrations; the zero-point energy is ZPE = ½ Σ_vib ħω_k over the real ones.

IR intensities (any calculator with a dipole, e.g. a long-range model; for one with charges only,
e.g. ``charges=True`` without a Coulomb term, μ = Σ_i q_i r_i; Porezag & Pederson, Phys. Rev. B 54,
7830 (1996); ASE's :class:`~ase.vibrations.Infrared`)::

    I_k = |∂μ/∂Q_k|² = |Σ_{iα} (∂μ/∂r_{iα}) e_{k,iα} / √m_i|²

in (D/Å)²/amu, and ×42.255 in km/mol. Thermochemistry is the ideal-gas, rigid-rotor, harmonic-
oscillator one of :class:`ase.thermochemistry.IdealGasThermo`.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes

from .common import ModelLike, as_calculators, committee_spread, over_members, require_relaxed
from .spectra import plot_sticks

KM_PER_MOL = 42.255  # km/mol per (D/Å)²/amu (Porezag & Pederson 1996, as ASE's Infrared)
# ħω in eV for ω² = 1 eV/(Å² amu): ħ·√(e / (amu·Å²)) / e
HBAR_OMEGA_EV = units._hbar * 1e10 / np.sqrt(units._e * units._amu)
NO_DIPOLE_MESSAGE = (
    "IR intensities need the dipole moment, so a model with a charge head (learned charges: "
    "model.longrange with a coulomb term, or charges=True); this calculator gives neither dipole nor "
    "charges. `nearsight vibrations --no-ir` (ir=False) gives the frequencies"
)


@dataclass
class VibrationResult:
    """Harmonic analysis of one molecule with one calculator (see the module docstring)."""

    atoms: Atoms  # the geometry analysed (no calculator)
    energy: float  # eV, potential energy at that geometry
    hessian: np.ndarray  # [3N, 3N] eV/Å², symmetrised
    frequencies_cm: np.ndarray  # [3N] cm⁻¹, ascending ω²; imaginary ones negative
    normal_modes: np.ndarray  # [3N, N, 3] orthonormal eigenvectors e_k of the mass-weighted Hessian
    rigid_body: np.ndarray  # [3N] bool, translation or rotation
    rigid_body_weight: np.ndarray  # [3N] Σ_b (b·e_k)² over the rigid-body basis, in [0, 1]
    linear: bool
    ir_intensities: np.ndarray | None = None  # [3N] (D/Å)²/amu; None: no dipole
    delta: float = 0.01
    nfree: int = 2

    @property
    def mass_weighted_hessian(self) -> np.ndarray:
        """D = M^{-1/2} H M^{-1/2}, [3N, 3N] eV/(Å² amu)."""
        w = np.repeat(self.atoms.get_masses() ** -0.5, 3)
        return w[:, None] * self.hessian * w[None, :]

    @property
    def cartesian_modes(self) -> np.ndarray:
        """[3N, N, 3] Cartesian displacement of each atom per unit normal coordinate, e_k/√m_i (amu^-½)."""
        return self.normal_modes / np.sqrt(self.atoms.get_masses())[None, :, None]

    @property
    def vibrational_frequencies_cm(self) -> np.ndarray:
        """The 3N − 6 (5) vibrations, cm⁻¹ (imaginary ones negative)."""
        return self.frequencies_cm[~self.rigid_body]

    @property
    def rigid_body_frequencies_cm(self) -> np.ndarray:
        return self.frequencies_cm[self.rigid_body]

    @property
    def n_imaginary(self) -> int:
        """Vibrations with ω² < 0: the structure is not at a minimum along them."""
        return int(np.count_nonzero(self.vibrational_frequencies_cm < 0))

    @property
    def zero_point_energy(self) -> float:
        """½ Σ ħω over the real vibrations, eV."""
        nu = self.vibrational_frequencies_cm
        return float(0.5 * nu[nu > 0].sum() * units.invcm)

    @property
    def ir_intensities_km_mol(self) -> np.ndarray | None:
        return None if self.ir_intensities is None else self.ir_intensities * KM_PER_MOL

    def thermochemistry(
        self,
        temperature_K: float = 298.15,
        pressure_Pa: float = 1e5,
        symmetry_number: int = 1,
        spin: float = 0.0,
    ) -> dict[str, float | str]:
        """Ideal gas, rigid rotor, harmonic oscillators (``ase.thermochemistry.IdealGasThermo``):
        H = E_pot + ZPE + ∫C_p dT (enthalpy, eV), S (eV/K) at ``pressure_Pa`` (default 1 bar), and
        G = H − TS (eV). The geometry (monatomic, linear, nonlinear) is this result's; the symmetry
        number σ (2 for water, 3 for ammonia, 12 for methane) and the total spin are the caller's."""
        from ase.thermochemistry import IdealGasThermo

        if temperature_K <= 0 or pressure_Pa <= 0 or symmetry_number < 1 or spin < 0:
            raise ValueError(
                f"thermochemistry needs temperature_K > 0, pressure_Pa > 0, symmetry_number >= 1 and "
                f"spin >= 0; got {temperature_K}, {pressure_Pa}, {symmetry_number}, {spin}"
            )
        if self.n_imaginary:
            raise ValueError(
                f"thermochemistry needs a minimum, but {self.n_imaginary} vibration(s) are imaginary "
                f"({np.round(self.vibrational_frequencies_cm[: self.n_imaginary], 1).tolist()} cm⁻¹): "
                "relax the structure further"
            )
        geometry = "monatomic" if len(self.atoms) == 1 else "linear" if self.linear else "nonlinear"
        thermo = IdealGasThermo(
            vib_energies=self.vibrational_frequencies_cm * units.invcm,
            geometry=geometry,
            potentialenergy=self.energy,
            atoms=self.atoms,
            symmetrynumber=int(symmetry_number),
            spin=float(spin),
            vib_selection="exact",
        )
        enthalpy = thermo.get_enthalpy(temperature_K, verbose=False)
        entropy = thermo.get_entropy(temperature_K, pressure_Pa, verbose=False)
        return {
            "temperature_K": float(temperature_K),
            "pressure_Pa": float(pressure_Pa),
            "symmetry_number": int(symmetry_number),
            "spin": float(spin),
            "geometry": geometry,
            "potential_energy_eV": self.energy,
            "zero_point_energy_eV": self.zero_point_energy,
            "enthalpy_eV": float(enthalpy),
            "entropy_eV_per_K": float(entropy),
            "gibbs_energy_eV": float(enthalpy - temperature_K * entropy),
        }

    def summary(self) -> dict[str, Any]:
        """Plain numbers (JSON, :func:`~nearsight.properties.common.committee_spread`); intensities are
        those of the vibrations, in the order of ``vibrational_frequencies_cm``."""
        out: dict[str, Any] = {
            "n_atoms": len(self.atoms),
            "linear": self.linear,
            "energy_eV": self.energy,
            "frequencies_cm": self.frequencies_cm.tolist(),
            "vibrational_frequencies_cm": self.vibrational_frequencies_cm.tolist(),
            "rigid_body_frequencies_cm": self.rigid_body_frequencies_cm.tolist(),
            "n_imaginary": self.n_imaginary,
            "zero_point_energy_eV": self.zero_point_energy,
        }
        if self.ir_intensities is not None:
            out["ir_intensities_D2_A2_amu"] = self.ir_intensities[~self.rigid_body].tolist()
            out["ir_intensities_km_mol"] = self.ir_intensities_km_mol[~self.rigid_body].tolist()
        return out

    def plot(self, path: str | os.PathLike) -> Path:
        """A stick spectrum of the vibrations (PNG): IR intensities where known, else unit sticks."""
        vib = ~self.rigid_body
        heights = None if self.ir_intensities_km_mol is None else self.ir_intensities_km_mol[vib]
        return plot_sticks(path, self.frequencies_cm[vib], heights, title=self.atoms.get_chemical_formula())


def rigid_body_basis(atoms: Atoms, linear_tolerance: float = 1e-3) -> tuple[np.ndarray, bool]:
    """Orthonormal mass-weighted translations and rotations ``[n_rb, 3N]`` and whether the molecule is
    linear (smallest principal moment of inertia below ``linear_tolerance`` × the largest)."""
    masses, n = atoms.get_masses(), len(atoms)
    sqrt_m = np.sqrt(masses)
    basis = [np.kron(sqrt_m, np.eye(3)[alpha]) / np.sqrt(masses.sum()) for alpha in range(3)]
    centred = atoms.positions - atoms.get_center_of_mass()
    second = np.einsum("i,ij,ik->jk", masses, centred, centred)
    moments, axes = np.linalg.eigh(np.trace(second) * np.eye(3) - second)  # I = Σ m (r² 1 − r rᵀ)
    linear = n == 2 or (n > 2 and moments[0] < linear_tolerance * moments[-1])
    for p in range(3 if n > 1 else 0):
        if not (linear and p == 0):  # no rotation about the axis of a linear molecule
            r = sqrt_m[:, None] * np.cross(axes[:, p][None, :], centred)
            basis.append(r.ravel() / np.linalg.norm(r))
    return np.array(basis), bool(linear)


@contextlib.contextmanager
def _cache(cache_dir: str | os.PathLike | None, fingerprint: dict[str, Any]) -> Iterator[Path]:
    """The directory ASE writes its displaced forces to: a temporary one (removed afterwards), or the
    caller's, kept for a restart and refused when it holds another structure's or setting's run."""
    if cache_dir is None:
        with tempfile.TemporaryDirectory(prefix="nearsight-vibrations-") as tmp:
            yield Path(tmp) / "displacements"
        return
    root = Path(cache_dir)
    stamp = root / "fingerprint.json"
    if stamp.exists():
        old = json.loads(stamp.read_text())
        if {**old, "positions": None} != {**fingerprint, "positions": None} or not np.allclose(
            old["positions"], fingerprint["positions"], rtol=0, atol=1e-10
        ):
            raise ValueError(
                f"{root}: this cache directory holds the displacements of another structure or other "
                "settings (delta, nfree, IR); give an empty or new directory"
            )
    elif root.exists() and any(root.iterdir()):
        raise ValueError(f"{root}: not an empty directory nor a nearsight vibrations cache")
    root.mkdir(parents=True, exist_ok=True)
    tmp = stamp.with_suffix(".tmp")
    tmp.write_text(json.dumps(fingerprint))
    os.replace(tmp, stamp)
    yield root / "displacements"


def vibrations(
    atoms: Atoms,
    calc: Calculator | ModelLike,
    delta: float = 0.01,
    nfree: int = 2,
    check_relaxed: bool = True,
    fmax: float = 1e-3,
    relax: bool = False,
    ir: bool | str = "auto",
    cache_dir: str | os.PathLike | None = None,
    where: str = "the molecule",
) -> VibrationResult:
    """Harmonic vibrations of the molecule ``atoms`` with ``calc`` (an ASE calculator, or a model file or
    module, run in float64).

    ``delta`` (Å) and ``nfree`` (2: ±δ, 4: also ±2δ) set the finite differences. ``relax`` first
    minimises with BFGS to ``fmax``; ``check_relaxed`` refuses a structure with a force above ``fmax``
    (eV/Å). ``ir``: ``"auto"`` adds IR intensities where the calculator gives a dipole, ``True``
    requires them (a ``ValueError`` without a dipole), ``False`` skips them. ``cache_dir``: where ASE
    keeps the displaced forces (default: a temporary directory, removed; a given one is kept and a
    rerun reuses it). Constraints are dropped: every atom vibrates.
    """
    if np.any(atoms.pbc):
        raise ValueError(
            f"{where}: vibrations are for a molecule, but pbc = {atoms.pbc.tolist()}; for a crystal use "
            "nearsight phonons (nearsight.properties.phonons), for a molecule in a box set pbc=False"
        )
    if len(atoms) == 0 or delta <= 0 or nfree not in (2, 4) or ir not in ("auto", True, False):
        raise ValueError(
            f"{where}: vibrations need atoms, delta > 0, nfree 2 or 4 and ir 'auto', True or False; got "
            f"{len(atoms)} atoms, delta = {delta}, nfree = {nfree}, ir = {ir!r}"
        )
    calc = calc if isinstance(calc, Calculator) else as_calculators(calc)[0]
    atoms = atoms.copy()
    atoms.set_constraint()
    atoms.calc = calc
    if relax:
        from ase.optimize import BFGS

        if not BFGS(atoms, logfile=None).run(fmax=0.5 * fmax, steps=2000):
            raise ValueError(f"{where}: BFGS did not reach fmax = {0.5 * fmax:g} eV/Å in 2000 steps")
    if check_relaxed:
        require_relaxed(atoms, fmax, "harmonic vibrations", where)
    with_ir = ir is not False and _with_dipole(atoms)
    if ir is True and not with_ir:
        raise ValueError(f"{where}: {NO_DIPOLE_MESSAGE}")
    energy = float(atoms.get_potential_energy())

    from ase.vibrations import Infrared, Vibrations

    fingerprint = {
        "numbers": atoms.numbers.tolist(),
        "positions": atoms.positions.tolist(),
        "delta": float(delta),
        "nfree": int(nfree),
        "ir": bool(with_ir),
    }
    with _cache(cache_dir, fingerprint) as name:
        vib = (Infrared if with_ir else Vibrations)(atoms, name=str(name), delta=delta, nfree=nfree)
        vib.run()
        vib.read()
        hessian = np.array(vib.H)
        intensities = np.array(vib.intensities, dtype=float) if with_ir else None

    # the same matrix ASE's Infrared diagonalises, so the intensities are in this order
    weights = np.repeat(atoms.get_masses() ** -0.5, 3)
    omega2, vectors = np.linalg.eigh(weights[:, None] * hessian * weights)
    frequencies = np.sign(omega2) * np.sqrt(np.abs(omega2)) * HBAR_OMEGA_EV / units.invcm
    basis, linear = rigid_body_basis(atoms)
    overlap = ((basis @ vectors) ** 2).sum(axis=0)  # [3N]
    rigid = np.zeros(len(omega2), dtype=bool)
    rigid[np.argsort(-overlap, kind="stable")[: len(basis)]] = True
    result_atoms = atoms.copy()
    result_atoms.calc = None
    return VibrationResult(
        atoms=result_atoms,
        energy=energy,
        hessian=hessian,
        frequencies_cm=frequencies,
        normal_modes=vectors.T.reshape(len(omega2), len(atoms), 3),
        rigid_body=rigid,
        rigid_body_weight=overlap,
        linear=linear,
        ir_intensities=intensities,
        delta=float(delta),
        nfree=int(nfree),
    )


def _with_dipole(atoms: Atoms) -> bool:
    """Whether the calculator of ``atoms`` gives a dipole; one that gives only charges is wrapped in
    :class:`DipoleFromCharges` (a model with a charge head but no Coulomb term)."""
    try:
        atoms.get_dipole_moment()
        return True
    except (PropertyNotImplementedError, NotImplementedError, AttributeError):
        pass
    try:
        atoms.get_charges()
    except (PropertyNotImplementedError, NotImplementedError, AttributeError, RuntimeError):
        return False
    atoms.calc = DipoleFromCharges(atoms.calc)
    return True


class DipoleFromCharges(Calculator):
    """Another calculator's energy, forces and charges q_i, and the dipole μ = Σ_i q_i r_i (e·Å)."""

    implemented_properties = ["energy", "free_energy", "forces", "charges", "dipole"]

    def __init__(self, calc: Calculator) -> None:
        super().__init__()
        self.inner = calc

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        probe = self.atoms.copy()
        probe.calc = self.inner
        charges = np.asarray(probe.get_charges(), dtype=float)
        energy = float(probe.get_potential_energy())
        self.results = {
            "energy": energy,
            "free_energy": energy,
            "forces": probe.get_forces(),
            "charges": charges,
            "dipole": charges @ probe.positions,
        }


@dataclass
class CommitteeVibrations:
    """Vibrations per committee member and their spread (mean ± σ over members, ddof = 0; mode k of
    every member is its k-th lowest, so modes are matched by rank)."""

    members: list[VibrationResult]
    spread: dict[str, dict[str, Any]]  # committee_spread of the members' summaries

    @property
    def frequencies_cm(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and σ of the vibrational frequencies (cm⁻¹)."""
        s = self.spread["vibrational_frequencies_cm"]
        return np.asarray(s["mean"]), np.asarray(s["std"])

    @property
    def ir_intensities_km_mol(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Mean and σ of the vibrations' IR intensities (km/mol); None without dipoles."""
        s = self.spread.get("ir_intensities_km_mol")
        return None if s is None else (np.asarray(s["mean"]), np.asarray(s["std"]))

    def thermochemistry(self, **kwargs: Any) -> dict[str, dict[str, Any]]:
        """Mean and σ of each number of :meth:`VibrationResult.thermochemistry` (same arguments)."""
        return committee_spread([m.thermochemistry(**kwargs) for m in self.members])

    def plot(self, path: str | os.PathLike) -> Path:
        """Mean sticks with ± σ error bars (PNG)."""
        (mean, std), ir = self.frequencies_cm, self.ir_intensities_km_mol or (None, None)
        title = f"{self.members[0].atoms.get_chemical_formula()}, {len(self.members)} members (mean ± σ)"
        return plot_sticks(path, mean, ir[0], std, ir[1], title=title)


def committee_vibrations(
    atoms: Atoms, models: ModelLike | Sequence[ModelLike], dtype: str = "float64", **kwargs: Any
) -> CommitteeVibrations:
    """:func:`vibrations` with each member (model files, modules or calculators; ``kwargs`` go to
    :func:`vibrations`), and mean ± σ of every number of their summaries."""
    members = over_members(vibrations, atoms, as_calculators(models, dtype=dtype), **kwargs)
    return CommitteeVibrations(members, committee_spread([m.summary() for m in members]))
