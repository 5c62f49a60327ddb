"""ACSF values against a direct loop over neighbours, and triplet enumeration."""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch
from ase.build import bulk, molecule

from nearsight import keys
from nearsight.data.frame import Frame
from nearsight.data.neighbours import frame_to_graph
from nearsight.descriptors.acsf import ACSF, default_acsf_params
from nearsight.descriptors.triplets import unordered_edge_pairs
from nearsight.models.forcefield import edge_vectors


def fc(r, rc):
    return 0.5 * (math.cos(math.pi * r / rc) + 1) if r < rc else 0.0


def reference_acsf(atoms, species, rc, rca, g2, g3, g4, g5, ga):
    """Direct evaluation over explicit periodic images (slow, obvious), in DScribe's order:
    per element [G1, G2s, G3s], then per element pair (a >= b, at a(a+1)/2 + b) [G4s, G5s, GAs]."""
    from ase.neighborlist import neighbor_list

    i_list, j_list, D = neighbor_list("ijD", atoms, rc)
    pairs = [(a, b) for a in range(len(species)) for b in range(a + 1)]
    out = []
    for i in range(len(atoms)):
        mask = i_list == i
        js, vecs = j_list[mask], D[mask]
        zj = [species.index(atoms.numbers[j]) for j in js]
        rad = np.zeros((len(species), 1 + len(g2) + len(g3)))
        for z, v in zip(zj, vecs):
            r = np.linalg.norm(v)
            rad[z, 0] += fc(r, rc)
            for p, (eta, rs) in enumerate(g2):
                rad[z, 1 + p] += math.exp(-eta * (r - rs) ** 2) * fc(r, rc)
            for p, kappa in enumerate(g3):
                rad[z, 1 + len(g2) + p] += math.cos(kappa * r) * fc(r, rc)
        ang = np.zeros((len(pairs), len(g4) + len(g5) + len(ga)))
        for a, b in itertools.combinations(range(len(js)), 2):
            u, w = vecs[a], vecs[b]
            rij, rik = np.linalg.norm(u), np.linalg.norm(w)
            if rij >= rca or rik >= rca:
                continue
            rjk = np.linalg.norm(w - u)
            cos = u @ w / (rij * rik)
            slot = pairs.index(tuple(sorted((zj[a], zj[b]), reverse=True)))
            col = 0
            for eta, zeta, lam in g4:
                ang[slot, col] += (
                    2 ** (1 - zeta)
                    * (1 + lam * cos) ** zeta
                    * math.exp(-eta * (rij**2 + rik**2 + rjk**2))
                    * fc(rij, rca)
                    * fc(rik, rca)
                    * fc(rjk, rca)
                )
                col += 1
            for eta, zeta, lam in g5:
                ang[slot, col] += (
                    2 ** (1 - zeta)
                    * (1 + lam * cos) ** zeta
                    * math.exp(-eta * (rij**2 + rik**2))
                    * fc(rij, rca)
                    * fc(rik, rca)
                )
                col += 1
            for eta, zeta, rs, ts in ga:
                theta = math.acos(0.95 * cos)
                ang[slot, col] += (
                    2 ** (1 - zeta)
                    * (1 + math.cos(theta - ts)) ** zeta
                    * math.exp(-eta * ((rij + rik) / 2 - rs) ** 2)
                    * fc(rij, rca)
                    * fc(rik, rca)
                )
                col += 1
        out.append(np.concatenate([rad.ravel(), ang.ravel()]))
    return np.array(out)


def _compute(acsf, atoms):
    graph = frame_to_graph(Frame.from_atoms(atoms), acsf.r_cut)
    graph[keys.EDGE_VECTORS] = edge_vectors(
        graph[keys.POSITIONS],
        graph[keys.CELL],
        graph[keys.BATCH],
        graph[keys.EDGE_INDEX],
        graph[keys.CELL_SHIFTS],
    )
    return acsf(graph).numpy()


def test_acsf_matches_direct_loop_molecule_and_crystal():
    g2 = [(0.5, 0.0), (2.0, 1.5), (4.0, 3.0)]
    g3 = [0.8, 2.1]
    g4 = [(0.01, 1.0, 1.0), (0.05, 4.0, -1.0)]
    g5 = [(0.02, 2.0, 1.0)]
    ga = [(3.0, 8.0, 1.2, 0.5), (2.0, 32.0, 2.0, 2.5)]
    mol = molecule("CH3CH2OH")
    mol.rattle(0.05, seed=2)
    sic = bulk("SiC", "zincblende", a=4.36)  # cell smaller than 2 r_c: many images
    sic.rattle(0.03, seed=4)
    for atoms, species in ((mol, [1, 6, 8]), (sic, [6, 14])):
        acsf = ACSF(species, 4.5, g2, g3, g4, g5, ga_params=ga, r_cut_angular=3.8)
        ours = _compute(acsf, atoms)
        ref = reference_acsf(atoms, species, 4.5, 3.8, g2, g3, g4, g5, ga)
        assert ours.shape == (len(atoms), acsf.n_features) == ref.shape
        np.testing.assert_allclose(ours, ref, rtol=1e-10, atol=1e-12)


def test_triplets_enumerate_each_unordered_pair_once():
    centres = torch.tensor([0, 0, 0, 1, 3, 3, 3, 3])
    a, b = unordered_edge_pairs(centres, 4)
    got = sorted(zip(a.tolist(), b.tolist()))
    expected = sorted((x, y) for x in range(8) for y in range(x + 1, 8) if centres[x] == centres[y])
    assert got == expected


def test_default_params_and_errors():
    p = default_acsf_params(5.0, 8, 3.5, angular="ani", n_angle_sections=4, n_angular_shifts=2)
    assert len(p["g2_params"]) == 8 and len(p["ga_params"]) == 8
    acsf = ACSF([8, 1], 5.0, **p, r_cut_angular=3.5)
    assert acsf.species == [1, 8] and acsf.n_features == 2 * (1 + 8) + 3 * 8
    import pytest

    with pytest.raises(ValueError, match="angular must be"):
        default_acsf_params(5.0, angular="soap")
    with pytest.raises(ValueError, match="r_cut_angular"):
        ACSF([1], 3.0, g2_params=[(1.0, 0.0)], r_cut_angular=4.0)
