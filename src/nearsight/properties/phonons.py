"""Phonons of a crystal by finite displacements (phonopy), for one model or a committee.

Each symmetry-distinct atom of a supercell is displaced by h (Å) and the forces on every atom give the
force constants (Parlinski, Li & Kawazoe, PRL 78, 4063 (1997); Togo & Tanaka, Scr. Mater. 108, 1 (2015)):

    Φ_{iα,jβ} = ∂²E / ∂u_iα ∂u_jβ ≈ −[F_jβ(u_iα = h) − F_jβ(0)] / h

F(0), the forces of the undisplaced supercell, is subtracted (phonopy's ``--fz``): it removes the
first-order error of a structure relaxed only to ``fmax``. The dynamical matrix of the primitive cell,

    D_{κα,κ'β}(q) = Σ_l Φ_{0κα,lκ'β} exp(2πi q·(r_lκ' − r_0κ)) / √(m_κ m_κ'),

has eigenvalues ω² = (2πν)²; frequencies ν are in THz (phonopy's convention; 1 THz = 33.356 cm⁻¹
= 4.1357 meV), and an imaginary frequency is reported as the negative number −|ν|. A translation of
the whole crystal costs no energy, so the force constants obey the acoustic sum rule
Σ_j Φ_{iα,jβ} = 0 and three frequencies vanish at Γ.

The supercell must be wide enough that a displaced atom does not feel its own periodic images: its
perpendicular widths must reach the model's interaction range (2 × layers × r_c,
:func:`~nearsight.properties.common.interaction_range`). Frequencies are then exact at q-points
commensurate with the supercell and interpolated between them (exactly, once the widths reach twice
the range). The band path is the standard one of seekpath (Hinuma et al., Comput. Mater. Sci. 128,
140 (2017)) expressed in the reciprocal basis of the primitive cell phonopy uses.

    from nearsight.properties.phonons import compute_phonons
    result = compute_phonons(atoms, "model.pt")             # or any ASE calculator
    result.frequencies_at([[0, 0, 0], [0.5, 0, 0.5]])       # THz, reduced q of result.primitive
    result.thermal_properties([300.0]); result.plot("phonons.png"); result.save("phonopy_params.yaml")
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import Calculator

from .common import (
    ModelLike,
    as_calculators,
    committee_spread,
    interaction_range,
    over_members,
    perpendicular_widths,
    require_periodic,
    require_relaxed,
)

THZ_TO_CM1 = 33.35640951981521  # 1 THz / c in cm⁻¹
DEFAULT_WIDTH = 10.0  # Å: supercell widths when the calculator's interaction range is unknown
KJ_PER_MOL = units.kJ / units.mol  # eV per (kJ/mol), phonopy's energy unit
J_PER_K_MOL = units.J / units.mol  # eV/K per (J/K/mol), phonopy's entropy unit


@dataclass
class PhononBands:
    """Frequencies along the standard band path, one entry per straight segment.

    ``q_points[s]`` ``[n, 3]`` (reduced, primitive reciprocal basis), ``distances[s]`` ``[n]``
    (cumulative path length, Å⁻¹ without the 2π), ``frequencies[s]`` ``[n, 3 N_prim]`` (THz, ascending),
    ``labels[s]`` the (start, end) point names, ``points`` each name's reduced q-point."""

    q_points: list[np.ndarray]
    distances: list[np.ndarray]
    frequencies: list[np.ndarray]
    labels: list[tuple[str, str]]
    points: dict[str, np.ndarray]

    def at(self, label: str) -> np.ndarray:
        """Frequencies (THz) at the first end of a segment named ``label``."""
        for (start, end), freqs in zip(self.labels, self.frequencies):
            if start == label:
                return freqs[0]
            if end == label:
                return freqs[-1]
        raise ValueError(f"{label!r} is not on the band path (its points: {sorted(self.points)})")


@dataclass
class PhononResult:
    """Force constants of one calculator, held in ``phonopy`` (a ``phonopy.Phonopy``), and what follows
    from them. Energies are per primitive cell (``primitive``, the cell phonopy found), in eV."""

    phonopy: Any
    supercell_matrix: np.ndarray
    displacement: float
    interaction_range: float | None
    _paths: dict[str, Any] = field(default_factory=dict, init=False, repr=False)

    @property
    def primitive(self) -> Atoms:
        """The primitive cell whose reciprocal basis reduced q-points refer to."""
        return _to_ase(self.phonopy.primitive)

    @property
    def force_constants(self) -> np.ndarray:
        """Φ ``[N_s, N_s, 3, 3]`` (eV/Å²) over the atoms of the supercell."""
        return np.asarray(self.phonopy.force_constants)

    def frequencies_at(self, q_points: Any, cartesian: bool = False) -> np.ndarray:
        """Frequencies ``[n_q, 3 N_prim]`` (THz, ascending, imaginary as negative) at ``q_points``:
        reduced coordinates of the primitive reciprocal lattice, or with ``cartesian`` Å⁻¹ without
        the 2π (q·r counts cycles), the convention in which q_reduced = q_cart · A for primitive cell A."""
        q = np.atleast_2d(np.asarray(q_points, dtype=float))
        if q.shape[1:] != (3,):
            raise ValueError(f"q_points must be [n, 3], got shape {np.shape(q_points)}")
        if cartesian:
            q = q @ np.asarray(self.phonopy.primitive.cell).T
        return np.array(self.phonopy.run_qpoints(q).frequencies)

    def frequencies_cm1_at(self, q_points: Any, cartesian: bool = False) -> np.ndarray:
        """:meth:`frequencies_at` in cm⁻¹ (wavenumbers: ν/c)."""
        return self.frequencies_at(q_points, cartesian) * THZ_TO_CM1

    def high_symmetry_path(self) -> dict[str, Any]:
        """seekpath's standard path of the primitive cell with its points in this cell's reciprocal
        basis (``seekpath.get_path_orig_cell`` undoes seekpath's standardisation of the cell):
        ``{"point_coords": {label: q}, "path": [(start, end), ...], ...}``; Γ is named ``Gamma``."""
        if "seekpath" not in self._paths:
            import seekpath

            raw = seekpath.get_path_orig_cell(self.phonopy.primitive.totuple())
            rename = {"GAMMA": "Gamma"}
            raw["point_coords"] = {rename.get(k, k): np.array(v) for k, v in raw["point_coords"].items()}
            raw["path"] = [(rename.get(a, a), rename.get(b, b)) for a, b in raw["path"]]
            self._paths["seekpath"] = raw
        return self._paths["seekpath"]

    def band_structure(self, npoints: int = 51) -> PhononBands:
        """Frequencies along the standard path, ``npoints`` per segment (both ends included)."""
        if npoints < 2:
            raise ValueError(f"npoints must be at least 2, got {npoints}")
        path = self.high_symmetry_path()
        points = path["point_coords"]
        reciprocal = np.linalg.inv(np.asarray(self.phonopy.primitive.cell)).T  # rows b_i, b_i·a_j = δ_ij
        qs, dists, start = [], [], 0.0
        for a, b in path["path"]:
            q = points[a] + np.linspace(0.0, 1.0, npoints)[:, None] * (points[b] - points[a])
            step = np.linalg.norm(np.diff(q @ reciprocal, axis=0), axis=1)
            dists.append(start + np.concatenate([[0.0], np.cumsum(step)]))
            start = float(dists[-1][-1])
            qs.append(q)
        freqs = list(self.frequencies_at(np.concatenate(qs)).reshape(len(qs), npoints, -1))
        return PhononBands(qs, dists, freqs, list(path["path"]), dict(points))

    def dos(
        self,
        mesh: Sequence[int] = (20, 20, 20),
        freq_min: float | None = None,
        freq_max: float | None = None,
        freq_pitch: float | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Density of states g(ν) = Σ_qj δ(ν − ν_qj) / N_q on a Γ-centred ``mesh`` (tetrahedron method):
        frequencies (THz) and states/THz per primitive cell (∫ g dν = 3 N_prim)."""
        self._run_mesh(mesh)
        self.phonopy.run_total_dos(freq_min=freq_min, freq_max=freq_max, freq_pitch=freq_pitch)
        total = self.phonopy.total_dos
        return np.array(total.frequency_points), np.array(total.dos)

    def thermal_properties(
        self, temperatures_K: Sequence[float], mesh: Sequence[int] = (20, 20, 20)
    ) -> dict[str, np.ndarray]:
        """Harmonic thermodynamics per primitive cell on a Γ-centred ``mesh`` (x = hν / k_B T):

            F = Σ_qj [hν/2 + k_B T ln(1 − e^{−x})] / N_q        (eV, ``free_energy_eV``)
            S = −∂F/∂T                                         (eV/K, ``entropy_eV_per_K``)
            C_V = Σ_qj k_B x² e^x / (e^x − 1)² / N_q             (eV/K, ``heat_capacity_eV_per_K``)

        Imaginary modes are left out (phonopy's rule), and so are the three acoustic modes at Γ, whose
        ν ≈ 0 would otherwise add k_B T ln x → −∞ (by ~5 meV per cell at 300 K for ν ~ 1e-6 THz)
        depending on the sign of round-off."""
        temps = np.atleast_1d(np.asarray(temperatures_K, dtype=float))
        if np.any(temps < 0) or not np.all(np.isfinite(temps)):
            raise ValueError(f"temperatures_K must be finite and ≥ 0, got {temps.tolist()}")
        self._run_mesh(mesh)
        self.phonopy.run_thermal_properties(temperatures=temps, exclude_gamma_acoustic=True)
        tp = self.phonopy.thermal_properties
        return {
            "temperature_K": np.array(tp.temperatures),
            "free_energy_eV": np.array(tp.free_energy) * KJ_PER_MOL,
            "entropy_eV_per_K": np.array(tp.entropy) * J_PER_K_MOL,
            "heat_capacity_eV_per_K": np.array(tp.heat_capacity) * J_PER_K_MOL,
        }

    def imaginary_modes(
        self, tol: float = 0.05, mesh: Sequence[int] = (8, 8, 8), npoints: int = 21
    ) -> list[dict[str, Any]]:
        """Modes with ν < −``tol`` (THz) on the band path and a Γ-centred ``mesh``: one entry each,
        ``{"q_point": reduced q, "branch": index (ascending order), "frequency_THz": ν < 0}``."""
        bands = self.band_structure(npoints)
        self._run_mesh(mesh)
        q = np.concatenate([*bands.q_points, np.array(self.phonopy.mesh.qpoints)])
        freqs = np.concatenate([*bands.frequencies, np.array(self.phonopy.mesh.frequencies)])
        found: dict[tuple, dict[str, Any]] = {}  # keyed by q-point and branch: each mode once
        for i, j in zip(*np.nonzero(freqs < -tol)):
            mode = {"q_point": q[i].tolist(), "branch": int(j), "frequency_THz": float(freqs[i, j])}
            found.setdefault((*np.round(q[i], 6), int(j)), mode)
        return list(found.values())

    def summary(self, mesh: Sequence[int] = (20, 20, 20), tol: float = 0.05) -> dict[str, Any]:
        """Plain numbers for JSON and :func:`~nearsight.properties.common.committee_spread`: frequencies
        (THz) at each point of the band path (``frequencies_THz_Gamma``, ``frequencies_THz_X``, ...), the
        thermal properties at 300 K per primitive cell, and the number of imaginary modes (ν < −tol THz
        on the path and an 8×8×8 mesh)."""
        path = self.high_symmetry_path()
        labels = list(dict.fromkeys(label for pair in path["path"] for label in pair))
        freqs = self.frequencies_at(np.array([path["point_coords"][k] for k in labels]))
        thermal = self.thermal_properties([300.0], mesh)
        out: dict[str, Any] = {f"frequencies_THz_{k}": f.tolist() for k, f in zip(labels, freqs)}
        out.update({f"{k}_300K": float(v[0]) for k, v in thermal.items() if k != "temperature_K"})
        out["n_imaginary_modes"] = len(self.imaginary_modes(tol))
        out["n_atoms_primitive"] = len(self.phonopy.primitive)
        out["supercell_matrix"] = self.supercell_matrix.tolist()
        out["high_symmetry_points"] = {k: path["point_coords"][k].tolist() for k in labels}
        return out

    def plot(
        self,
        path: str | Path,
        npoints: int = 51,
        mesh: Sequence[int] = (20, 20, 20),
        title: str | None = None,
    ) -> Path:
        """A PNG of the band structure and the DOS side by side."""
        from .phonon_plot import plot_phonons

        return plot_phonons([self], path, npoints=npoints, mesh=mesh, title=title)

    def save(self, path: str | Path = "phonopy_params.yaml") -> Path:
        """phonopy's ``phonopy_params.yaml``: cells, displacements, forces and force constants, which
        ``phonopy.load`` (and the phonopy command) read back."""
        path = Path(path)
        self.phonopy.save(str(path), settings={"force_constants": True})
        return path

    def _run_mesh(self, mesh: Sequence[int]) -> None:
        grid = [int(n) for n in mesh]
        if len(grid) != 3 or min(grid) < 1:
            raise ValueError(f"mesh must be three positive integers, got {list(mesh)}")
        self.phonopy.run_mesh(grid, is_gamma_center=True)


@dataclass
class CommitteePhonons:
    """Each member's :class:`PhononResult` and summary, and per summary entry the members' mean and σ."""

    members: list[PhononResult]
    summaries: list[dict[str, Any]]
    spread: dict[str, dict[str, Any]]

    def plot(
        self,
        path: str | Path,
        npoints: int = 51,
        mesh: Sequence[int] = (20, 20, 20),
        title: str | None = None,
    ) -> Path:
        """Bands and DOS: the members' mean with a shaded ± σ band (one member: its lines)."""
        from .phonon_plot import plot_phonons

        return plot_phonons(self.members, path, npoints=npoints, mesh=mesh, title=title)


def compute_phonons(
    atoms: Atoms,
    calc: Calculator | ModelLike,
    supercell: int | Sequence[int] | Sequence[Sequence[int]] | None = None,
    displacement: float = 0.01,
    primitive: str | Sequence[Sequence[float]] = "auto",
    fmax: float = 1e-3,
    check_relaxed: bool = True,
    symmetrize: bool = False,
    where: str = "the structure",
) -> PhononResult:
    """Force constants of ``atoms`` (a relaxed crystal) with ``calc`` by displacements of
    ``displacement`` Å in a supercell of the given cell.

    ``supercell``: None picks the smallest diagonal multiple whose perpendicular widths reach the
    interaction range (≥ 10 Å, with a warning, where the range is unknown: EMT, a long-range model);
    an int, three ints (diagonal) or a 3×3 integer matrix is used as given, after checking its widths.
    ``primitive``: phonopy's primitive matrix ("auto" from symmetry, "P" for the given cell, or a
    matrix). ``check_relaxed`` stops when a force exceeds ``fmax`` eV/Å. ``symmetrize`` imposes the
    sum rule and index symmetry on Φ (phonopy's ``symmetrize_force_constants``). ``where`` names the
    structure in error messages."""
    from phonopy import Phonopy
    from phonopy.structure.cells import PrimitiveMatrixAutoDefaultWarning

    calc = as_calculators(calc)[0]
    require_periodic(atoms, "phonons", where)
    if not (displacement > 0 and math.isfinite(displacement)):
        raise ValueError(f"{where}: the displacement must be a positive length (Å), got {displacement!r}")
    if check_relaxed:
        probe = atoms.copy()
        probe.calc = calc
        require_relaxed(probe, fmax, "phonons", where)
    reach = interaction_range(calc)
    matrix = _supercell_matrix(supercell, atoms.cell.array, reach, where)
    unitcell = _to_phonopy(atoms)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PrimitiveMatrixAutoDefaultWarning)
        phonon = Phonopy(unitcell, supercell_matrix=matrix, primitive_matrix=primitive, log_level=0)
    widths = perpendicular_widths(np.asarray(phonon.supercell.cell))
    if reach is not None and widths.min() < reach - 1e-6:
        raise ValueError(
            f"{where}: the supercell {matrix.tolist()} is too small for phonons: its perpendicular widths "
            f"{np.round(widths, 3).tolist()} Å are below the model's interaction range {reach:g} Å "
            "(2 × layers × cutoff); a displaced atom would feel its own periodic images. Use a larger "
            "supercell, or give none (supercell=None, no --supercell) to have one chosen"
        )
    phonon.generate_displacements(distance=float(displacement))
    reference = _forces(phonon.supercell, calc)
    phonon.forces = np.array([_forces(s, calc) - reference for s in phonon.supercells_with_displacements])
    phonon.produce_force_constants(calculate_full_force_constants=True)
    if symmetrize:
        phonon.symmetrize_force_constants()
    return PhononResult(phonon, matrix, float(displacement), reach)


def committee_phonons(
    atoms: Atoms,
    calcs: Sequence[Calculator | ModelLike],
    mesh: Sequence[int] = (20, 20, 20),
    **kwargs: Any,
) -> CommitteePhonons:
    """:func:`compute_phonons` (``kwargs``) once per committee member, and the mean and σ over members
    of each entry of their :meth:`PhononResult.summary` on ``mesh`` (e.g. ``frequencies_THz_X`` ± σ
    per branch, the branches of each member in ascending order)."""
    members = over_members(compute_phonons, atoms, as_calculators(list(calcs)), **kwargs)
    summaries = [m.summary(mesh) for m in members]
    return CommitteePhonons(members, summaries, committee_spread(summaries))


def _supercell_matrix(
    supercell: int | Sequence[int] | Sequence[Sequence[int]] | None,
    cell: np.ndarray,
    reach: float | None,
    where: str,
) -> np.ndarray:
    """The 3×3 integer supercell matrix: as given, or the smallest diagonal one wide enough."""
    if supercell is None:
        target = DEFAULT_WIDTH if reach is None else reach
        if reach is None:
            warnings.warn(
                f"{where}: the calculator's interaction range is unknown (not a local nearsight model), so "
                f"the phonon supercell is the smallest whose widths reach {DEFAULT_WIDTH:g} Å; give "
                "supercell= to choose it",
                stacklevel=3,
            )
        counts = np.maximum(1, np.ceil(target / perpendicular_widths(cell) - 1e-9)).astype(int)
        return np.diag(counts)
    try:
        raw = np.asarray(supercell, dtype=float)
    except (TypeError, ValueError):
        raw = np.full(1, np.nan)
    if raw.ndim == 0:
        raw = np.full(3, raw)
    if raw.shape not in ((3,), (3, 3)) or not np.all(np.mod(raw, 1) == 0):
        raise ValueError(
            f"{where}: supercell must be an integer, three integers or a 3×3 integer matrix, got {supercell!r}"
        )
    matrix = np.diag(raw) if raw.ndim == 1 else raw
    matrix = matrix.astype(int)
    if np.linalg.det(matrix) < 0.5:
        raise ValueError(f"{where}: supercell {matrix.tolist()} must have a positive determinant")
    return matrix


def _to_phonopy(atoms: Atoms) -> Any:
    from phonopy.structure.atoms import PhonopyAtoms

    return PhonopyAtoms(
        symbols=atoms.get_chemical_symbols(),
        cell=atoms.cell.array,
        scaled_positions=atoms.get_scaled_positions(wrap=False),
        masses=atoms.get_masses(),
    )


def _to_ase(cell: Any) -> Atoms:
    return Atoms(
        numbers=cell.numbers,
        cell=cell.cell,
        scaled_positions=cell.scaled_positions,
        masses=cell.masses,
        pbc=True,
    )


def _forces(cell: Any, calc: Calculator) -> np.ndarray:
    """Forces ``[N_s, 3]`` (eV/Å) of a phonopy supercell from the ASE calculator."""
    atoms = _to_ase(cell)
    atoms.calc = calc
    return np.array(atoms.get_forces(), dtype=float)
