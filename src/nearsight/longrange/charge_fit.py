"""Starting charges for a charge head: per-element charges fitted to the training energies.

The Coulomb energy is quadratic in the charges, so q = 0 is a stationary point of every loss: a
charge head that starts near zero gets almost no gradient and learns charges slowly, while the
short-range network absorbs what it can of the electrostatics within its cutoff (on the
synthetic salt of ``benchmarks/longrange_salt.py``, charges of ±0.10 instead of ±1 after 6 CPU
minutes).  This module finds where to start instead: per-element charges c_Z, conserved per
structure like the head's (:mod:`nearsight.models.charges`),

    q_i(c) = c_{Z_i} + (Q_s − Σ_{j ∈ s} c_{Z_j}) / N_s,

fitted together with a linear stand-in for the short-range model (per-element energies e_Z and a
two-body term: per element pair, n_basis Gaussians of the distance times a cosine cutoff at the
model's cutoff) to the training energies:

    E_s ≈ Σ_Z n_sZ e_Z + Σ_{AB,k} w_ABk Σ_{(i,j) ∈ AB, r_ij < r_c} φ_k(r_ij) + ½ q(c)ᵀ A_s q(c)

with A_s the Coulomb matrix of the model's own Coulomb term (method, Gaussian widths, exclusion
radius).  For fixed c the rest is linear and solved in closed form (ridge least squares on energies
per atom, the seed's energy loss); c minimises what remains (variable projection, L-BFGS from
several random starts).  Because the two-body term represents any pair potential inside r_c, the
charges are fixed by what it cannot represent: the Coulomb energy beyond r_c and its dependence on
the arrangement of all the other ions, the part only a long-range term can carry.

For neutral structures the energy does not change under c → −c; the sign is taken from charge or
dipole labels where the graphs carry them, else from Pauling electronegativities (the more
electronegative element negative).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .. import keys
from ..data.neighbours import collate
from ..models.forcefield import edge_vectors
from .coulomb import Coulomb

N_BASIS = 12
RESTARTS = 6


@dataclass
class ChargeFit:
    """Fitted per-element charges ``{Z: c}`` (e), the energy RMSE (eV/atom) of the fit with them and
    with all charges zero, the mean Coulomb energy per atom at these charges (eV) and the number of
    structures used."""

    charges: dict[int, float]
    rmse: float
    rmse_zero: float
    coulomb_per_atom: float
    n_structures: int
    sign_from: str


def fit_element_charges(
    graphs: Sequence[dict],
    coulomb: Coulomb,
    species: Sequence[int],
    cutoff: float,
    max_structures: int = 1000,
    seed: int = 0,
) -> ChargeFit:
    """Per-element starting charges from the energies of ``graphs`` (per-structure graphs with
    ``keys.REF_ENERGY``; those without an energy label are skipped).  ``coulomb`` is the model's
    Coulomb term, ``cutoff`` (Å) that of the short-range model (the range of the two-body term)."""
    species = [int(z) for z in species]
    generator = torch.Generator().manual_seed(seed)
    usable = _sample(graphs, max_structures, generator)
    terms = _structure_terms(usable, coulomb, species, cutoff)
    fit = _VariableProjection(*terms[:-1])
    best_c, best_loss = None, math.inf
    for _ in range(RESTARTS):
        c, loss = _minimise(fit, 0.5 * torch.randn(len(species), generator=generator, dtype=torch.float64))
        if loss < best_loss:
            best_c, best_loss = c, loss
    counts = terms[3][:, : len(species)].sum(0)  # atoms of each element
    charges = best_c - (counts @ best_c) / counts.sum()  # c + const gives the same q: mean zero
    neutral = terms[-1]
    charges, sign_from = _choose_sign(charges, usable, species, neutral, counts)
    coulomb_per_atom = float((fit.coulomb(charges) / fit.n_atoms).mean())
    return ChargeFit(
        charges={z: float(c) for z, c in zip(species, charges)},
        rmse=math.sqrt(best_loss),
        rmse_zero=math.sqrt(float(fit.loss(torch.zeros_like(charges)))),
        coulomb_per_atom=coulomb_per_atom,
        n_structures=len(usable),
        sign_from=sign_from,
    )


def _minimise(fit: _VariableProjection, start: torch.Tensor) -> tuple[torch.Tensor, float]:
    """L-BFGS on the charges from ``start``: the charges and the loss there."""
    c = start.clone().requires_grad_()
    optimiser = torch.optim.LBFGS([c], max_iter=300, tolerance_grad=1e-12, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = fit.loss(c)
        loss.backward()
        return loss

    optimiser.step(closure)
    c = c.detach()
    return c, float(fit.loss(c))


def mean_coulomb_per_atom(
    graphs: Sequence[dict], coulomb: Coulomb, species: Sequence[int], charges: dict[int, float]
) -> float:
    """The mean over ``graphs`` (at most 1000, drawn with seed 0) of the Coulomb energy per atom
    (eV) of per-element charges ``{Z: c}``, conserved per structure."""
    species = [int(z) for z in species]
    usable = _sample(graphs, 1000, torch.Generator().manual_seed(0))
    G, h, e0, _, _, n_atoms, _ = _structure_terms(usable, coulomb, species, 1.0)
    c = torch.tensor([charges[z] for z in species], dtype=torch.float64)
    return float((_coulomb_energy(c, G, h, e0) / n_atoms).mean())


def _coulomb_energy(c: torch.Tensor, G: torch.Tensor, h: torch.Tensor, e0: torch.Tensor) -> torch.Tensor:
    """E_s = ½ cᵀ G_s c + h_s·c + e0_s ``[S]`` (eV): the Coulomb energy of per-element charges c."""
    return 0.5 * torch.einsum("k,skl,l->s", c, G, c) + h @ c + e0


def _sample(graphs: Sequence[dict], max_structures: int, generator: torch.Generator) -> list[dict]:
    usable = [g for g in graphs if bool(g.get(keys.HAS_ENERGY, torch.ones(1, dtype=torch.bool)).all())]
    if not usable:
        raise ValueError("initial charges: no training structure has an energy label to fit them to")
    if len(usable) > max_structures:
        pick = torch.randperm(len(usable), generator=generator)[:max_structures].tolist()
        usable = [usable[i] for i in sorted(pick)]
    return usable


def _structure_terms(graphs: Sequence[dict], coulomb: Coulomb, species: list[int], cutoff: float):
    """Per structure: the Coulomb energy as a quadratic form in c (G ``[S, K, K]``, h ``[S, K]``,
    e0 ``[S]``), the linear features ``[S, F]`` (element counts, two-body sums), energies ``[S]``,
    atom counts ``[S]`` and whether every structure is neutral."""
    K = len(species)
    index = {z: k for k, z in enumerate(species)}
    pair_index = {
        (a, b): n for n, (a, b) in enumerate((a, b) for i, a in enumerate(species) for b in species[i:])
    }
    centres = torch.linspace(0.0, cutoff, N_BASIS + 1, dtype=torch.float64)[1:]
    width = cutoff / N_BASIS
    G, h, e0, features, energies, n_atoms = [], [], [], [], [], []
    neutral = True
    for start in range(0, len(graphs), 64):
        batch = {
            k: v.detach() if torch.is_tensor(v) else v for k, v in collate(graphs[start : start + 64]).items()
        }
        positions = batch[keys.POSITIONS].double()
        cell = batch[keys.CELL].double()
        vectors = edge_vectors(
            positions, cell, batch[keys.BATCH], batch[keys.EDGE_INDEX], batch[keys.CELL_SHIFTS].double()
        )
        r = torch.linalg.norm(vectors, dim=1)
        sender, receiver = batch[keys.EDGE_INDEX]
        numbers = batch[keys.ATOMIC_NUMBERS]
        element = torch.tensor([index[int(z)] for z in numbers.tolist()])
        pair = torch.tensor(
            [
                pair_index[(min(a, b), max(a, b))]
                for a, b in zip(numbers[sender].tolist(), numbers[receiver].tolist())
            ],
            dtype=torch.long,
        )
        basis = (
            torch.exp(-(((r[:, None] - centres) / width) ** 2))
            * 0.5
            * (torch.cos(math.pi * r / cutoff) + 1)[:, None]
        )
        basis = basis * (r < cutoff)[:, None]  # [n_edges, n_basis]
        n_graphs = batch[keys.N_ATOMS].shape[0]
        edge_graph = batch[keys.BATCH][sender]
        two_body = torch.zeros((n_graphs, len(pair_index), N_BASIS), dtype=torch.float64)
        two_body.index_put_((edge_graph, pair), 0.5 * basis, accumulate=True)  # directed edges: halved
        counts = torch.zeros((n_graphs, K), dtype=torch.float64)
        counts.index_put_(
            (batch[keys.BATCH], element), torch.ones(len(element), dtype=torch.float64), accumulate=True
        )
        total = batch.get(keys.TOTAL_CHARGE, torch.zeros(n_graphs)).double()
        for g in range(n_graphs):
            atoms = torch.nonzero(batch[keys.BATCH] == g).squeeze(1)
            n = atoms.numel()
            onehot = torch.nn.functional.one_hot(element[atoms], K).double()  # [n, K]
            P = onehot - onehot.mean(0, keepdim=True)  # q = P c + Q/N: conserved per structure
            b = torch.full((n,), float(total[g]) / n, dtype=torch.float64)
            neutral = neutral and abs(float(total[g])) < 1e-9
            op = coulomb.operator(
                positions[atoms],
                cell[g],
                batch[keys.PBC][g],
                coulomb.atom_widths({keys.ATOMIC_NUMBERS: numbers[atoms], keys.POSITIONS: positions[atoms]}),
                b,
                g,
            )
            AP = op.potential(torch.cat([P, b[:, None]], 1))  # [n, K + 1]: A P and A b
            G.append(P.T @ AP[:, :K])
            h.append(P.T @ AP[:, K])
            e0.append(0.5 * b @ AP[:, K])
        features.append(torch.cat([counts, two_body.flatten(1)], 1))
        energies.append(batch[keys.REF_ENERGY].double())
        n_atoms.append(batch[keys.N_ATOMS].double())
    G = torch.stack(G)
    G = 0.5 * (G + G.transpose(1, 2))
    return (
        G,
        torch.stack(h),
        torch.stack(e0),
        torch.cat(features),
        torch.cat(energies),
        torch.cat(n_atoms),
        neutral,
    )


class _VariableProjection:
    """The fit's loss as a function of the charges alone: for given c the linear weights are the
    ridge least-squares solution; the loss is the mean squared residual of energies per atom."""

    def __init__(self, G, h, e0, features, energies, n_atoms) -> None:  # noqa: ANN001
        self.G, self.h, self.e0, self.n_atoms = G, h, e0, n_atoms
        self.energies = energies
        x = features / n_atoms[:, None]
        self.scale = x.pow(2).mean(0).sqrt().clamp_min(1e-12)
        x = x / self.scale
        keep = self.scale > 1e-10  # element pairs that never occur within r_c
        self.x = x[:, keep]
        ridge = 1e-8 * float(x.shape[0])
        self.solve = torch.linalg.inv(self.x.T @ self.x + ridge * torch.eye(self.x.shape[1], dtype=x.dtype))

    def coulomb(self, c: torch.Tensor) -> torch.Tensor:
        """Coulomb energy of every structure ``[S]`` (eV) at per-element charges c."""
        return _coulomb_energy(c, self.G, self.h, self.e0)

    def loss(self, c: torch.Tensor) -> torch.Tensor:
        y = (self.energies - self.coulomb(c)) / self.n_atoms  # [S], eV/atom
        w = self.solve @ (self.x.T @ y)
        return (y - self.x @ w).pow(2).mean()


def _choose_sign(
    charges: torch.Tensor, graphs: Sequence[dict], species: list[int], neutral: bool, counts: torch.Tensor
):
    """The sign of c for neutral data, where the energy does not fix it: from charge labels, else
    dipole labels, else Pauling electronegativities (the more electronegative, the more negative)."""
    if not neutral:
        return charges, "total charges"
    charge_key, dipole_key = keys.label_key(keys.CHARGES), keys.label_key(keys.DIPOLE)
    agreement = 0.0
    for g in graphs:
        if charge_key in g:
            q = _structure_charges(charges, g, species)
            agreement += float((q * g[charge_key].double().reshape(-1)).sum())
    if agreement != 0.0:
        return (charges if agreement > 0 else -charges), "charge labels"
    for g in graphs:
        if dipole_key in g:
            q = _structure_charges(charges, g, species)
            mu = (q[:, None] * g[keys.POSITIONS].double()).sum(0)
            agreement += float(mu @ g[dipole_key].double().reshape(-1))
    if agreement != 0.0:
        return (charges if agreement > 0 else -charges), "dipole labels"
    from tad_mctc.data import PAULING

    chi = PAULING(dtype=torch.float64)[torch.tensor(species)]
    agreement = -float((counts * charges * (chi - (counts * chi).sum() / counts.sum())).sum())
    return (charges if agreement >= 0 else -charges), "electronegativity"


def _structure_charges(charges: torch.Tensor, graph: dict, species: list[int]) -> torch.Tensor:
    element = torch.tensor([species.index(int(z)) for z in graph[keys.ATOMIC_NUMBERS].tolist()])
    q = charges[element]
    return q - q.mean()
