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
* ``sigma_scale``: the calibration factor applied to every ``*_std`` above (1 unless given);
* with ``aleatoric=`` (a model from :func:`fit_aleatoric_head`): ``energy_aleatoric_std`` (eV) and
  ``forces_aleatoric_std`` [n] (eV/Å, per Cartesian component of each atom's force) -- the
  label noise the data showed, reported separately from the committee (epistemic) spread;
* ``extrapolation`` [n] and ``extrapolating_atoms`` when members return ``keys.EXTRAPOLATION``:
  the largest per-atom count over the members (``on_extrapolation`` as in
  :class:`nearsight.NearsightCalculator`).

Like :class:`nearsight.NearsightCalculator`, the committee refuses atoms closer than
``min_distance`` and non-finite outputs of any member (:mod:`nearsight.guards`).

Aleatoric uncertainty: :func:`fit_aleatoric_head` trains a heteroscedastic head -- a
Behler-Parrinello network with two outputs per atom, log σ²_E,i (variance of the atom's
energy contribution; σ²_E = Σ_i) and log σ²_F,i (variance of each force component on atom
i) -- by minimising the Gaussian negative log-likelihood of the residuals of a trained
(frozen) mean model.  The head is an ordinary model file (``metadata["aleatoric"]``).

Members may be any model type :func:`nearsight.models.io.load_model` reads.
Calibration (:func:`calibration_report`) compares errors with predicted σ: a fitted
σ scale (maximum likelihood for Gaussian errors), miscalibration area, Gaussian
negative log-likelihood and the Spearman rank correlation between |error| and σ.
"""

from __future__ import annotations

import copy
import math
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
from ._files import atomic_write
from .data.neighbours import atoms_to_graph
from .guards import MIN_DISTANCE, ExtrapolationMonitor, check_distances, check_finite
from .models.forcefield import ForceField

__all__ = [
    "EnsembleCalculator",
    "aleatoric_log_variances",
    "fit_aleatoric_head",
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
        aleatoric: nn.Module | str | os.PathLike | None = None,
        min_distance: float = MIN_DISTANCE,
        on_extrapolation: str = "warn",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
        self.min_distance = float(min_distance)
        self.extrapolation = ExtrapolationMonitor(on_extrapolation)
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
        self.aleatoric = None
        if aleatoric is not None:
            head = (
                load_model(aleatoric)
                if isinstance(aleatoric, (str, os.PathLike))
                else copy.deepcopy(aleatoric)
            )
            if not getattr(head, "metadata", {}).get("aleatoric"):
                raise ValueError(f"aleatoric={aleatoric!r} is not a head made by fit_aleatoric_head")
            self.aleatoric = head.to(device=self.device, dtype=self.dtype).eval()

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
        check_distances(atoms, graph, self.min_distance)
        graph = {k: v.to(self.device) for k, v in graph.items()}
        energies, atomic, forces, stresses, counts = [], [], [], [], []
        for m, ff in enumerate(self.members):
            g = {k: v.clone() for k, v in graph.items()}
            if ff.cutoff < self.cutoff:  # a member with a shorter cutoff: its own neighbour list
                g = {k: v.to(self.device) for k, v in atoms_to_graph(atoms, ff.cutoff, self.dtype).items()}
            out = ff(g, forces=True, stress=periodic)
            energies.append(float(out[keys.ENERGY].detach().sum()))
            atomic.append(out[keys.ATOMIC_ENERGIES].detach().cpu().double().numpy())
            forces.append(out[keys.FORCES].detach().cpu().double().numpy())
            member = {"energy": energies[-1], "energies": atomic[-1], "forces": forces[-1]}
            if periodic:
                stresses.append(
                    full_3x3_to_voigt_6_stress(out[keys.STRESS][0].detach().cpu().double().numpy())
                )
                member["stress"] = stresses[-1]
            check_finite(atoms, graph, member, where=f"committee member {m}")
            if keys.EXTRAPOLATION in out:
                counts.append(out[keys.EXTRAPOLATION].detach().cpu().double().numpy())
        extrapolation = self.extrapolation.report(atoms, np.max(counts, axis=0) if counts else None)
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
            **extrapolation,
        }
        if self.aleatoric is not None:
            g = {
                k: v.to(self.device)
                for k, v in atoms_to_graph(atoms, self.aleatoric.cutoff, self.dtype).items()
            }
            with torch.no_grad():
                logvar = aleatoric_log_variances(self.aleatoric, g).cpu().double().numpy()
            self.results["energy_aleatoric_std"] = float(np.sqrt(np.exp(logvar[:, 0]).sum()))
            self.results["forces_aleatoric_std"] = np.sqrt(np.exp(logvar[:, 1]))
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
    that finished (:func:`member_finished`) is not retrained; one interrupted mid-training starts
    over (same seed: the same model).  The seed also draws the validation split off ``data.train``
    unless ``data.split_seed`` fixes it (members then see the same frames and differ in
    initialisation and batch order only).  ``bootstrap``: member k trains on a resample with
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
        if not restart_member(member_dir):
            continue
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


def predict_committee(
    models: Sequence[nn.Module],
    frames: Sequence,
    batch_size: int = 64,
    dtype: torch.dtype = torch.float64,
) -> list[dict[str, np.ndarray]]:
    """Committee mean and spread per frame, batched (:func:`nearsight.training.metrics.predict`).

    Each dict has the mean ``energy``, ``forces`` (and ``stress`` for 3D-periodic frames), as
    :class:`EnsembleCalculator` predicts them, and ``energy_std``, ``forces_std`` (per
    component) and ``atom_force_std`` (per atom, the norm of the component standard deviations).
    """
    from .training.metrics import predict

    if len(models) < 2:
        raise ValueError(f"predict_committee needs at least 2 models, got {len(models)}")
    preds = [predict(m, frames, batch_size=batch_size, dtype=dtype) for m in models]
    out = []
    for i in range(len(frames)):
        e = np.array([p[i]["energy"] for p in preds], dtype=float)
        f = np.stack([p[i]["forces"] for p in preds])
        row = {
            "energy": float(e.mean()),
            "forces": f.mean(axis=0),
            "energy_std": float(e.std()),
            "forces_std": f.std(axis=0),
            "atom_force_std": np.sqrt(f.var(axis=0).sum(axis=1)),
        }
        if all("stress" in p[i] for p in preds):
            st = np.stack([p[i]["stress"] for p in preds])
            row["stress"], row["stress_std"] = st.mean(axis=0), st.std(axis=0)
        out.append(row)
    return out


def member_finished(member_dir: Path) -> bool:
    """Whether the training in ``member_dir`` ran to its end.

    ``best_model.pt`` alone does not say so: the trainer writes it at every validation
    improvement, so a run killed mid-training leaves one.  ``final_model.pt`` is written
    once the loop has stopped (epochs, time limit or early stopping), and after it a best
    model only where none was written before the first validation.
    """
    member_dir = Path(member_dir)
    return (member_dir / "final_model.pt").is_file() and (member_dir / "best_model.pt").is_file()


def restart_member(member_dir: Path) -> bool:
    """False where ``member_dir`` holds a finished training; else empty it for a fresh start, True.

    A fresh start with the same seed and data trains the same model as the interrupted run
    would have, so a committee (or an active-learning iteration) is the same after a kill.
    """
    import shutil

    member_dir = Path(member_dir)
    if member_finished(member_dir):
        return False
    if member_dir.exists():
        shutil.rmtree(member_dir)
    member_dir.mkdir(parents=True)
    return True


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


# ------------------------------------------------------------------------------------------ aleatoric
def aleatoric_log_variances(head: nn.Module, graph: dict[str, torch.Tensor]) -> torch.Tensor:
    """``[n_atoms, 2]``: log σ²_E,i and log σ²_F,i of every atom from a head of :func:`fit_aleatoric_head`."""
    from .models.bpnn import element_indices

    graph = _with_edge_vectors(graph)
    element = element_indices(head.z_to_index, graph[keys.ATOMIC_NUMBERS], head.species)
    x = head.standardise(head.features(graph))
    out = x.new_zeros((x.shape[0], 2))
    for k, net in enumerate(head.nets):
        idx = torch.nonzero(element == k).squeeze(-1)
        if idx.numel():
            out = out.index_put((idx,), net(x[idx]))
    return out.clamp(-30.0, 20.0)


def _with_edge_vectors(graph: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    from .models.forcefield import edge_vectors

    if keys.EDGE_VECTORS in graph:
        return graph
    out = dict(graph)
    out[keys.EDGE_VECTORS] = edge_vectors(
        graph[keys.POSITIONS],
        graph[keys.CELL],
        graph[keys.BATCH],
        graph[keys.EDGE_INDEX],
        graph[keys.CELL_SHIFTS],
    )
    return out


def fit_aleatoric_head(
    mean: nn.Module | EnsembleCalculator | Sequence,
    frames: Sequence,
    hidden: Sequence[int] = (16,),
    epochs: int = 400,
    lr: float = 0.01,
    seed: int = 0,
    energy_key: str = "energy",
    forces_key: str = "forces",
) -> nn.Module:
    """Train a heteroscedastic head on the residuals of ``mean`` (a model, a list of models, or an
    :class:`EnsembleCalculator`: its committee mean) over ``frames`` (ASE Atoms with
    ``info[energy_key]`` and ``arrays[forces_key]``) by full-batch Gaussian NLL minimisation.

    The head reuses the descriptor settings of the first (Behler-Parrinello) mean model and its
    feature standardisation; returns a BehlerParrinello with heads ``["energy_logvar",
    "forces_logvar"]`` and ``metadata["aleatoric"] = True`` (save with ``save_model``).
    """
    from .models.bpnn import BehlerParrinello

    calc = mean if isinstance(mean, EnsembleCalculator) else None
    if calc is None:
        models = list(mean) if isinstance(mean, Sequence) else [mean]
        calc = EnsembleCalculator(models * 2 if len(models) == 1 else models)
    base = calc.members[0].model
    if not isinstance(base, BehlerParrinello):
        raise TypeError(f"fit_aleatoric_head needs a Behler-Parrinello mean model, got {type(base).__name__}")
    if not frames:
        raise ValueError("fit_aleatoric_head: no frames")
    cfg = base.get_config()
    torch.manual_seed(seed)
    head = BehlerParrinello(
        cfg["species"], cfg["descriptor"], hidden, base.activation, heads=["energy_logvar", "forces_logvar"]
    ).double()
    for name in ("feature_mean", "feature_std", "feature_mask", "feature_min", "feature_max"):
        head.get_buffer(name).copy_(base.get_buffer(name).double())
    feats, elems, r_e, r_f, batch = [], [], [], [], []
    for i, atoms in enumerate(frames):
        ref_e = atoms.info.get(energy_key)
        ref_f = atoms.arrays.get(forces_key)
        if ref_e is None or ref_f is None:
            raise ValueError(
                f"fit_aleatoric_head: frame {i} has no info[{energy_key!r}] or arrays[{forces_key!r}]"
            )
        calc.calculate(atoms.copy(), ["energy", "forces"])
        r_e.append(float(ref_e) - calc.results["energy"])
        r_f.append(torch.as_tensor(np.asarray(ref_f) - calc.results["forces"]))
        g = _with_edge_vectors(atoms_to_graph(atoms, head.cutoff, torch.float64))
        with torch.no_grad():
            feats.append(head.standardise(head.features(g)))
        elems.append(torch.as_tensor([head.species.index(int(z)) for z in atoms.numbers]))
        batch.append(torch.full((len(atoms),), i, dtype=torch.int64))
    x, element, batch = torch.cat(feats), torch.cat(elems), torch.cat(batch)
    r_e = torch.tensor(r_e, dtype=torch.float64)
    r_f = torch.cat(r_f).double()
    n_frames = len(frames)
    n_atoms = torch.bincount(batch, minlength=n_frames).double()
    with torch.no_grad():  # start at the average residual variance
        for net in head.nets:
            last = net[-1]
            last.weight.mul_(0.1)
            last.bias.copy_(
                torch.tensor(
                    [
                        math.log(float((r_e**2 / n_atoms).mean()) + 1e-12),
                        math.log(float((r_f**2).mean()) + 1e-12),
                    ]
                )
            )
    params = [p for net in head.nets for p in net.parameters()]
    opt = torch.optim.Adam(params, lr=lr)
    for _ in range(epochs):
        opt.zero_grad()
        out = x.new_zeros((x.shape[0], 2))
        for k, net in enumerate(head.nets):
            idx = torch.nonzero(element == k).squeeze(-1)
            if idx.numel():
                out = out.index_put((idx,), net(x[idx]))
        out = out.clamp(-30.0, 20.0)
        var_e = torch.zeros(n_frames, dtype=torch.float64).index_add_(0, batch, out[:, 0].exp())
        nll_e = 0.5 * (var_e.log() + r_e**2 / var_e)
        nll_f = 0.5 * (out[:, 1:2] + r_f**2 / out[:, 1:2].exp())  # [n_atoms, 3]
        per_frame_f = torch.zeros(n_frames, dtype=torch.float64).index_add_(0, batch, nll_f.sum(1)) / (
            3 * n_atoms
        )
        loss = (nll_e + per_frame_f).mean()
        loss.backward()
        opt.step()
    head.metadata = {"aleatoric": True, "final_nll": float(loss.detach()), "n_frames": n_frames}
    return head.eval()


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
