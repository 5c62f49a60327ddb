"""Oracles: functions ``oracle(atoms) -> Label`` that label a structure with energy and forces.

An oracle never raises for a bad structure or a failed calculation: it returns a
:class:`Label` with ``ok=False`` and an ``error`` that names the method and the
structure.  Only labels with ``ok=True`` carry an energy (and forces) and only
they may become training data.

* :class:`PySCFOracle` -- Hartree-Fock, DFT, MP2, CCSD and CCSD(T) with PySCF;
  energies in eV, forces in eV/Å (analytic gradients for every method, see the
  class docstring).
* :class:`ASECalculatorOracle` -- any ASE calculator, made fresh for each
  structure by a factory.

Every oracle has ``timeout_s``: with a timeout, ``oracle(atoms)`` runs the
calculation in a child process that is killed when the time is up (the label
then has ``ok=False`` and ``error="timeout after X s ..."``).
:func:`nearsight.qm.labelling.label_structures` enforces the same timeout in its
long-lived worker processes.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from ase import Atoms
from ase import units as ase_units

__all__ = [
    "HARTREE_TO_EV",
    "HARTREE_PER_BOHR_TO_EV_PER_ANGSTROM",
    "Label",
    "Oracle",
    "OracleError",
    "PySCFOracle",
    "ASECalculatorOracle",
    "geometry_hash",
    "describe",
]

HARTREE_TO_EV = float(ase_units.Hartree)  # eV per Hartree
HARTREE_PER_BOHR_TO_EV_PER_ANGSTROM = float(ase_units.Hartree / ase_units.Bohr)

_ROUND_DECIMALS = 8  # positions and cell rounded to 1e-8 Å before hashing


class OracleError(RuntimeError):
    """A calculation that ran but must not become a label (e.g. SCF not converged)."""


def _rounded(values: np.ndarray) -> np.ndarray:
    # + 0.0 turns -0.0 into 0.0 so that both hash the same
    return np.round(np.asarray(values, dtype=np.float64), _ROUND_DECIMALS) + 0.0


def geometry_hash(atoms: Atoms) -> str:
    """SHA-256 of atomic numbers, positions and cell (rounded to 1e-8 Å) and pbc."""
    h = hashlib.sha256()
    h.update(np.asarray(atoms.numbers, dtype=np.int64).tobytes())
    h.update(_rounded(atoms.positions).tobytes())
    h.update(_rounded(atoms.cell.array).tobytes())
    h.update(np.asarray(atoms.pbc, dtype=bool).tobytes())
    return h.hexdigest()


def describe(atoms: Atoms) -> str:
    """``H2O (geometry 3f2a9c01b7d4)``: formula and hash prefix, for error messages."""
    text = f"{atoms.get_chemical_formula()} (geometry {geometry_hash(atoms)[:12]}"
    name = atoms.info.get("name")
    if name is not None:
        text += f", name {name!r}"
    return text + ")"


@dataclass
class Label:
    """The result of one oracle call.  Energies in eV, forces in eV/Å.

    ``ok`` is True only for a finished, converged calculation with finite
    values; otherwise ``energy`` and ``forces`` are None and ``error`` says why.
    ``extra`` holds further labels of an ok label by field name (e.g.
    ``nearsight.keys.STATE_ENERGIES``), as float64 arrays in eV-based units;
    a field declared per atom in :mod:`nearsight.keys` has ``n_atoms`` first.
    """

    energy: float | None
    forces: np.ndarray | None  # [n_atoms, 3] or None
    ok: bool
    error: str | None = None
    method: str = ""
    basis: str | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    wall_time: float = 0.0  # seconds
    extra: dict[str, np.ndarray] = field(default_factory=dict)  # name -> array (ok labels only)

    @classmethod
    def failure(
        cls,
        error: str,
        *,
        method: str = "",
        basis: str | None = None,
        provenance: dict[str, Any] | None = None,
        wall_time: float = 0.0,
    ) -> Label:
        return cls(None, None, False, error, method, basis, dict(provenance or {}), float(wall_time))


class Oracle:
    """Base class: subclasses implement :meth:`compute` and :meth:`settings`.

    ``oracle(atoms)`` returns a :class:`Label`; exceptions of :meth:`compute`
    become failed labels.  ``oracle_id`` is a hash of :meth:`settings`: two
    oracles with the same id give the same labels, so a cache keys labels by
    (geometry, oracle_id).  :meth:`compute` may return a fourth element, a dict
    of extra labels (name -> array) that becomes :attr:`Label.extra`.
    """

    method: str = ""
    basis: str | None = None
    timeout_s: float | None = None

    def settings(self) -> dict[str, Any]:
        """JSON-serialisable description of everything that changes the labels."""
        raise NotImplementedError

    def compute(self, atoms: Atoms) -> tuple[float, np.ndarray | None, dict[str, Any]]:
        """(energy eV, forces eV/Å or None, provenance[, extra labels]); raises on failure."""
        raise NotImplementedError

    @property
    def name(self) -> str:
        return self.method if self.basis is None else f"{self.method}/{self.basis}"

    @property
    def oracle_id(self) -> str:
        text = json.dumps(self.settings(), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def wants_forces(self) -> bool:
        return True

    def label(self, atoms: Atoms) -> Label:
        """Run :meth:`compute` in this process (no timeout) and check the result."""
        start = time.perf_counter()
        try:
            energy, forces, provenance, *more = self.compute(atoms)
            extra = {str(k): np.asarray(v, dtype=np.float64) for k, v in (more[0] if more else {}).items()}
        except Exception as err:  # every failure is recorded, never raised
            kind = "" if isinstance(err, OracleError) else f"{type(err).__name__}: "
            return Label.failure(
                f"{self.name} failed for {describe(atoms)}: {kind}{err}",
                method=self.method,
                basis=self.basis,
                wall_time=time.perf_counter() - start,
            )
        wall = time.perf_counter() - start
        provenance = {"oracle": type(self).__name__, **self.settings(), **provenance}
        problem = self._check(atoms, energy, forces)
        for name, value in extra.items():
            if problem is None and not np.all(np.isfinite(value)):
                problem = f"extra label {name!r} is not finite"
        if problem is not None:
            return Label.failure(
                f"{self.name} for {describe(atoms)}: {problem}",
                method=self.method,
                basis=self.basis,
                provenance=provenance,
                wall_time=wall,
            )
        return Label(
            float(energy),
            None if forces is None else np.asarray(forces, dtype=np.float64).reshape(len(atoms), 3),
            True,
            None,
            self.method,
            self.basis,
            provenance,
            wall,
            extra,
        )

    def _check(self, atoms: Atoms, energy: Any, forces: Any) -> str | None:
        try:
            e = float(energy)
        except (TypeError, ValueError):
            return f"energy {energy!r} is not a number"
        if not math.isfinite(e):
            return f"energy is not finite ({e})"
        if forces is None:
            return "no forces were computed" if self.wants_forces else None
        f = np.asarray(forces, dtype=np.float64)
        if f.size != 3 * len(atoms):
            return f"forces have shape {f.shape}, expected ({len(atoms)}, 3)"
        if not np.all(np.isfinite(f)):
            bad = np.argwhere(~np.isfinite(f.reshape(len(atoms), 3)))[0]
            return f"forces are not finite (atom {bad[0]}, component {'xyz'[bad[1]]})"
        return None

    def __call__(self, atoms: Atoms) -> Label:
        """The label of ``atoms``; in a child process killed after ``timeout_s`` if one is set."""
        if self.timeout_s is None:
            return self.label(atoms)
        from nearsight.qm._workers import WorkerPool

        with WorkerPool(self, n_workers=1, timeout_s=self.timeout_s) as pool:
            return pool.run_one(atoms)


_METHODS = ("hf", "dft", "mp2", "ccsd", "ccsd(t)")


class PySCFOracle(Oracle):
    """Energies and forces from PySCF for a molecule (non-periodic ``Atoms`` in Å).

    ``method``: ``"hf"`` (RHF/UHF), ``"dft"`` (RKS/UKS with functional ``xc``),
    ``"mp2"``, ``"ccsd"`` or ``"ccsd(t)"`` on top of HF.  Restricted references
    are used for ``spin == 0`` (2S, the number of unpaired electrons), unrestricted
    ones otherwise.  All electrons are correlated.

    Forces are analytic gradients for every method: SCF gradients (for DFT with
    the response of the integration grid, so that they are exactly -dE/dx), MP2
    relaxed-density gradients, CCSD gradients from the Λ equations and CCSD(T)
    gradients from ``pyscf.grad.ccsd_t`` / ``pyscf.grad.uccsd_t`` (the (T)
    Λ equations of ``pyscf.cc.ccsd_t_lambda``; PySCF ≥ 2.0).  No finite
    differences are ever used; if the installed PySCF lacks a gradient module
    the label fails with an error that says so.  Open-shell CCSD(T) forces are
    refused (``ValueError``): PySCF's UCCSD(T) gradients disagree with finite
    differences of its own energy (checked with PySCF 2.14); closed-shell
    CCSD(T) forces agree to 1e-5 eV/Å.  No density fitting is used (PySCF's
    CC gradients ignore it).

    Failures (returned as ``ok=False``, never raised): SCF not converged within
    ``max_cycle`` cycles to ``conv_tol``; CCSD amplitudes or Λ equations not
    converged; any PySCF exception; non-finite values; ``timeout_s`` exceeded.

    Units: Hartree → eV and Hartree/Bohr → eV/Å with ``ase.units``.
    """

    def __init__(
        self,
        method: str = "hf",
        basis: str = "6-31g*",
        xc: str = "pbe",
        charge: int = 0,
        spin: int = 0,
        conv_tol: float = 1e-9,
        max_cycle: int = 100,
        forces: bool = True,
        timeout_s: float | None = None,
        verbose: int = 0,
        max_memory_mb: int = 2000,
    ) -> None:
        method = method.lower().replace(" ", "")
        if method not in _METHODS:
            raise ValueError(f"PySCFOracle: method {method!r} is not one of {_METHODS}")
        if timeout_s is not None and not timeout_s > 0:
            raise ValueError(f"PySCFOracle: timeout_s must be positive, got {timeout_s}")
        if int(spin) < 0:
            raise ValueError(f"PySCFOracle: spin (number of unpaired electrons) must be >= 0, got {spin}")
        if method == "ccsd(t)" and int(spin) > 0 and forces:
            raise ValueError(
                "PySCFOracle: open-shell (spin > 0) CCSD(T) forces are refused: PySCF's UCCSD(T) analytic "
                "gradients disagree with finite differences (0.05 eV/Å for OH/STO-3G with PySCF 2.14; "
                "pyscf issue #3305); use forces=False, method='ccsd' or a closed-shell system"
            )
        self.method = method
        self.basis = str(basis).lower()
        self.xc = str(xc).lower() if method == "dft" else None
        self.charge = int(charge)
        self.spin = int(spin)
        self.conv_tol = float(conv_tol)
        self.max_cycle = int(max_cycle)
        self.forces = bool(forces)
        self.timeout_s = None if timeout_s is None else float(timeout_s)
        self.verbose = int(verbose)
        self.max_memory_mb = int(max_memory_mb)

    @property
    def name(self) -> str:
        method = f"DFT({self.xc})" if self.method == "dft" else self.method.upper()
        return f"PySCF {method}/{self.basis}"

    @property
    def wants_forces(self) -> bool:
        return self.forces

    def settings(self) -> dict[str, Any]:
        return {
            "oracle": "PySCFOracle",
            "method": self.method,
            "basis": self.basis,
            "xc": self.xc,
            "charge": self.charge,
            "spin": self.spin,
            "conv_tol": self.conv_tol,
            "max_cycle": self.max_cycle,
            "forces": self.forces,
        }

    def __repr__(self) -> str:
        return f"PySCFOracle({', '.join(f'{k}={v!r}' for k, v in self.settings().items() if k != 'oracle')})"

    def molecule(self, atoms: Atoms):
        """The ``pyscf.gto.Mole`` of ``atoms`` (positions in Å)."""
        from pyscf import gto

        if np.any(atoms.pbc):
            raise OracleError(
                f"structure is periodic (pbc={atoms.pbc.tolist()}); PySCFOracle labels molecules only"
            )
        return gto.M(
            atom=[
                (s, tuple(float(x) for x in p)) for s, p in zip(atoms.get_chemical_symbols(), atoms.positions)
            ],
            unit="Angstrom",
            basis=self.basis,
            charge=self.charge,
            spin=self.spin,
            symmetry=False,
            verbose=self.verbose,
            max_memory=self.max_memory_mb,
        )

    def _scf(self, mol):
        from pyscf import dft, scf

        restricted = self.spin == 0
        if self.method == "dft":
            mf = dft.RKS(mol) if restricted else dft.UKS(mol)
            mf.xc = self.xc
        else:
            mf = scf.RHF(mol) if restricted else scf.UHF(mol)
        mf.conv_tol = self.conv_tol
        mf.max_cycle = self.max_cycle
        mf.verbose = self.verbose
        return mf

    def compute(self, atoms: Atoms) -> tuple[float, np.ndarray | None, dict[str, Any]]:
        import pyscf

        mol = self.molecule(atoms)
        mf = self._scf(mol)
        e_scf = mf.kernel()
        if not mf.converged:
            raise OracleError(
                f"{type(mf).__name__} SCF not converged in {self.max_cycle} cycles "
                f"(conv_tol={self.conv_tol:g}, last energy {e_scf:.10f} Ha)"
            )
        provenance: dict[str, Any] = {
            "pyscf_version": pyscf.__version__,
            "scf": type(mf).__name__,
            "e_scf_hartree": float(e_scf),
            "nao": int(mol.nao),
        }
        grad_hartree_bohr = None
        if self.method in ("hf", "dft"):
            e_tot = float(e_scf)
            if self.forces:
                gradients = mf.nuc_grad_method()
                if self.method == "dft":
                    # derivative of the quadrature grid too: forces are then exactly -dE/dx
                    gradients.grid_response = True
                grad_hartree_bohr = gradients.kernel()
        elif self.method == "mp2":
            from pyscf import mp

            post = mp.MP2(mf)
            post.verbose = self.verbose
            post.kernel()
            e_tot = float(post.e_tot)
            provenance["e_corr_hartree"] = float(post.e_corr)
            if self.forces:
                grad_hartree_bohr = post.nuc_grad_method().kernel()
        else:
            e_tot, grad_hartree_bohr = self._coupled_cluster(mf, provenance)
        forces = None
        if grad_hartree_bohr is not None:
            forces = -np.asarray(grad_hartree_bohr, dtype=np.float64) * HARTREE_PER_BOHR_TO_EV_PER_ANGSTROM
        return e_tot * HARTREE_TO_EV, forces, provenance

    def _coupled_cluster(self, mf, provenance: dict[str, Any]):
        from pyscf import cc

        mycc = cc.CCSD(mf)
        mycc.verbose = self.verbose
        mycc.kernel()
        if not mycc.converged:
            raise OracleError(f"CCSD amplitudes not converged in {mycc.max_cycle} cycles")
        provenance["e_ccsd_corr_hartree"] = float(mycc.e_corr)
        if self.method == "ccsd":
            grad = None
            if self.forces:
                grad_method = mycc.nuc_grad_method()
                grad = grad_method.kernel()
                if getattr(mycc, "converged_lambda", True) is False:
                    raise OracleError("CCSD Λ equations not converged")
            return float(mycc.e_tot), grad
        eris = mycc.ao2mo(mf.mo_coeff)
        e_t = float(mycc.ccsd_t(eris=eris))
        provenance["e_triples_hartree"] = e_t
        e_tot = float(mycc.e_tot) + e_t
        if not self.forces:
            return e_tot, None
        # closed shell only (the constructor refuses open-shell CCSD(T) forces)
        try:
            from pyscf.cc import ccsd_t_lambda as t_lambda
            from pyscf.grad import ccsd_t as t_grad
        except ImportError as err:
            raise OracleError(
                f"this PySCF has no analytic CCSD(T) gradients ({err}); use forces=False"
            ) from None
        converged, l1, l2 = t_lambda.kernel(mycc, eris, mycc.t1, mycc.t2, verbose=self.verbose)
        if not converged:
            raise OracleError("CCSD(T) Λ equations not converged")
        grad = t_grad.Gradients(mycc).kernel(mycc.t1, mycc.t2, l1, l2, eris=eris)
        return e_tot, grad


class ASECalculatorOracle(Oracle):
    """Labels from any ASE calculator; ``calc_factory()`` makes a fresh one per structure.

    For worker processes and timeouts the factory must be picklable (a
    module-level function or class, or a ``functools.partial`` of one).
    ``method`` and ``basis`` name the labels in the store; ``settings`` (any
    JSON-serialisable dict) must change whenever the calculator's parameters do,
    because it enters the cache key.
    """

    def __init__(
        self,
        calc_factory: Callable[[], Any],
        method: str | None = None,
        basis: str | None = None,
        settings: dict[str, Any] | None = None,
        forces: bool = True,
        timeout_s: float | None = None,
    ) -> None:
        if not callable(calc_factory):
            raise TypeError(f"ASECalculatorOracle: calc_factory must be callable, got {calc_factory!r}")
        self.calc_factory = calc_factory
        self.method = method or getattr(calc_factory, "__name__", type(calc_factory).__name__)
        self.basis = basis
        self._settings = dict(settings or {})
        self.forces = bool(forces)
        self.timeout_s = None if timeout_s is None else float(timeout_s)

    @property
    def wants_forces(self) -> bool:
        return self.forces

    def settings(self) -> dict[str, Any]:
        factory = self.calc_factory
        qualname = f"{getattr(factory, '__module__', '?')}.{getattr(factory, '__qualname__', repr(factory))}"
        return {
            "oracle": "ASECalculatorOracle",
            "factory": qualname,
            "method": self.method,
            "basis": self.basis,
            "forces": self.forces,
            **self._settings,
        }

    def compute(self, atoms: Atoms) -> tuple[float, np.ndarray | None, dict[str, Any]]:
        work = atoms.copy()
        work.calc = self.calc_factory()
        energy = work.get_potential_energy()
        forces = work.get_forces() if self.forces else None
        return float(energy), forces, {"calculator": type(work.calc).__name__}
