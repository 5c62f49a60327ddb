"""Minimum-energy paths and barriers: the nudged elastic band (NEB) through ASE's ``ase.mep.NEB``.

A band of images R_0 … R_{M+1} joins the initial state R_0 and the final state R_{M+1}; each interior
image feels the component of the true force F_i = −∇E(R_i) perpendicular to the path tangent τ_i plus
a spring force along it,

    F_i^NEB = F_i − (F_i·τ_i) τ_i + k (|R_{i+1} − R_i| − |R_i − R_{i−1}|) τ_i,

with the improved tangent of Henkelman & Jónsson, J. Chem. Phys. 113, 9978 (2000) (``method =
"improvedtangent"``, the default; ``"aseneb"`` is ASE's older variant). With ``climb`` the highest
image i* instead feels F − 2 (F·τ) τ, no spring (Henkelman, Uberuaga & Jónsson, J. Chem. Phys. 113,
9901 (2000)): it climbs up along the path and down across it, so at convergence (every |F_i^NEB| <
``fmax``) it sits at the saddle point and E(R_{i*}) is the barrier top, not an interpolation.

The band starts from the image-dependent pair potential path (``interpolate="idpp"``, Smidstrup et
al., J. Chem. Phys. 140, 214106 (2014)) or a straight line (``"linear"``), both with the
minimum-image convention in periodic directions: each atom of the final state is moved by lattice
vectors to its nearest image of the initial one (the same structure; a displacement of exactly half a
cell goes either way). The end points are relaxed first (positions only, the cell fixed) unless
``relax_endpoints=False``. Barriers: E_f = E(saddle) − E(R_0) forward and
E_b = E(saddle) − E(R_{M+1}) backward (eV); ``ase.utils.forcecurve.fit_images`` (what ``NEBTools``
plots) interpolates E along the path with cubic pieces that match the tangential forces.

Each interior image needs its own calculator: a model file or a torch module gives one
``NearsightCalculator`` per image, a callable (``EMT``, ``lambda: NearsightCalculator(path)``) is
called once per image, and a single ASE calculator instance is shared by all images (correct, as ASE
recomputes whenever the positions change; slower for calculators that cache more than one state).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import BaseCalculator
from ase.calculators.singlepoint import SinglePointCalculator

NEB_METHODS = ("improvedtangent", "aseneb")
INTERPOLATIONS = ("idpp", "linear")


@dataclass
class NEBResult:
    """A converged (or not: ``converged``) band.

    ``images``: the band R_0 … R_{M+1}, each with a ``SinglePointCalculator`` holding its energy and
    forces; ``energies`` [M + 2] eV; ``path`` [M + 2] the distance along the band (Å, Σ|R_{i+1} − R_i|
    over all atoms); ``fit_path``/``fit_energies`` the smooth profile of ``fit_images`` (Å, eV
    relative to R_0); ``saddle_index`` the highest interior image (the climbing image with
    ``climb``); ``saddle_max_force`` the largest |F_i| of the true (constrained) forces there and
    ``max_neb_force`` the largest NEB force of the band (eV/Å).
    """

    images: list[Atoms]
    energies: np.ndarray
    path: np.ndarray
    fit_path: np.ndarray
    fit_energies: np.ndarray
    saddle_index: int
    saddle_max_force: float
    max_neb_force: float
    converged: bool
    n_steps: int
    fmax: float
    climb: bool
    method: str
    endpoints_relaxed: bool

    @property
    def barrier_forward(self) -> float:
        """E(saddle) − E(initial), eV."""
        return float(self.energies[self.saddle_index] - self.energies[0])

    @property
    def barrier_backward(self) -> float:
        """E(saddle) − E(final), eV."""
        return float(self.energies[self.saddle_index] - self.energies[-1])

    @property
    def reaction_energy(self) -> float:
        """E(final) − E(initial), eV."""
        return float(self.energies[-1] - self.energies[0])

    @property
    def fit_barrier_forward(self) -> float:
        """The maximum of the fitted profile above E(initial), eV (``NEBTools.get_barrier()``)."""
        return float(np.max(self.fit_energies))

    @property
    def saddle(self) -> Atoms:
        return self.images[self.saddle_index]

    def summary(self) -> dict[str, Any]:
        """Plain numbers for JSON: energies in eV, distances in Å, forces in eV/Å."""
        return {
            "barrier_forward": self.barrier_forward,
            "barrier_backward": self.barrier_backward,
            "reaction_energy": self.reaction_energy,
            "fit_barrier_forward": self.fit_barrier_forward,
            "saddle_index": self.saddle_index,
            "saddle_energy": float(self.energies[self.saddle_index]),
            "saddle_max_force": self.saddle_max_force,
            "max_neb_force": self.max_neb_force,
            "energies": self.energies.tolist(),
            "relative_energies": (self.energies - self.energies[0]).tolist(),
            "path": self.path.tolist(),
            "converged": self.converged,
            "n_steps": self.n_steps,
            "fmax": self.fmax,
            "climb": self.climb,
            "method": self.method,
            "n_images": len(self.images) - 2,
            "endpoints_relaxed": self.endpoints_relaxed,
        }

    def write_trajectory(self, path: str | os.PathLike) -> Path:
        """The band as an ASE trajectory (energies and forces included), written atomically."""
        import ase.io

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
        ase.io.write(tmp, self.images, format="traj")
        tmp.replace(path)
        return path

    def plot(self, path: str | os.PathLike) -> Path:
        """A PNG of the energy profile: images, the fitted curve and its tangents, the saddle marked
        (matplotlib's Agg canvas, no global backend), written atomically."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        from .._files import atomic_write

        fig = Figure(figsize=(5.0, 3.6), layout="constrained")
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        relative = self.energies - self.energies[0]
        ax.plot(self.fit_path, self.fit_energies, "k-", lw=1, label="fit (tangential forces)")
        ax.plot(self.path, relative, "o", color="C0", label="images")
        s = self.saddle_index
        label = "climbing image" if self.climb else "highest image"
        ax.plot(self.path[s], relative[s], "*", color="C3", ms=12, label=label)
        ax.set_xlabel("path (Å)")
        ax.set_ylabel("E − E(initial) (eV)")
        ax.set_title(
            f"E_f = {self.barrier_forward:.3f} eV, E_b = {self.barrier_backward:.3f} eV, "
            f"ΔE = {self.reaction_energy:.3f} eV" + ("" if self.converged else " (not converged)"),
            fontsize=9,
        )
        ax.legend(fontsize=8)
        return atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=110), mode="wb")


CalculatorSource = Any  # a model file, a torch module, an ASE calculator, or a callable returning one


def calculator_factory(
    source: CalculatorSource, dtype: str = "float64", device: str = "cpu"
) -> tuple[Callable[[], BaseCalculator], bool]:
    """``(make, shared)``: ``make()`` returns a calculator for one image, ``shared`` says whether it
    returns the same one every time (a calculator instance was given)."""
    import sys

    if isinstance(source, BaseCalculator):
        return (lambda: source), True
    torch_module = "torch" in sys.modules and isinstance(source, sys.modules["torch"].nn.Module)
    if isinstance(source, (str, os.PathLike)) or torch_module:  # (no torch module without torch imported)
        if not torch_module and not Path(source).is_file():
            raise ValueError(f"model file {str(source)!r} does not exist")
        from ..calculator import NearsightCalculator

        return (lambda: NearsightCalculator(source, dtype=dtype, device=device)), False
    if callable(source):

        def make() -> BaseCalculator:
            calc = source()
            if not isinstance(calc, BaseCalculator):
                raise TypeError(f"the calculator factory {source!r} returned {calc!r}, not an ASE calculator")
            return calc

        return make, False
    raise TypeError(
        f"a model file, a torch module, an ASE calculator or a callable returning one is needed, got {source!r}"
    )


def check_end_points(initial: Atoms, final: Atoms, names: tuple[str, str] = ("initial", "final")) -> None:
    """Refuse end points that cannot be joined by a band: other atoms, another order, other
    periodic directions or another cell (this NEB keeps the cell fixed), or the same positions."""
    a, b = names
    if len(initial) != len(final):
        raise ValueError(f"NEB end points differ in size: {a} has {len(initial)} atoms, {b} {len(final)}")
    differ = np.flatnonzero(initial.numbers != final.numbers)
    if len(differ):
        i = int(differ[0])
        raise ValueError(
            f"NEB end points differ at atom {i}: {initial[i].symbol} in {a}, {final[i].symbol} in {b} "
            f"({len(differ)} atoms differ); the band needs the same atoms in the same order"
        )
    if np.any(initial.pbc != final.pbc):
        raise ValueError(
            f"NEB end points differ in periodicity: pbc {initial.pbc.tolist()} in {a}, {final.pbc.tolist()} in {b}"
        )
    periodic = initial.pbc
    gap = np.abs(initial.cell.array - final.cell.array)[periodic]
    if gap.size and gap.max() > 1e-6:
        raise ValueError(
            f"NEB end points have different cells (rows differ by up to {gap.max():.3g} Å): {a} "
            f"{np.round(initial.cell.array, 6).tolist()}, {b} {np.round(final.cell.array, 6).tolist()}; "
            "this NEB keeps the cell fixed"
        )
    from ase.geometry import find_mic

    shift, length = find_mic(final.positions - initial.positions, initial.cell, initial.pbc)
    if length.max() < 1e-3:
        raise ValueError(
            f"NEB end points {a} and {b} have the same positions (largest shift {length.max():.2g} Å)"
        )


def run_neb(
    initial: Atoms,
    final: Atoms,
    calculator: CalculatorSource,
    *,
    n_images: int = 7,
    climb: bool = True,
    fmax: float = 0.05,
    steps: int = 1000,
    method: str = "improvedtangent",
    interpolate: str = "idpp",
    spring_constant: float = 0.1,
    optimizer: str = "FIRE",
    relax_endpoints: bool = True,
    endpoint_fmax: float | None = None,
    trajectory: str | os.PathLike | None = None,
    logfile: str | None = None,
    dtype: str = "float64",
    device: str = "cpu",
    names: tuple[str, str] = ("the initial state", "the final state"),
) -> NEBResult:
    """A nudged elastic band of ``n_images`` interior images between ``initial`` and ``final``.

    ``calculator``: a model file or torch module (one ``NearsightCalculator`` per image, in
    ``dtype`` on ``device``), a callable returning an ASE calculator (called per image), or one
    calculator shared by the images. ``fmax`` (eV/Å) bounds every NEB force at convergence,
    ``spring_constant`` k (eV/Å²), ``optimizer`` one of BFGS, FIRE, LBFGS run for at most ``steps``;
    the end points are relaxed to ``endpoint_fmax`` (default ``fmax``) with the same optimiser
    unless ``relax_endpoints=False`` (a relaxation that does not converge is an error).
    ``trajectory`` records the band at every step (ASE's ``NEBTools`` reads it), ``logfile`` the
    optimiser's log. A band that reaches ``steps`` returns with ``converged=False``. ``names`` name
    the end points in error messages. Constraints of ``initial`` (e.g. ``FixAtoms`` on the bottom of
    a slab) hold on every interior image.
    """
    from ase import optimize
    from ase.mep import NEB
    from ase.utils.forcecurve import fit_images

    from ..properties.relax import OPTIMIZERS, relax

    if n_images < 1 or not fmax > 0 or steps < 0 or not spring_constant > 0:
        raise ValueError(
            f"need n_images ≥ 1, fmax > 0, steps ≥ 0 and spring_constant > 0; got {n_images}, {fmax}, "
            f"{steps}, {spring_constant}"
        )
    for what, value, allowed in (
        ("method", method, NEB_METHODS),
        ("interpolate", interpolate, INTERPOLATIONS),
        ("optimizer", optimizer, OPTIMIZERS),
    ):
        if value not in allowed:
            raise ValueError(f"{what} {value!r}: must be one of {', '.join(allowed)}")
    check_end_points(initial, final, names)
    make, shared = calculator_factory(calculator, dtype=dtype, device=device)
    ends = []
    for atoms, name in zip((initial, final), names):
        calc = make()
        if relax_endpoints:
            relaxed = relax(
                atoms,
                calc,
                fmax=endpoint_fmax or fmax,
                cell=False,
                steps=max(steps, 1),
                optimizer=optimizer,
                where=name,
            )
            relaxed.require_converged(name)
            ends.append(relaxed.atoms)  # a copy holding the final energy and forces
        else:
            ends.append(_frozen(atoms, calc))
    band = [ends[0]] + [_bare(ends[0]) for _ in range(n_images)] + [_unwrapped(ends[1], ends[0])]
    for image in band[1:-1]:
        image.calc = make()
    neb = NEB(band, k=spring_constant, climb=climb, method=method, allow_shared_calculator=shared)
    neb.interpolate(method=interpolate, mic=False, apply_constraint=False)  # final: unwrapped already
    with getattr(optimize, optimizer)(
        neb, logfile=logfile, trajectory=None if trajectory is None else str(trajectory)
    ) as opt:  # ASE opens the trajectory at each write; the context closes the log
        converged = bool(opt.run(fmax=fmax, steps=steps))
    neb_forces = neb.get_forces()  # [M·N, 3], the last band (cached)
    images = [band[0]] + [_frozen(image, image.calc) for image in band[1:-1]] + [band[-1]]
    energies = np.array([image.get_potential_energy() for image in images])
    fit = fit_images(images)
    saddle = 1 + int(np.argmax(energies[1:-1]))
    saddle_forces = images[saddle].get_forces()  # constraints applied: fixed atoms feel none
    return NEBResult(
        images=images,
        energies=energies,
        path=np.asarray(fit.path, dtype=float),
        fit_path=np.asarray(fit.fit_path, dtype=float),
        fit_energies=np.asarray(fit.fit_energies, dtype=float),
        saddle_index=saddle,
        saddle_max_force=float(np.linalg.norm(saddle_forces, axis=1).max()),
        max_neb_force=float(np.linalg.norm(neb_forces, axis=1).max()),
        converged=converged,
        n_steps=int(opt.nsteps),
        fmax=float(fmax),
        climb=bool(climb),
        method=method,
        endpoints_relaxed=bool(relax_endpoints),
    )


def _unwrapped(final: Atoms, initial: Atoms) -> Atoms:
    """``final`` (a single point) with each atom moved by lattice vectors to its minimum image
    relative to ``initial``: the same structure, energy and forces, and a band without jumps across
    the cell, so the interpolation, the path length and the tangents of the fitted profile all see
    the short way."""
    from ase.geometry import find_mic

    shift, _ = find_mic(final.positions - initial.positions, initial.cell, initial.pbc)
    moved = _bare(final)
    moved.positions = initial.positions + shift
    moved.calc = SinglePointCalculator(moved, **final.calc.results)
    return moved


def _bare(atoms: Atoms) -> Atoms:
    """A copy without calculator (constraints kept)."""
    copy = atoms.copy()
    copy.calc = None
    return copy


def _frozen(atoms: Atoms, calc: BaseCalculator) -> Atoms:
    """A copy holding ``calc``'s energy and raw (unconstrained) forces at ``atoms`` as a single point."""
    work = _bare(atoms)
    work.calc = calc
    energy = float(work.get_potential_energy())
    forces = work.get_forces(apply_constraint=False)
    work.calc = SinglePointCalculator(work, energy=energy, free_energy=energy, forces=forces)
    return work
