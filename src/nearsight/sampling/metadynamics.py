"""Well-tempered metadynamics runs (resumable) and their free energies.

:func:`run_metadynamics` runs Langevin MD (ASE) with a
:class:`~nearsight.sampling.bias.WellTemperedMetadynamics` bias, depositing a hill per walker every
``pace`` steps and recording, every ``sample_interval`` steps, the CVs s(t), the bias each walker
felt V(s(t), t) and the number of hills.  Every ``checkpoint_every`` steps one file,
``output_dir/state.npz``, is written atomically with the MD state (positions, momenta, the noise
generator), the hills and the samples: a killed run resumed with ``resume=True`` continues from
the last checkpoint and ends bit-identical to an uninterrupted run.

Two free-energy estimates:

* from the bias, F(s) = -γ/(γ-1) V(s, t) (Barducci, Bussi & Parrinello, PRL 100, 020603 (2008));
* by reweighting the samples (Tiwary & Parrinello, J. Phys. Chem. B 119, 736 (2015)): a sample at
  time t weighs exp(β(V(s(t), t) - c(t))) with the time-dependent offset
  c(t) = k_BT ln[∫ ds exp(γ/(γ-1) βV(s, t)) / ∫ ds exp(βV(s, t)/(γ-1))], which removes the growth
  of the bias; the weighted histogram of any recorded CV (biased or not) is its unbiased F.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator

from .._files import atomic_write
from ._run import (
    check_md,
    draw_velocities,
    langevin,
    rng_state,
    set_rng_state,
    start_run,
    structure_fingerprint,
)
from .bias import BiasedCalculator, WellTemperedMetadynamics
from .colvars import CollectiveVariable, evaluate_column, wrap_periodic
from .umbrella import FreeEnergyProfile

STATE = "state.npz"


@dataclass
class MetadynamicsRun:
    """What :func:`run_metadynamics` recorded."""

    bias: WellTemperedMetadynamics
    cv: np.ndarray  # [n_samples, n_walkers, n_cvs] the biased CVs
    bias_energy: np.ndarray  # [n_samples, n_walkers] eV, V(s(t), t) felt at the sample
    n_hills: np.ndarray  # [n_samples] hills deposited before the sample
    extra: np.ndarray  # [n_samples, n_walkers, n_extra] recorded, unbiased CVs (n_extra may be 0)
    steps: int  # MD steps done
    sample_interval: int = 1  # MD steps between samples

    @property
    def kT(self) -> float:
        return self.bias.kT


def run_metadynamics(
    atoms: Atoms,
    calc: Calculator,
    bias: WellTemperedMetadynamics,
    *,
    steps: int,
    timestep_fs: float = 1.0,
    temperature_K: float = 300.0,
    friction_per_fs: float = 0.01,
    seed: int = 0,
    output_dir: str | Path,
    sample_interval: int = 1,
    checkpoint_every: int = 1000,
    extra_cvs: Sequence[Sequence[CollectiveVariable]] | None = None,
    resume: bool = False,
    progress: Callable[[str], None] | None = None,
) -> MetadynamicsRun:
    """Run ``steps`` steps of well-tempered metadynamics (see the module docstring).

    ``extra_cvs[w]``: CVs of walker w recorded at every sample without being biased, to reweight
    onto.  ``progress`` gets a line at every checkpoint.
    """
    check_md(steps, timestep_fs, temperature_K, friction_per_fs)
    if abs(bias.temperature_K - temperature_K) > 1e-9:
        raise ValueError(
            f"the bias is for {bias.temperature_K} K, the MD for {temperature_K} K: they must agree"
        )
    if sample_interval < 1 or checkpoint_every < 1:
        raise ValueError(
            f"need sample_interval, checkpoint_every >= 1; got {sample_interval}, {checkpoint_every}"
        )
    extra = [list(group) for group in extra_cvs or ()]
    if extra and len(extra) != len(bias.walkers):
        raise ValueError(f"extra_cvs: one group per walker ({len(bias.walkers)}), got {len(extra)}")
    atoms = atoms.copy()
    for cv in [cv for w in bias.walkers for cv in w] + [cv for g in extra for cv in g]:
        cv.validate(atoms)
    output_dir = Path(output_dir)
    parameters = {
        "method": "well-tempered metadynamics", "bias": bias.parameters(), "steps": steps,
        "timestep_fs": timestep_fs, "temperature_K": temperature_K, "friction_per_fs": friction_per_fs,
        "seed": seed, "sample_interval": sample_interval, "checkpoint_every": checkpoint_every,
        "extra_cvs": [[cv.to_dict() for cv in g] for g in extra],
        "structure": structure_fingerprint(atoms), "n_atoms": len(atoms),
    }  # fmt: skip
    start_run(output_dir, parameters, resume)
    rng = np.random.default_rng(seed)
    samples: dict[str, list] = {"cv": [], "bias_energy": [], "n_hills": [], "extra": []}
    done = 0
    state = output_dir / STATE
    if state.exists():
        done = _load_state(state, atoms, rng, bias, samples)
    else:  # a fresh run starts from the hills the bias holds (none, or loaded from a hills file)
        draw_velocities(atoms, temperature_K, rng)
    biased = BiasedCalculator(calc, bias)
    atoms.calc = biased
    dyn = langevin(atoms, timestep_fs, temperature_K, friction_per_fs, rng)
    columns = [list(c) for c in zip(*extra)]  # [n_extra][n_walkers]
    for n in range(done + 1, steps + 1):
        try:
            dyn.step()
        except Exception as exc:
            exc.args = (f"metadynamics MD step {n}: {exc}",)
            raise
        dyn.nsteps += 1
        s = biased.results["cv"]
        if n % sample_interval == 0:
            samples["cv"].append(s.copy())
            samples["bias_energy"].append(biased.results["walker_bias_energies"].copy())
            samples["n_hills"].append(bias.n_hills)
            samples["extra"].append(
                np.array([evaluate_column(c, atoms).values for c in columns]).reshape(len(columns), len(s)).T
            )
        if n % bias.pace == 0:
            bias.deposit(s)
            biased.bias_changed()
        if n % checkpoint_every == 0 or n == steps:
            _save_state(state, atoms, rng, bias, samples, n)
            if progress is not None:
                last = bias.heights[-1] if bias.n_hills else 0.0
                progress(f"step {n}/{steps}: {bias.n_hills} hills, last height {last:.3g} eV -> {state}")
    atoms.calc = None
    return _run_from(bias, samples, steps, len(columns), sample_interval)


def _run_from(
    bias: WellTemperedMetadynamics, samples: dict[str, list], steps: int, n_extra: int, interval: int = 1
) -> MetadynamicsRun:
    n, n_w, n_cv = len(samples["n_hills"]), len(bias.walkers), len(bias.cvs)
    return MetadynamicsRun(
        bias,
        np.array(samples["cv"], dtype=float).reshape(n, n_w, n_cv),
        np.array(samples["bias_energy"], dtype=float).reshape(n, n_w),
        np.array(samples["n_hills"], dtype=np.int64),
        np.array(samples["extra"], dtype=float).reshape(n, n_w, n_extra),
        steps,
        interval,
    )


def _save_state(
    path: Path,
    atoms: Atoms,
    rng: np.random.Generator,
    bias: WellTemperedMetadynamics,
    samples: dict,
    step: int,
) -> None:
    run = _run_from(bias, samples, step, np.shape(samples["extra"][-1])[-1] if samples["extra"] else 0)
    buffer = io.BytesIO()
    np.savez(
        buffer, step=step, positions=atoms.positions, momenta=atoms.get_momenta(), rng=rng_state(rng),
        centres=bias.centres, heights=bias.heights, cv=run.cv, bias_energy=run.bias_energy,
        n_hills=run.n_hills, extra=run.extra,
    )  # fmt: skip
    atomic_write(path, lambda fh: fh.write(buffer.getvalue()), mode="wb")


def _load_state(
    path: Path, atoms: Atoms, rng: np.random.Generator, bias: WellTemperedMetadynamics, samples: dict
) -> int:
    try:
        with np.load(path) as d:
            atoms.positions = d["positions"]
            atoms.set_momenta(d["momenta"])
            set_rng_state(rng, str(d["rng"]))
            bias.load_hills(np.array(d["centres"]), np.array(d["heights"]))
            samples["cv"] = list(d["cv"])
            samples["bias_energy"] = list(d["bias_energy"])
            samples["n_hills"] = list(d["n_hills"])
            samples["extra"] = list(d["extra"])
            return int(d["step"])
    except (OSError, KeyError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable metadynamics state ({exc})") from exc


def tiwary_parrinello_c(bias: WellTemperedMetadynamics, grid: np.ndarray, n_hills: np.ndarray) -> np.ndarray:
    """c(t) in eV after each count of hills in ``n_hills``, on grid points [n_grid, n_cvs].

    c = k_BT ln[Σ_g exp(γ/(γ-1) βV_g) / Σ_g exp(βV_g/(γ-1))] on a uniform grid over the region the
    bias explores (the volume element cancels); V on the grid grows hill by hill, so the cost is
    O(n_hills · n_grid) for any number of counts.
    """
    grid = np.asarray(grid, dtype=float).reshape(-1, len(bias.cvs))
    beta, gamma = 1.0 / bias.kT, bias.bias_factor
    wanted = np.asarray(n_hills, dtype=np.int64)
    out = np.empty(len(wanted))
    v, added = np.zeros(len(grid)), 0
    for i in np.argsort(wanted, kind="stable"):
        target = int(wanted[i])
        for start in range(added, target, 64):  # hills [added, target) onto the grid, 64 at a time
            v += _hills_on_grid(bias, grid, start, min(start + 64, target))
        added = max(added, target)
        out[i] = (_log_sum_exp(gamma / (gamma - 1) * beta * v) - _log_sum_exp(beta * v / (gamma - 1))) / beta
    return out


def _log_sum_exp(x: np.ndarray) -> float:
    top = float(x.max())
    return top + float(np.log(np.exp(x - top).sum()))


def _hills_on_grid(bias: WellTemperedMetadynamics, grid: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Σ of hills start..stop-1 at the grid points, [n_grid]."""
    delta = grid[:, None, :] - bias.centres[None, start:stop, :]
    for d, cv in enumerate(bias.cvs):
        if cv.period is not None:
            delta[..., d] = wrap_periodic(delta[..., d], cv.period)
    return np.exp(-0.5 * np.sum((delta / bias.sigma) ** 2, axis=-1)) @ bias.heights[start:stop]


def reweighted_profile(
    run: MetadynamicsRun,
    bins: np.ndarray,
    *,
    cv: int | str = 0,
    grid: np.ndarray | None = None,
    discard_fraction: float = 0.2,
    n_blocks: int = 4,
) -> FreeEnergyProfile:
    """F of one recorded CV by Tiwary-Parrinello reweighting, with a block-average uncertainty.

    ``cv``: index of a biased CV, or ``"extra:j"`` for the j-th extra CV.  ``grid``: points
    [n_grid, n_cvs] covering the region the bias explores, for c(t) (default: 200 points per CV
    over the sampled range ± 3σ, at most 10 000 in all).  The first ``discard_fraction`` of the
    samples (the bias still grows fast) is dropped; the rest is cut into ``n_blocks`` blocks whose
    profiles give the uncertainty, σ = std(blocks)/√(n_blocks - 1), relative to the lowest bin.
    """
    if not 0 <= discard_fraction < 1 or n_blocks < 2:
        raise ValueError(
            f"need 0 <= discard_fraction < 1 and n_blocks >= 2, got {discard_fraction}, {n_blocks}"
        )
    if isinstance(cv, str):
        if not cv.startswith("extra:"):
            raise ValueError(f"cv = {cv!r}: an index of a biased CV or 'extra:J'")
        values = run.extra[:, :, int(cv.split(":")[1])]
    else:
        values = run.cv[:, :, cv]
    if grid is None:
        grid = _default_grid(run)
    start = int(discard_fraction * len(run.n_hills))
    c = tiwary_parrinello_c(run.bias, grid, run.n_hills[start:])
    log_w = (run.bias_energy[start:] - c[:, None]) / run.kT  # [n, n_walkers]
    values = values[start:]
    edges = np.asarray(bins, dtype=float)
    f_all = _weighted_f(values.ravel(), log_w.ravel(), edges)
    blocks = [
        _weighted_f(v.ravel(), lw.ravel(), edges)
        for v, lw in zip(np.array_split(values, n_blocks), np.array_split(log_w, n_blocks))
    ]
    ref = int(np.nanargmin(f_all))
    rel = np.array([b - b[ref] for b in blocks])
    with np.errstate(invalid="ignore"):
        sigma = np.nanstd(rel, axis=0) / np.sqrt(n_blocks - 1) if np.isfinite(rel).any() else rel[0]
    kT = run.kT
    diagnostics = {
        "discarded_samples": start,
        "n_hills": run.bias.n_hills,
        "c_final_eV": float(c[-1]) if len(c) else 0.0,
    }
    return FreeEnergyProfile(
        edges, kT * (f_all - f_all[ref]), kT * sigma, run.bias.temperature_K, "metad-reweighted", diagnostics
    )


def bias_profile(
    bias: WellTemperedMetadynamics, bins: np.ndarray, *, average_last: float = 0.5, snapshots: int = 20
) -> FreeEnergyProfile:
    """F(s) = -γ/(γ-1) (V(s, t) - c(t)) of a 1-CV bias at the bin centres, averaged over the bias at
    ``snapshots`` times in the last ``average_last`` of the hills; zero at its minimum.

    Asymptotically V(s, t) = -(1 - 1/γ) F(s) + c(t) (Tiwary & Parrinello 2015), so subtracting c(t)
    (computed on the bin centres, which should span the explored range) aligns the snapshots and
    the average damps the fluctuation of the last hills.  The uncertainty is the spread of the
    snapshots (σ/√snapshots, an underestimate as they are correlated).  ``average_last=0``: the
    final bias alone.
    """
    if len(bias.cvs) != 1:
        raise ValueError("bias_profile is for a bias on one CV; reweight a 2-CV run with reweighted_profile")
    if not 0 <= average_last <= 1 or snapshots < 1 or bias.n_hills == 0:
        raise ValueError(
            "need 0 <= average_last <= 1, snapshots >= 1 and hills; got "
            f"{average_last}, {snapshots}, {bias.n_hills}"
        )
    edges = np.asarray(bins, dtype=float)
    centres = 0.5 * (edges[1:] + edges[:-1]).reshape(-1, 1)
    counts = np.unique(
        np.linspace((1 - average_last) * bias.n_hills, bias.n_hills, snapshots).round().astype(int)
    )
    counts = counts[counts > 0]
    c = tiwary_parrinello_c(bias, centres, counts)
    factor = bias.bias_factor / (bias.bias_factor - 1.0)
    f = np.array([-factor * (bias.potential(centres, n) - c_n) for n, c_n in zip(counts, c)])  # [snap, bins]
    f -= f.mean(axis=1, keepdims=True)
    mean = f.mean(axis=0)
    sigma = f.std(axis=0) / np.sqrt(len(f))
    ref = int(np.argmin(mean))
    sigma = np.sqrt(np.maximum(sigma**2 + sigma[ref] ** 2, 0.0))
    sigma[ref] = 0.0
    diagnostics = {"n_hills": bias.n_hills, "snapshots_hills": counts.tolist()}
    return FreeEnergyProfile(edges, mean - mean[ref], sigma, bias.temperature_K, "metad-bias", diagnostics)


def _default_grid(run: MetadynamicsRun) -> np.ndarray:
    bias = run.bias
    points = min(200, int(10_000 ** (1 / len(bias.cvs))))
    axes = []
    for d, cv in enumerate(bias.cvs):
        if cv.period is not None:
            axes.append(np.linspace(-cv.period / 2, cv.period / 2, points, endpoint=False))
        else:
            lo, hi = run.cv[:, :, d].min() - 3 * bias.sigma[d], run.cv[:, :, d].max() + 3 * bias.sigma[d]
            axes.append(np.linspace(lo, hi, points))
    return np.stack([m.ravel() for m in np.meshgrid(*axes, indexing="ij")], axis=1)


def _weighted_f(values: np.ndarray, log_w: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """-ln(Σ_{n in bin} w_n / Δs) for each bin (in k_BT, NaN for empty bins)."""
    index = np.digitize(values, edges) - 1
    inside = (index >= 0) & (index < len(edges) - 1)
    shift = log_w[inside].max() if inside.any() else 0.0
    p = np.bincount(index[inside], np.exp(log_w[inside] - shift), minlength=len(edges) - 1)
    with np.errstate(divide="ignore"):
        f = -np.log(p / np.diff(edges))
    f[~np.isfinite(f)] = np.nan
    return f


def save_run_json(path: str | Path, profiles: dict[str, FreeEnergyProfile]) -> Path:
    """Several profiles (e.g. ``{"reweighted": ..., "bias": ...}``) in one JSON file, atomically."""
    return atomic_write(
        path, lambda fh: json.dump({k: p.to_dict() for k, p in profiles.items()}, fh, indent=1)
    )
