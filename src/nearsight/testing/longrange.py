"""Far-apart fragments of a model with long-range terms: the interaction must decay as the physics says.

A short-range model is exactly additive beyond its cutoff (:func:`~.locality.check_additivity`).
With a Coulomb term (charges from the model) or D3 dispersion the interaction of two fragments A and B
(total charges Q_A, Q_B) whose centres are a distance d apart goes on, as the multipole expansion of
their interaction:

    ΔE(d) = E(A+B at d) − E(A) − E(B) = k_e Q_A Q_B / d + O(1/d^p),    k_e = 14.399645 eV·Å/e²

with p = 2 when a fragment is charged (charge–dipole), p = 3 when both are neutral (dipole–dipole),
and, for a model with D3 but no Coulomb term, ΔE = O(1/d⁶) (London dispersion, C6/d⁶, damped).
The check evaluates ΔE at n distances d_k = d_0 ρ^k (d_0: the fragments' radii + the short-range
cutoff + ``gap``, ρ = ``ratio``; for a D3-only model the largest d stays inside D3's pair cutoff minus
its taper), takes the residual R(d) = ΔE(d) − k_e Q_A Q_B/d (the monopole term only with a Coulomb
term) and extrapolates s(d) = d^{p−1} R(d), a polynomial of degree n − 1 in d_0/d through the n
points (Richardson extrapolation), to d → ∞.  A model with the right long-range physics has
s(∞) = 0: its residual decays at least as 1/d^p.  The error is |s(∞)| relative to
max(max_k d_k^{p−1} |ΔE(d_k)|, atol d_max^{p−1}), i.e. the share of the interaction that decays
too slowly: a Coulomb prefactor off by a factor 2 gives about 0.5, a wrong sign of Q_A Q_B about 2,
and charge moved from one far fragment to the other a residual that does not decay at all.  For a
correct model the neglected orders leave about ρ^{−n(n−1)/2} of the faster terms (1/64 of the
D3 share of ΔE(d_0) with the defaults), so the default tolerance is 0.05.

The terms a model has are read from its ``coulomb`` and ``dispersion`` attributes
(:class:`~nearsight.longrange.model.LongRangePotential`); ``coulomb=``/``dispersion=`` override
them (e.g. for an ASE calculator).  The fragments' charges are ``charges=(Q_A, Q_B)`` or their
``info['charge']``; the pair gets Q_A + Q_B (``keys.TOTAL_CHARGE`` of the graph).  Where the model
predicts charges, the detail reports the charge it puts on A in the pair: a model that conserves
only the total charge of a structure may move charge between fragments at any distance (identical
fragments, as in :func:`~.report.run_all_checks`, are spared by symmetry).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from ase import Atoms

from .. import keys
from ..data.neighbours import atoms_to_graph
from ._common import CheckResult, Evaluator, as_rng, make_result, random_rotation, skipped
from .locality import _radius, check_additivity

K_E = 14.399645351950548
"""Coulomb's constant k_e = e²/(4π ε_0) in eV·Å/e² (torch-pme's ``prefactors.eV_A``)."""


def long_range_terms(model) -> dict[str, object]:
    """The long-range terms of a model (``{"coulomb": module, "dispersion": module}``, those it has);
    empty for a short-range model or an ASE calculator."""
    module = Evaluator.wrap(model).module
    return {
        name: getattr(module, name)
        for name in ("coulomb", "dispersion")
        if getattr(module, name, None) is not None
    }


def _cluster(a: Atoms, charge: float) -> Atoms:
    a = a.copy()
    a.calc = None
    a.pbc = False
    a.cell = np.zeros((3, 3))
    a.info["charge"] = charge
    return a


def _charge_on_first(ev: Evaluator, pair: Atoms, n_first: int) -> float | None:
    """Σ q_i over the first ``n_first`` atoms of ``pair`` (e), where the model predicts charges."""
    if ev.forcefield is None:
        return None
    with torch.no_grad():
        out = ev.forcefield(atoms_to_graph(pair, ev.cutoff, torch.float64), forces=False)
    if keys.CHARGES not in out:
        return None
    return float(out[keys.CHARGES][:n_first].sum())


def extrapolate_to_zero(x: np.ndarray, y: np.ndarray) -> float:
    """The value at x = 0 of the polynomial of degree len(x) − 1 through (x_k, y_k) (Lagrange)."""
    total = 0.0
    for k in range(len(x)):
        others = np.delete(x, k)
        total += y[k] * float(np.prod(others / (others - x[k])))
    return total


def check_long_range_additivity(
    model,
    atoms: Atoms,
    other: Atoms | None = None,
    *,
    tol: float = 0.05,
    rng: np.random.Generator | None = None,
    charges: tuple[float, float] | None = None,
    n_distances: int = 4,
    ratio: float = 2.0,
    gap: float = 1.0,
    atol: float = 1e-9,
    cutoff: float | None = None,
    coulomb: bool | None = None,
    dispersion: bool | None = None,
) -> CheckResult:
    """ΔE(d) − k_e Q_A Q_B/d decays at least as 1/d^p as fragments A and B move apart (module
    docstring); the error is the relative share of a slower decay (``tol`` on it).

    ``atoms`` (A) and ``other`` (B; default a randomly rotated copy of A, charge Q_A) are isolated
    clusters; B moves along one random direction.  ``atol`` (eV) is the size below which energy
    differences count as round-off.  A model without long-range terms gets the exact
    :func:`~.locality.check_additivity` instead.
    """
    rng = as_rng(rng)
    ev = Evaluator.wrap(model, cutoff)
    r_cut = ev.need_cutoff()
    terms = long_range_terms(ev)
    has_coulomb = "coulomb" in terms if coulomb is None else bool(coulomb)
    has_d3 = "dispersion" in terms if dispersion is None else bool(dispersion)
    if not (has_coulomb or has_d3):
        return check_additivity(ev, atoms, other, rng=rng, gap=gap)
    if n_distances < 3 or not ratio > 1:
        raise ValueError(f"n_distances = {n_distances} must be >= 3 and ratio = {ratio} > 1")
    q_a = float(atoms.info.get("charge", 0.0)) if charges is None else float(charges[0])
    if charges is not None:
        q_b = float(charges[1])
    else:
        q_b = q_a if other is None else float(other.info.get("charge", 0.0))
    frag_a = _cluster(atoms, q_a)
    frag_b = _cluster(atoms if other is None else other, q_b)
    if other is None:
        centre = frag_b.positions.mean(axis=0)
        frag_b.positions = (frag_b.positions - centre) @ random_rotation(rng).T + centre
    direction = rng.standard_normal(3)
    direction /= np.linalg.norm(direction)
    frag_b.positions += frag_a.positions.mean(axis=0) - frag_b.positions.mean(axis=0)
    size = _radius(frag_a) + _radius(frag_b)
    d0 = size + r_cut + gap
    d_max = d0 * ratio ** (n_distances - 1)
    if has_coulomb:
        p, why = (2, "charge–dipole") if q_a or q_b else (3, "dipole–dipole")
    else:
        p, why = 6, "dispersion"
        d3 = terms.get("dispersion")
        if d3 is not None:  # stay inside D3's pair range, below its taper
            d_max = min(d_max, float(d3.cutoff) - float(d3.taper) - size)
            if d_max < 1.5 * d0:
                return skipped(
                    "longrange_additivity",
                    tol,
                    f"the fragments are too large ({size:.3g} Å) to follow D3's decay from {d0:.3g} Å to its "
                    f"pair cutoff minus taper ({float(d3.cutoff) - float(d3.taper):.3g} Å)",
                )
    distances = d0 * (d_max / d0) ** (np.arange(n_distances) / (n_distances - 1))  # [n], Å
    e_a, e_b = ev.energy(frag_a), ev.energy(frag_b)
    delta, transfer = [], None
    for k, d in enumerate(distances):
        moved = frag_b.copy()
        moved.positions += d * direction
        pair = frag_a + moved
        pair.info["charge"] = q_a + q_b
        delta.append(ev.energy(pair) - e_a - e_b)
        if k == 0:
            on_a = _charge_on_first(ev, pair, len(frag_a))
            transfer = None if on_a is None else on_a - q_a
    delta = np.asarray(delta)  # [n], eV
    monopole = K_E * q_a * q_b / distances if has_coulomb else np.zeros_like(distances)
    residual = delta - monopole
    scaled = residual * distances ** (p - 1)  # s(d) = d^{p−1} R(d)
    limit = extrapolate_to_zero(d0 / distances, scaled)
    scale = max(
        float(np.abs(scaled + monopole * distances ** (p - 1)).max()), atol * distances[-1] ** (p - 1)
    )
    error = abs(limit) / scale if all(np.isfinite(delta)) else math.inf
    parts = ", ".join(f"{d:.3g} Å: {e:.4g}" for d, e in zip(distances, delta))
    detail = (
        f"fragments of {len(frag_a)} and {len(frag_b)} atoms, Q = {q_a:g}, {q_b:g} e; ΔE(d) [eV] {parts}; "
        f"expected k_e Q_A Q_B/d + O(1/d^{p}) ({why}"
        + (", Coulomb" if has_coulomb else "")
        + (", D3" if has_d3 else "")
        + f"); lim d^{p - 1}(ΔE − k_e Q_A Q_B/d) = {limit:.4g} eV·Å^{p - 1}, "
        f"relative to max d^{p - 1} |ΔE(d)| = {scale:.4g}"
    )
    if has_coulomb and q_a * q_b:
        fitted = extrapolate_to_zero(d0 / distances, delta * distances)
        detail += f"; lim d ΔE = {fitted:.6g} eV·Å (k_e Q_A Q_B = {K_E * q_a * q_b:.6g})"
    if transfer is not None:
        detail += f"; charge moved onto A in the pair at {distances[0]:.3g} Å: {transfer:.3g} e"
    return make_result("longrange_additivity", error, tol, detail)
