"""Committee (ensemble) uncertainty and calibration metrics.

    from nearsight.uncertainty import EnsembleCalculator, train_committee
    paths = train_committee(config, n_members=4, bootstrap=True)   # Trainer with seeds seed, seed+1, ...
    atoms.calc = EnsembleCalculator(paths)
    atoms.get_forces()                      # committee mean
    atoms.calc.results["max_force_std"]     # largest per-atom force deviation, eV/Å

``EnsembleCalculator.results`` keys (means over the members unless noted):

* ``energy``, ``free_energy`` (eV), ``energies`` (per atom, eV), ``forces`` [n, 3] (eV/Å),
  ``stress`` (Voigt 6, eV/Å³; cells periodic in all three directions);
* ``energy_std`` (eV): standard deviation of the members' energies (ddof=0);
* ``forces_std`` [n, 3] (eV/Å): per-component standard deviation;
* ``atom_force_std`` [n] (eV/Å): sqrt(Σ_xyz var) per atom;
* ``max_force_std`` (eV/Å): max of ``atom_force_std`` -- the active-learning trigger;
* ``stress_std`` (Voigt 6) when ``stress`` is present;
* ``energy_members`` [n_members] and ``forces_members`` [n_members, n, 3];
* ``sigma_scale``: the calibration factor applied to every ``*_std`` above (1 unless given).

Members may be any model type :func:`nearsight.models.io.load_model` reads.
Calibration (:func:`calibration_report`) compares errors with predicted σ: a fitted
σ scale (maximum likelihood for Gaussian errors), miscalibration area, Gaussian
negative log-likelihood and the Spearman rank correlation between |error| and σ.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.stress import full_3x3_to_voigt_6_stress
from scipy import special, stats
from torch import nn

from . import keys
from .data.neighbours import atoms_to_graph
from .models.forcefield import ForceField

__all__ = [
    "EnsembleCalculator",
    "train_committee",
    "fit_sigma_scale",
    "miscalibration_area",
    "gaussian_nll",
    "spearman",
    "calibration_report",
]

_DTYPES = {"float64": torch.float64, "float32": torch.float32}


class EnsembleCalculator(Calculator):
    """ASE calculator for a committee of nearsight models (objects or model file paths)."""

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress"]

    def __init__(
        self,
        models: Sequence[nn.Module | str | os.PathLike],
        dtype: str = "float64",
        device: str = "cpu",
        sigma_scale: float = 1.0,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
        if len(models) < 2:
            raise ValueError(f"EnsembleCalculator needs at least 2 models, got {len(models)}")
        if not sigma_scale > 0:
            raise ValueError(f"sigma_scale must be > 0, got {sigma_scale!r}")
        from .models.io import load_model

        self.dtype = _DTYPES[dtype]
        self.device = torch.device(device)
        self.sigma_scale = float(sigma_scale)
        self.members = []
        for i, m in enumerate(models):
            model = load_model(m) if isinstance(m, (str, os.PathLike)) else copy.deepcopy(m)
            if getattr(model, "metadata", {}).get("delta") is not None:
                raise ValueError(f"committee member {i} ({m!r}) is a Δ-model; not supported in a committee")
            ff = ForceField(model).to(device=self.device, dtype=self.dtype).eval()
            for p in ff.parameters():
                p.requires_grad_(False)
            self.members.append(ff)
        cutoffs = {float(ff.cutoff) for ff in self.members}
        self._cutoff = max(cutoffs)

    @property
    def cutoff(self) -> float:
        return self._cutoff

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        periodic = bool(np.all(atoms.pbc))
        if "stress" in properties and not periodic:
            raise PropertyNotImplementedError("stress needs a cell periodic in all three directions")
        graph = atoms_to_graph(atoms, self.cutoff, self.dtype)
        graph = {k: v.to(self.device) for k, v in graph.items()}
        energies, atomic, forces, stresses = [], [], [], []
        for ff in self.members:
            g = {k: v.clone() for k, v in graph.items()}
            if ff.cutoff < self.cutoff:  # a member with a shorter cutoff: its own neighbour list
                g = {k: v.to(self.device) for k, v in atoms_to_graph(atoms, ff.cutoff, self.dtype).items()}
            out = ff(g, forces=True, stress=periodic)
            energies.append(float(out[keys.ENERGY].detach().sum()))
            atomic.append(out[keys.ATOMIC_ENERGIES].detach().cpu().double().numpy())
            forces.append(out[keys.FORCES].detach().cpu().double().numpy())
            if periodic:
                stresses.append(
                    full_3x3_to_voigt_6_stress(out[keys.STRESS][0].detach().cpu().double().numpy())
                )
        e = np.asarray(energies)
        f = np.stack(forces)
        s = self.sigma_scale
        atom_std = np.sqrt(f.var(axis=0).sum(axis=1)) * s
        self.results = {
            "energy": float(e.mean()),
            "free_energy": float(e.mean()),
            "energies": np.mean(atomic, axis=0),
            "forces": f.mean(axis=0),
            "energy_std": float(e.std()) * s,
            "forces_std": f.std(axis=0) * s,
            "atom_force_std": atom_std,
            "max_force_std": float(atom_std.max()) if len(atom_std) else 0.0,
            "energy_members": e,
            "forces_members": f,
            "sigma_scale": s,
        }
        if periodic:
            st = np.stack(stresses)
            self.results["stress"] = st.mean(axis=0)
            self.results["stress_std"] = st.std(axis=0) * s


def train_committee(
    config: dict,
    n_members: int,
    output_dir: str | os.PathLike | None = None,
    bootstrap: bool = False,
    log=None,
) -> list[Path]:
    """Train ``n_members`` models with seeds ``seed + k`` (k = 0..n-1); returns the best-model paths.

    Member k trains in ``output_dir/member_k`` (default: the config's output_dir).  A member
    whose ``best_model.pt`` exists is not retrained; one interrupted mid-training starts over
    (same seed: the same model).  ``bootstrap``: member k trains on a resample with
    replacement (seeded by k) of the training frames, written to ``member_k/bootstrap.xyz``.
    """
    from .training.trainer import Trainer

    if n_members < 2:
        raise ValueError(f"train_committee: n_members must be >= 2, got {n_members}")
    root = Path(output_dir if output_dir is not None else config["output_dir"])
    paths = []
    for k in range(n_members):
        member_dir = root / f"member_{k}"
        best = member_dir / "best_model.pt"
        paths.append(best)
        if best.is_file():
            continue
        if member_dir.exists():  # interrupted: start over, deterministically
            import shutil

            shutil.rmtree(member_dir)
        member_dir.mkdir(parents=True)
        cfg = copy.deepcopy(config)
        cfg["seed"] = int(config["seed"]) + k
        cfg["output_dir"] = str(member_dir)
        if bootstrap:
            cfg["data"]["train"] = str(_bootstrap_file(config, member_dir, seed=1000 + k))
            if not cfg["data"]["valid"]:
                cfg["data"]["valid"] = config["data"]["train"]
        Trainer(cfg, log=log).train()
        if not best.is_file():  # pragma: no cover - Trainer always writes it
            raise RuntimeError(f"train_committee: member {k} wrote no {best}")
    return paths


def atomic_write(path: str | os.PathLike, write) -> Path:
    """``write(fh)`` into a temporary file next to ``path``, fsync, rename over ``path``."""
    import tempfile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _bootstrap_file(config: dict, member_dir: Path, seed: int) -> Path:
    """A resample with replacement of the training frames, as extxyz (atomic write)."""
    import ase.io

    files = config["data"]["train"]
    files = [files] if isinstance(files, str) else list(files)
    atoms = [a for f in files for a in ase.io.read(f, index=":")]
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(atoms), size=len(atoms))
    path = member_dir / "bootstrap.xyz"
    atomic_write(path, lambda fh: ase.io.write(fh, [atoms[i] for i in picks], format="extxyz"))
    return path


# ------------------------------------------------------------------------------------------ calibration
def fit_sigma_scale(errors: np.ndarray, sigmas: np.ndarray) -> float:
    """Maximum-likelihood s for errors ~ N(0, (s σ)²): s² = mean((e/σ)²)."""
    e, s = _pair(errors, sigmas)
    return float(np.sqrt(np.mean((e / s) ** 2)))


def gaussian_nll(errors: np.ndarray, sigmas: np.ndarray) -> float:
    """Mean Gaussian negative log-likelihood of the errors given σ (nats, includes ½ log 2π)."""
    e, s = _pair(errors, sigmas)
    return float(np.mean(0.5 * np.log(2 * np.pi * s**2) + 0.5 * (e / s) ** 2))


def miscalibration_area(errors: np.ndarray, sigmas: np.ndarray, n_levels: int = 99) -> float:
    """Area between the observed and expected fraction of errors inside central Gaussian intervals.

    For confidence p the interval is |e| <= z_p σ with z_p = √2 erf⁻¹(p); the area is
    mean over p in (0, 1) of |observed(p) − p|: 0 for perfect calibration, at most 0.5.
    """
    e, s = _pair(errors, sigmas)
    levels = np.linspace(0, 1, n_levels + 2)[1:-1]
    z = np.sqrt(2.0) * special.erfinv(levels)
    ratio = np.abs(e) / s
    observed = (ratio[None, :] <= z[:, None]).mean(axis=1)
    return float(np.mean(np.abs(observed - levels)))


def spearman(errors: np.ndarray, sigmas: np.ndarray) -> float:
    """Spearman rank correlation between |error| and σ."""
    e, s = _pair(errors, sigmas)
    return float(stats.spearmanr(np.abs(e), s).statistic)


def calibration_report(
    errors: np.ndarray, sigmas: np.ndarray, scale: float | None = None
) -> dict[str, float]:
    """Metrics before and after scaling σ by ``scale`` (default: fitted on these data)."""
    scale = fit_sigma_scale(errors, sigmas) if scale is None else float(scale)
    sig = np.asarray(sigmas, dtype=np.float64)
    return {
        "n": int(np.asarray(errors).size),
        "sigma_scale": scale,
        "rmse": float(np.sqrt(np.mean(np.asarray(errors, dtype=np.float64) ** 2))),
        "mean_sigma": float(np.mean(sig)),
        "spearman": spearman(errors, sigmas),
        "nll_raw": gaussian_nll(errors, sigmas),
        "nll_scaled": gaussian_nll(errors, sig * scale),
        "miscalibration_area_raw": miscalibration_area(errors, sigmas),
        "miscalibration_area_scaled": miscalibration_area(errors, sig * scale),
    }


def _pair(errors, sigmas) -> tuple[np.ndarray, np.ndarray]:
    e = np.asarray(errors, dtype=np.float64).ravel()
    s = np.asarray(sigmas, dtype=np.float64).ravel()
    if e.shape != s.shape:
        raise ValueError(f"errors and sigmas differ in size: {e.size} vs {s.size}")
    if e.size == 0:
        raise ValueError("no errors given")
    bad = ~(np.isfinite(e) & np.isfinite(s)) | (s <= 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{int(bad.sum())} non-finite error(s) or σ <= 0, first at index {i}: e={e[i]}, σ={s[i]}"
        )
    return e, s
