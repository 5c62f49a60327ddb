"""How fast the one-body density matrix decays: nearsightedness measured on the electrons themselves.

In a localised, orthonormal basis the density matrix ρ_μν tells how strongly orbital μ on atom A
and orbital ν on atom B are coupled by the occupied states.  We take the symmetrically (Löwdin)
orthogonalised atomic orbitals (Löwdin, J. Chem. Phys. 18, 365 (1950)),

    ρ = S^{1/2} P S^{1/2} / 2        (P: the AO density matrix, S: the AO overlap),

halved so that it is the density matrix of one spin (eigenvalues in [0, 1]; for open shells the
mean of α and β), and record for every atom pair the largest element of its block,

    D_AB = max_{μ∈A, ν∈B} |ρ_μν|,

against the distance r_AB.  It decays exponentially with a gap, as a power law in a metal at zero
electronic temperature, and exponentially again at a finite electronic temperature T_e, where the
occupations are Fermi-Dirac, f = 1/(1 + exp((ε − μ)/k_B T_e)) (PySCF's ``smearing_``).

Periodic cells (all three directions periodic) use k-points: ρ(k) = S(k)^{1/2} P(k) S(k)^{1/2} / 2
and the real-space blocks between cell 0 and cell T are ρ_μν(T) = (1/N_k) Σ_k e^{−ik·T} ρ_μν(k),
each pair at its shortest image in the N_1 × N_2 × N_3 Born-von Kármán supercell, so a k-mesh of
N reaches distances of about N/2 cells.  A mesh of (1, 1, 1) is the Γ point: minimum-image pairs of
the cell itself.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from ase import Atoms
from ase import units as ase_units

from .decay import DecayFit, fit_decay, fit_or_reason
from .force_response import check_centres

__all__ = [
    "DensityMatrixDecay",
    "density_matrix_decay",
    "decay_from_scf",
    "lowdin_density_matrix",
    "kelvin_to_hartree",
]

_METHODS = ("hf", "dft")


def kelvin_to_hartree(temperature_K: float) -> float:
    """k_B T in Hartree."""
    return float(temperature_K) * ase_units.kB / ase_units.Hartree


def lowdin_density_matrix(dm: np.ndarray, overlap: np.ndarray) -> np.ndarray:
    """S^{1/2} P S^{1/2} for Hermitian ``dm`` and positive-definite ``overlap`` (one matrix or a stack)."""
    w, v = np.linalg.eigh(overlap)
    if np.min(w) <= 0:
        raise ValueError(
            f"Löwdin orthogonalisation: the overlap matrix is singular (eigenvalue {np.min(w):.3g})"
        )
    half = (v * np.sqrt(w)[..., None, :]) @ np.conj(np.swapaxes(v, -1, -2))
    return half @ dm @ half


@dataclass
class DensityMatrixDecay:
    """D_AB = max |ρ_μν| over the block of each atom pair (module docstring) against r_AB.

    Attributes
    ----------
    centres, partners : int arrays ``[n_pairs]``
        Atom A (in the molecule or in cell 0) and atom B (in the molecule or in cell T).
    distances : ``[n_pairs]``
        r_AB, Å.
    values : ``[n_pairs]``
        D_AB, dimensionless.
    method : str
        e.g. ``"RKS(lda,vwn)/sto-3g, T_e = 0 K"``.
    electronic_temperature_K : float
    gap_eV : float
        Lowest unoccupied minus highest occupied orbital energy by aufbau counting (over all k),
        eV: ~0 in a metal.
    formula : str
    fit_window : (r_min, r_max)
        Å; None ends: from 1.5 × the shortest distance, to the longest.
    floor : float
        Values at or below it are left out of the fit (1e-10: round-off).
    """

    centres: np.ndarray
    partners: np.ndarray
    distances: np.ndarray
    values: np.ndarray
    method: str
    electronic_temperature_K: float
    gap_eV: float
    formula: str = ""
    fit_window: tuple[float | None, float | None] = (None, None)
    floor: float = 1e-10
    _fit: DecayFit | None = field(default=None, repr=False)

    def default_window(self) -> tuple[float, float | None]:
        lo, hi = self.fit_window
        return (1.5 * float(self.distances.min()) if lo is None else lo, hi)

    @property
    def fit(self) -> DecayFit:
        """Exponential and power-law fits of the tail envelope of D(r) in :meth:`default_window`."""
        if self._fit is None:
            self._fit = fit_decay(
                self.distances, self.values, self.default_window(), floor=self.floor, what="density matrix"
            )
        return self._fit

    def to_dict(self) -> dict:
        fit = fit_or_reason(self)
        return {
            "formula": self.formula,
            "method": self.method,
            "electronic_temperature_K": self.electronic_temperature_K,
            "gap_eV": self.gap_eV if np.isfinite(self.gap_eV) else None,
            "definition": "max |rho_mn| over the atom-pair block, rho = S^1/2 P S^1/2 / 2 (Lowdin, one spin)",
            "fit": fit,
            "pairs": [
                {"centre": int(i), "partner": int(j), "distance_A": float(r), "value": float(v)}
                for i, j, r, v in zip(self.centres, self.partners, self.distances, self.values)
            ],
        }


def _check_inputs(method: str, temperature_K: float) -> str:
    method = str(method).lower()
    if method not in _METHODS:
        raise ValueError(f"density matrix: method {method!r} is not one of {_METHODS}")
    if isinstance(temperature_K, bool) or not np.isfinite(temperature_K) or temperature_K < 0:
        raise ValueError(
            f"density matrix: electronic_temperature_K must be a finite number ≥ 0, got {temperature_K!r}"
        )
    return method


def density_matrix_decay(
    atoms: Atoms,
    method: str = "dft",
    xc: str = "pbe",
    basis: str = "sto-3g",
    electronic_temperature_K: float = 0.0,
    kpts: Sequence[int] = (1, 1, 1),
    centres: Sequence[int] | None = None,
    charge: int = 0,
    spin: int = 0,
    conv_tol: float = 1e-9,
    max_cycle: int = 200,
    fit_window: tuple[float | None, float | None] = (None, None),
    scf_options: dict[str, Any] | None = None,
) -> DensityMatrixDecay:
    """Run a PySCF SCF on ``atoms`` and measure the decay of its density matrix.

    Parameters
    ----------
    atoms : Atoms
        A molecule (no periodic direction) or a cell periodic in all three directions (Å); a
        one-dimensional chain is a cell with vacuum across it.
    method : ``"hf"`` or ``"dft"``
        Restricted for ``spin == 0``, unrestricted otherwise; molecules only for open shells.
    xc : str
        Functional for ``"dft"`` (PySCF names: ``"pbe"``, ``"lda,vwn"``).
    basis : str
        Gaussian basis; a minimal one (``"sto-3g"``) keeps the atom blocks closest to atomic orbitals.
    electronic_temperature_K : float
        Fermi-Dirac smearing at T_e (K); 0: aufbau occupations.
    kpts : three ints
        Monkhorst-Pack mesh of a periodic cell (ignored for a molecule).
    centres : sequence of int, optional
        Atoms A whose pairs are recorded (default: all).
    charge, spin : int
        Total charge (e) and number of unpaired electrons 2S.
    conv_tol, max_cycle :
        SCF convergence (Hartree) and cycle limit.
    fit_window : (r_min, r_max)
        Distances (Å) of the decay fit.
    scf_options : dict, optional
        Attributes set on the SCF object before it runs (e.g. ``{"level_shift": 0.2}``).

    Raises
    ------
    ValueError
        Fewer than 2 atoms, partly periodic cells, a bad method or temperature, an SCF that does
        not converge (the message names the structure and the settings).
    """
    method = _check_inputs(method, electronic_temperature_K)
    check_centres(atoms, centres, "density matrix")
    periodic = bool(np.all(atoms.pbc))
    if np.any(atoms.pbc) and not periodic:
        raise ValueError(
            f"density matrix: {atoms.get_chemical_formula()} has pbc = {atoms.pbc.tolist()}; use a molecule "
            "or a cell periodic in all three directions (vacuum across a chain or slab)"
        )
    symbols = atoms.get_chemical_symbols()
    geometry = [(s, tuple(float(x) for x in p)) for s, p in zip(symbols, atoms.positions)]
    label = "RHF" if method == "hf" else f"RKS({xc})"
    if spin:
        label = "U" + label[1:]
    if periodic:
        from pyscf.pbc import dft as pdft
        from pyscf.pbc import gto as pgto
        from pyscf.pbc import scf as pscf

        kmesh = [int(k) for k in kpts]
        if len(kmesh) != 3 or min(kmesh) < 1:
            raise ValueError(f"density matrix: kpts must be three positive integers, got {list(kpts)!r}")
        if spin:
            raise ValueError("density matrix: open-shell (spin > 0) periodic cells are not supported")
        cell = pgto.Cell()
        cell.atom, cell.a, cell.basis, cell.unit = geometry, atoms.cell.array, basis, "Angstrom"
        cell.charge, cell.verbose = charge, 0
        cell.build()
        k = cell.make_kpts(kmesh)
        mf = (pscf.KRHF(cell, k) if method == "hf" else pdft.KRKS(cell, k)).density_fit()
        smear = pscf.addons.smearing_
        label = "K" + label + f"/{basis}, kpts {kmesh[0]}x{kmesh[1]}x{kmesh[2]}"
    else:
        from pyscf import dft, gto, scf

        mol = gto.M(atom=geometry, basis=basis, unit="Angstrom", charge=charge, spin=spin, verbose=0)
        if method == "hf":
            mf = scf.UHF(mol) if spin else scf.RHF(mol)
        else:
            mf = dft.UKS(mol) if spin else dft.RKS(mol)
        smear = scf.addons.smearing_
        label += f"/{basis}"
    if method == "dft":
        mf.xc = xc
    mf.conv_tol, mf.max_cycle = conv_tol, max_cycle
    for key, value in (scf_options or {}).items():
        setattr(mf, key, value)
    if electronic_temperature_K > 0:
        mf = smear(mf, sigma=kelvin_to_hartree(electronic_temperature_K), method="fermi")
    label += f", T_e = {electronic_temperature_K:g} K"
    mf.kernel()
    if not mf.converged:
        raise ValueError(
            f"density matrix: the {label} SCF of {atoms.get_chemical_formula()} did not converge in "
            f"{max_cycle} cycles to {conv_tol:g} Hartree (try a finite electronic_temperature_K, "
            "scf_options={'level_shift': 0.2} or a larger max_cycle)"
        )
    return decay_from_scf(
        mf, atoms, centres=centres, method=label, electronic_temperature_K=electronic_temperature_K,
        kmesh=kmesh if periodic else None, fit_window=fit_window,
    )  # fmt: skip


def _gap_eV(mo_energy: Any, n_electrons: int, restricted: bool) -> float:
    """Aufbau gap: the (N+1)-th minus the N-th lowest spin-orbital energy over all k-points, eV."""
    energies = np.concatenate([np.ravel(e) for e in mo_energy])  # molecule, spin channels or k-points
    spin_orbitals = np.sort(np.repeat(energies, 2) if restricted else energies)
    if not 0 < n_electrons < spin_orbitals.size:
        return float("nan")
    return float((spin_orbitals[n_electrons] - spin_orbitals[n_electrons - 1]) * ase_units.Hartree)


def decay_from_scf(
    mf: Any,
    atoms: Atoms,
    centres: Sequence[int] | None = None,
    method: str = "",
    electronic_temperature_K: float = 0.0,
    kmesh: Sequence[int] | None = None,
    fit_window: tuple[float | None, float | None] = (None, None),
) -> DensityMatrixDecay:
    """:class:`DensityMatrixDecay` of a converged PySCF mean-field object of ``atoms``.

    ``mf`` is a molecular SCF (RHF/RKS/UHF/UKS, smeared or not) or, with ``kmesh``, a k-point SCF
    (KRHF/KRKS) of the periodic cell ``atoms`` on that Monkhorst-Pack mesh.
    """
    idx = check_centres(atoms, centres, "density matrix")
    pos = atoms.positions
    dm = np.asarray(mf.make_rdm1())
    if kmesh is None:
        mol = mf.mol
        s = mol.intor_symmetric("int1e_ovlp")
        p = dm.sum(0) / 2.0 if dm.ndim == 3 else dm / 2.0  # one spin (mean of α and β)
        rho = lowdin_density_matrix(p, s)
        slices = [range(a0, a1) for _, _, a0, a1 in mol.aoslice_by_atom()]
        rows = []
        for a in idx:
            for b in range(len(atoms)):
                if b != a:
                    value = np.abs(rho[np.ix_(slices[a], slices[b])]).max()
                    rows.append((a, b, np.linalg.norm(pos[b] - pos[a]), value))
        gap = _gap_eV(mf.mo_energy, int(mol.nelectron), restricted=dm.ndim == 2)
    else:
        cell, kpts = mf.cell, np.asarray(mf.kpts)
        s_k = np.asarray(cell.pbc_intor("int1e_ovlp", hermi=1, kpts=kpts))
        rho_k = lowdin_density_matrix(dm / 2.0, s_k)  # [n_k, nao, nao]
        slices = [range(a0, a1) for _, _, a0, a1 in cell.aoslice_by_atom()]
        lattice = atoms.cell.array
        mesh = [int(m) for m in kmesh]
        super_shifts = np.array(list(itertools.product(*[(-m, 0, m) for m in mesh])))  # BvK images
        rows = []
        for n in itertools.product(*[range(m) for m in mesh]):
            t = np.asarray(n) @ lattice  # [3] Å
            phase = np.exp(-1j * (kpts @ (t / ase_units.Bohr)))  # kpts are in 1/Bohr
            rho_t = np.einsum("k,kij->ij", phase, rho_k) / len(kpts)
            for a in idx:
                for b in range(len(atoms)):
                    if b == a and not any(n):
                        continue
                    images = pos[b] + t + super_shifts @ lattice - pos[a]
                    r = float(np.linalg.norm(images, axis=1).min())
                    rows.append((a, b, r, np.abs(rho_t[np.ix_(slices[a], slices[b])]).max()))
        gap = _gap_eV(mf.mo_energy, int(cell.nelectron) * len(kpts), restricted=True)
    return DensityMatrixDecay(
        centres=np.array([r[0] for r in rows]),
        partners=np.array([r[1] for r in rows]),
        distances=np.array([r[2] for r in rows]),
        values=np.array([r[3] for r in rows]),
        method=method or type(mf).__name__,
        electronic_temperature_K=float(electronic_temperature_K),
        gap_eV=gap,
        formula=atoms.get_chemical_formula(),
        fit_window=fit_window,
    )
