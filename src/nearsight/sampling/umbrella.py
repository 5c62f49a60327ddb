"""Umbrella sampling along one CV and its MBAR analysis into a free-energy profile with error bars.

Windows (Kästner, WIREs Comput. Mol. Sci. 1, 932 (2011)): window i adds V_i(s) = k_i/2 (s - s_i)²
to the potential and runs Langevin MD (ASE) from the final state of window i - 1, first
``equilibration_steps`` unrecorded, then ``steps`` steps recording s every ``sample_interval``.
Each finished window is written atomically to ``output_dir/window_NNN.npz`` (its CV series and final
positions and momenta); window i draws its noise from ``default_rng([seed, i])``, so a run killed in
window i and resumed (``resume=True``) repeats window i from the same state and gives the same
profile as an uninterrupted run.

Analysis (Shirts & Chodera, J. Chem. Phys. 129, 124105 (2008)): each window's series is
decorrelated with its statistical inefficiency g (``pymbar.timeseries``), MBAR solves for the window
free energies f_i from u_i(s_n) = V_i(s_n)/k_BT of all samples, and the unbiased profile is
F_b = -k_BT ln(p_b/Δs_b), p_b = Σ_{n in bin b} w_n with w_n ∝ 1/Σ_i N_i exp(f_i - u_i(s_n)).  Each
bin is an MBAR "state" (u = 0 inside the bin, ∞ outside), so its uncertainty relative to the
lowest bin comes from MBAR's asymptotic covariance, including the uncertainty of the f_i.

Overlap: MBAR's overlap matrix O (row-stochastic; O_ij the probability that a sample of window i
is attributed to window j) must have O_ij >= ``min_overlap`` for neighbouring windows i, j (by
centre).  Otherwise the profile between them is not determined by the data: by default a
``ValueError`` names the pair, its centres and O_ij (``on_poor_overlap="warn"`` warns instead).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import Calculator

from .._files import atomic_write
from ._run import check_md, draw_velocities, langevin, start_run, structure_fingerprint
from .bias import BiasedCalculator, HarmonicBias
from .colvars import CollectiveVariable, wrap_periodic


@contextlib.contextmanager
def quiet_pymbar():
    """Import pymbar without its import-time notices (no JAX, timeseries caveat) on stderr."""
    logger = logging.getLogger("pymbar")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


@dataclass
class UmbrellaWindow:
    """One window: its bias and the CV values sampled in it (after equilibration)."""

    index: int
    centre: float
    k: float  # eV per CV unit²
    cv: np.ndarray  # [n_samples, n_walkers] (a 1-D series is one walker)
    period: float | None = None

    def __post_init__(self) -> None:
        cv = np.asarray(self.cv, dtype=float)
        self.cv = cv.reshape(-1, 1) if cv.ndim == 1 else cv

    def bias(self, s: np.ndarray) -> np.ndarray:
        """V_i(s) = k/2 (s - s_i)² in eV, wrapped for a periodic CV."""
        return 0.5 * self.k * wrap_periodic(np.asarray(s) - self.centre, self.period) ** 2


def _window_path(output_dir: Path, i: int) -> Path:
    return output_dir / f"window_{i:03d}.npz"


def _save_window(path: Path, window: UmbrellaWindow, atoms: Atoms) -> None:
    buffer = io.BytesIO()
    np.savez(
        buffer,
        index=window.index,
        centre=window.centre,
        k=window.k,
        cv=window.cv,
        period=np.nan if window.period is None else window.period,
        positions=atoms.positions,
        momenta=atoms.get_momenta(),
    )
    atomic_write(path, lambda fh: fh.write(buffer.getvalue()), mode="wb")


def load_window(path: str | Path) -> tuple[UmbrellaWindow, np.ndarray, np.ndarray]:
    """A window file: the window, and the final positions and momenta of its MD."""
    try:
        with np.load(path) as d:
            period = float(d["period"])
            window = UmbrellaWindow(
                int(d["index"]), float(d["centre"]), float(d["k"]), np.array(d["cv"]),
                None if np.isnan(period) else period,
            )  # fmt: skip
            return window, np.array(d["positions"]), np.array(d["momenta"])
    except (OSError, KeyError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable umbrella window file ({exc})") from exc


def load_windows(output_dir: str | Path) -> list[UmbrellaWindow]:
    """Every finished window of a run directory, in window order."""
    return [load_window(p)[0] for p in sorted(Path(output_dir).glob("window_[0-9][0-9][0-9].npz"))]


def run_umbrella(
    atoms: Atoms,
    calc: Calculator,
    cv: CollectiveVariable,
    centres: Sequence[float],
    k: float | Sequence[float],
    *,
    walkers: Sequence[CollectiveVariable] | None = None,
    steps: int,
    timestep_fs: float = 1.0,
    temperature_K: float = 300.0,
    friction_per_fs: float = 0.01,
    seed: int = 0,
    output_dir: str | Path,
    equilibration_steps: int = 0,
    sample_interval: int = 1,
    resume: bool = False,
    progress: Callable[[str], None] | None = None,
) -> list[UmbrellaWindow]:
    """Run the windows in order (each from the previous one's final state) and return them.

    ``k``: one spring constant for all windows or one per window (eV per CV unit²).  ``walkers``:
    the same CV on further independent copies of the system in ``atoms`` (see
    :class:`~nearsight.sampling.bias.Bias`), every copy in the same window; each step then records
    one sample per walker.  ``progress`` gets a line when each window ends.  Finished windows
    found in ``output_dir`` are loaded, not rerun, when ``resume`` is true; the parameters must be
    those the run was started with.
    """
    check_md(steps, timestep_fs, temperature_K, friction_per_fs)
    centres = [float(c) for c in centres]
    ks = [float(k)] * len(centres) if np.ndim(k) == 0 else [float(v) for v in k]  # type: ignore[arg-type]
    if not centres or len(ks) != len(centres):
        raise ValueError(
            f"need at least one window and one k per window; got {len(centres)} centres, {len(ks)} k"
        )
    if equilibration_steps < 0 or sample_interval < 1:
        raise ValueError(
            "need equilibration_steps >= 0 and sample_interval >= 1, got "
            f"{equilibration_steps}, {sample_interval}"
        )
    atoms = atoms.copy()
    for c in (cv, *(walkers or ())):
        c.validate(atoms)
    output_dir = Path(output_dir)
    parameters = {
        "method": "umbrella", "cv": cv.to_dict(), "walkers": [c.to_dict() for c in walkers or ()],
        "centres": centres, "k": ks, "steps": steps, "equilibration_steps": equilibration_steps,
        "sample_interval": sample_interval,
        "timestep_fs": timestep_fs, "temperature_K": temperature_K, "friction_per_fs": friction_per_fs,
        "seed": seed, "structure": structure_fingerprint(atoms), "n_atoms": len(atoms),
    }  # fmt: skip
    start_run(output_dir, parameters, resume)
    draw_velocities(atoms, temperature_K, np.random.default_rng([seed, len(centres)]))
    windows = []
    for i, (centre, k_i) in enumerate(zip(centres, ks)):
        path = _window_path(output_dir, i)
        if path.exists():
            window, positions, momenta = load_window(path)
            atoms.positions = positions
            atoms.set_momenta(momenta)
            windows.append(window)
            continue
        biased = BiasedCalculator(calc, HarmonicBias(cv, centre, k_i, walkers=walkers))
        atoms.calc = biased
        dyn = langevin(atoms, timestep_fs, temperature_K, friction_per_fs, np.random.default_rng([seed, i]))
        values = []
        try:
            for n, _ in enumerate(dyn.irun(equilibration_steps + steps)):
                if n > equilibration_steps and (n - equilibration_steps) % sample_interval == 0:
                    values.append(biased.results["cv"][:, 0])
        except Exception as exc:
            exc.args = (f"umbrella window {i} (centre {centre:g}), MD step {dyn.nsteps}: {exc}",)
            raise
        atoms.calc = None
        window = UmbrellaWindow(i, centre, k_i, np.array(values), cv.period)
        _save_window(path, window, atoms)
        windows.append(window)
        if progress is not None:
            s = window.cv
            progress(
                f"window {i} ({i + 1}/{len(centres)}): centre {centre:g}, "
                f"<s> = {np.mean(s):.4g} ± {np.std(s):.2g} ({s.size} samples) -> {path}"
            )
    return windows


@dataclass
class FreeEnergyProfile:
    """F(s) on bins (eV, zero at the lowest bin) with 1σ uncertainties relative to that bin."""

    bin_edges: np.ndarray  # [n_bins + 1] CV units
    free_energy: np.ndarray  # [n_bins] eV, NaN where no sample fell
    uncertainty: np.ndarray  # [n_bins] eV (MBAR asymptotic, relative to the lowest bin)
    temperature_K: float
    method: str = "mbar"
    diagnostics: dict[str, Any] = field(default_factory=dict)

    @property
    def bin_centres(self) -> np.ndarray:
        return 0.5 * (self.bin_edges[1:] + self.bin_edges[:-1])

    @property
    def kT(self) -> float:
        return units.kB * self.temperature_K

    def region_free_energy(self, low: float, high: float) -> float:
        """-k_BT ln ∫_low^high exp(-F/k_BT) ds over the bins whose centres lie in [low, high) (eV)."""
        inside = (self.bin_centres >= low) & (self.bin_centres < high) & np.isfinite(self.free_energy)
        if not inside.any():
            raise ValueError(f"no sampled bin in [{low}, {high})")
        widths = np.diff(self.bin_edges)[inside]
        x = -self.free_energy[inside] / self.kT + np.log(widths)
        return float(-self.kT * (x.max() + np.log(np.exp(x - x.max()).sum())))

    def to_dict(self) -> dict[str, Any]:
        def clean(a: Any) -> Any:
            a = np.asarray(a, dtype=float)
            return (
                [None if not np.isfinite(v) else float(v) for v in a.ravel()]
                if a.ndim < 2
                else [clean(r) for r in a]
            )

        out = {
            "method": self.method,
            "temperature_K": self.temperature_K,
            "kT_eV": self.kT,
            "bin_edges": clean(self.bin_edges),
            "bin_centres": clean(self.bin_centres),
            "free_energy_eV": clean(self.free_energy),
            "uncertainty_eV": clean(self.uncertainty),
            "free_energy_kT": clean(self.free_energy / self.kT),
            "uncertainty_kT": clean(self.uncertainty / self.kT),
        }
        out["diagnostics"] = {
            k: clean(v) if isinstance(v, np.ndarray) else v for k, v in self.diagnostics.items()
        }
        return out

    def save_json(self, path: str | Path) -> Path:
        """Write :meth:`to_dict` as JSON, atomically."""
        return atomic_write(path, lambda fh: json.dump(self.to_dict(), fh, indent=1))


def _decorrelated(window: UmbrellaWindow, decorrelate: bool) -> tuple[np.ndarray, float]:
    """Each walker's series subsampled by its statistical inefficiency g, pooled; and the mean g."""
    from pymbar import timeseries

    if len(window.cv) < 2:
        raise ValueError(
            f"umbrella window {window.index} (centre {window.centre:g}) has {len(window.cv)} sample(s)"
        )
    if not decorrelate:
        return window.cv.ravel(), 1.0
    kept, gs = [], []
    for s in window.cv.T:
        delta = wrap_periodic(s - window.centre, window.period)  # continuous across a periodic wrap
        g = float(timeseries.statistical_inefficiency(delta)) if np.ptp(delta) > 0 else 1.0
        kept.append(s[timeseries.subsample_correlated_data(delta, g=g)])
        gs.append(g)
    return np.concatenate(kept), float(np.mean(gs))


def mbar_profile(
    windows: Sequence[UmbrellaWindow],
    temperature_K: float,
    bins: int | Sequence[float] = 50,
    *,
    min_overlap: float = 0.03,
    on_poor_overlap: str = "raise",
    decorrelate: bool = True,
) -> FreeEnergyProfile:
    """The unbiased F(s) from umbrella windows by MBAR (see the module docstring).

    ``bins``: a number of equal bins over the sampled range (over (-period/2, period/2] for a
    periodic CV) or the bin edges.  ``diagnostics`` of the result: the overlap matrix, each window's
    g, samples used, f_i and its uncertainty (eV).
    """
    if on_poor_overlap not in ("raise", "warn"):
        raise ValueError(f"on_poor_overlap = {on_poor_overlap!r} must be 'raise' or 'warn'")
    if not windows:
        raise ValueError("no umbrella windows to analyse")
    with quiet_pymbar():
        import pymbar
    kT = units.kB * temperature_K
    period = windows[0].period
    used, g = zip(*(_decorrelated(w, decorrelate) for w in windows))
    n_k = np.array([len(s) for s in used])
    s_n = np.concatenate(used)
    if period is not None:
        s_n = wrap_periodic(s_n, period)
    u_kn = np.stack([w.bias(s_n) for w in windows]) / kT  # [K, N] reduced bias energies
    mbar = pymbar.MBAR(u_kn, n_k)
    overlap = mbar.compute_overlap()["matrix"]
    _check_overlap(windows, overlap, min_overlap, on_poor_overlap)
    if np.ndim(bins) == 0:
        lo, hi = (-period / 2, period / 2) if period is not None else (s_n.min(), s_n.max())
        edges = np.linspace(lo, hi + 1e-12 * max(1.0, abs(hi)), int(bins) + 1)  # type: ignore[arg-type]
    else:
        edges = np.asarray(bins, dtype=float)
        if edges.ndim != 1 or len(edges) < 2 or np.any(np.diff(edges) <= 0):
            raise ValueError(f"bins: edges must increase, got {bins!r}")
    n_bins = len(edges) - 1
    index = np.digitize(s_n, edges) - 1
    occupied = np.flatnonzero(np.bincount(index[(index >= 0) & (index < n_bins)], minlength=n_bins))
    u_ln = np.where(index[None, :] == occupied[:, None], 0.0, np.inf)  # bin "states"
    result = mbar.compute_perturbed_free_energies(u_ln)
    f = result["Delta_f"][0] + np.log(np.diff(edges)[occupied])  # -ln(p_b/Δs_b) + const
    ref = int(np.argmin(f))
    free, sigma = np.full(n_bins, np.nan), np.full(n_bins, np.nan)
    free[occupied] = kT * (f - f[ref])
    sigma[occupied] = kT * result["dDelta_f"][ref]
    windows_f = mbar.compute_free_energy_differences()
    diagnostics = {
        "window_centres": np.array([w.centre for w in windows]),
        "statistical_inefficiency": np.array(g),
        "samples_used": n_k,
        "samples_total": np.array([w.cv.size for w in windows]),
        "window_free_energy_eV": kT * windows_f["Delta_f"][0],
        "window_free_energy_uncertainty_eV": kT * windows_f["dDelta_f"][0],
        "overlap_matrix": overlap,
        "min_neighbour_overlap": min((o for *_, o in _neighbour_overlaps(windows, overlap)), default=1.0),
    }
    return FreeEnergyProfile(edges, free, sigma, float(temperature_K), "mbar", diagnostics)


def _neighbour_overlaps(
    windows: Sequence[UmbrellaWindow], overlap: np.ndarray
) -> list[tuple[int, int, float]]:
    """(i, j, O) for windows adjacent by centre; across ±period/2 too when the windows go round."""
    centres = np.array([w.centre for w in windows])
    order = np.argsort(centres, kind="stable")
    pairs = list(zip(order[:-1], order[1:]))
    period = windows[0].period
    if period is not None and len(windows) > 2:
        gaps = np.diff(centres[order])
        if period - (centres[order[-1]] - centres[order[0]]) <= gaps.max() + 1e-9:
            pairs.append((order[-1], order[0]))
    return [(int(a), int(b), float(min(overlap[a, b], overlap[b, a]))) for a, b in pairs]


def _check_overlap(
    windows: Sequence[UmbrellaWindow], overlap: np.ndarray, minimum: float, action: str
) -> None:
    poor = [(a, b, o) for a, b, o in _neighbour_overlaps(windows, overlap) if o < minimum]
    if not poor:
        return
    a, b, o = min(poor, key=lambda t: t[2])
    ca, cb = windows[a].centre, windows[b].centre
    message = (
        f"umbrella windows {windows[a].index} (centre {ca:g}) and {windows[b].index} (centre {cb:g}) do not "
        f"overlap: MBAR overlap {o:.3g} < {minimum:g}"
        + (f" ({len(poor)} neighbouring pairs below it)" if len(poor) > 1 else "")
        + "; add windows between them, soften k or sample longer"
    )
    if action == "raise":
        raise ValueError(message)
    warnings.warn(message, RuntimeWarning, stacklevel=3)
