# %% [markdown]
# # Locality: is a cutoff enough?
#
# Every nearsight model writes the energy as a sum of atomic energies, E = Σ_i ε_i, where ε_i
# depends only on the atoms within a cutoff r_c of atom i (or, for a message-passing model with T
# layers, within T hops of r_c). Why should that work? Kohn's *nearsightedness of electronic
# matter* (PRL 76, 3168 (1996); Prodan & Kohn, PNAS 102, 11635 (2005)):
#
# * in a system with a gap (molecules, insulators) the effect of a local perturbation decays
#   **exponentially** with distance: the one-body density matrix ρ(r, r′) falls as exp(−|r−r′|/ξ);
# * in a metal at zero electronic temperature it decays only as a **power law**, with Friedel
#   oscillations;
# * a finite electronic temperature (Fermi-Dirac smearing) restores exponential decay, with a
#   decay length ∝ 1/T.
#
# r_c is usually chosen by habit (5 Å, 6 Å). `nearsight.locality` measures instead:
#
# 1. the **force response** K_ij = ‖∂F_i/∂R_j‖ of a reference method against r_ij, its decay
#    length, and the cutoff that keeps the neglected force below a tolerance;
# 2. the **density-matrix decay** of a PySCF calculation, with and without electronic temperature;
# 3. the same force response of a **model**, which is exactly zero beyond 2 × layers × r_c.
#
# The command line does all of it: `nearsight locality molecule.xyz --method pbe --basis def2-svp
# --model model.pt --tolerance 0.01 --output-dir out/`.

# %%
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from ase.build import molecule

from nearsight.locality import (
    density_matrix_decay,
    force_response,
    format_table,
    locality_summary,
    model_force_response,
    plot_locality,
    receptive_field,
    write_json,
)
from nearsight.qm.oracles import PySCFOracle

QUICK = os.environ.get("NEARSIGHT_TUTORIAL_QUICK", "0") not in ("", "0")
OUT = Path(os.environ.get("NEARSIGHT_TUTORIAL_DIR", "outputs/tutorials/locality")).resolve()
OUT.mkdir(parents=True, exist_ok=True)
torch.manual_seed(0)

# %% [markdown]
# ## 1. The force response of a molecule
#
# Move atom j by δ and watch the force on atom i: ∂F_i/∂R_j is a 3×3 block of the Hessian, and its
# largest singular value K_ij (eV/Å²) is the largest force change on i per Å that j can cause.
# Central differences need six force calculations per displaced atom; because the Hessian is
# symmetric, displacing only the *centres* whose forces we watch gives all their blocks.
#
# We take trans-butane (14 atoms, 5.6 Å end to end) and watch one terminal carbon. The quick
# version uses Hartree-Fock in the minimal STO-3G basis; the full one HF/6-31G*.

# %%
butane = molecule("trans-butane")
basis = "sto-3g" if QUICK else "6-31g*"
oracle = PySCFOracle("hf", basis=basis, conv_tol=1e-11)
centres = [0]  # a methyl carbon at one end
reference = force_response(butane, oracle, centres=centres, delta=0.01)
order = np.argsort(reference.distances)
for r, k, j in zip(reference.distances[order], reference.response[order], reference.partners[order]):
    print(f"  {butane[int(j)].symbol:>2} at {r:5.2f} Å: K = {k:9.2e} eV/Å²")
print(f"numerical noise (sum rule): {reference.noise:.1e} eV/Å²")

# %% [markdown]
# The response falls by orders of magnitude from bonded neighbours (~1.1–1.5 Å) to the far end
# of the molecule. `reference.fit` fits log K against r on the *tail envelope* (the largest
# response at or beyond each distance) with an exponential, K ≈ A exp(−r/ξ), and a power law,
# K ≈ B r^(−p), and says which fits better.

# %%
fit = reference.fit
print(f"exponential decay length ξ = {fit.decay_length:.2f} Å, power-law exponent p = {fit.exponent:.2f}, "
      f"better: {fit.better} (window {fit.window[0]:.2f}–{fit.window[1]:.2f} Å)")  # fmt: skip
far, near = reference.response[reference.distances > 4.0], reference.response[reference.distances < 1.6]
assert far.max() < 0.05 * near.max(), "the response of a gapped molecule decays with distance"

# %% [markdown]
# ## 2. The density matrix: gapped against metallic
#
# The force response is the observable; the density matrix is the cause. In an orthonormal,
# atom-centred (Löwdin) basis, D_AB = max |ρ_μν| over the block of atoms A and B tells how
# strongly the occupied states couple them. A chain of hydrogen atoms shows the two regimes:
# equally spaced it is a 1D metal (a half-filled band), dimerised (alternating 0.74 and 1.26 Å)
# it has a gap of several eV. A finite electronic temperature T_e smears the Fermi surface of
# the metal and its density matrix decays exponentially again.

# %%
n_h = 24 if QUICK else 60


def h_chain(n: int, short: float, long: float) -> Atoms:
    x = np.concatenate([[0.0], np.cumsum([short if k % 2 == 0 else long for k in range(n - 1)])])
    return Atoms(f"H{n}", positions=np.c_[x, np.zeros(n), np.zeros(n)])


settings = {
    "method": "dft",
    "xc": "lda,vwn",
    "basis": "sto-3g",
    "centres": [n_h // 2 - 1],
    "fit_window": (3.0, None),
}
chains = {
    "metal, T_e = 0 K": density_matrix_decay(h_chain(n_h, 1.0, 1.0), **settings),
    "metal, T_e = 30000 K": density_matrix_decay(h_chain(n_h, 1.0, 1.0), electronic_temperature_K=30000.0, **settings),
    "dimerised, T_e = 0 K": density_matrix_decay(h_chain(n_h, 0.74, 1.26), **settings),
}  # fmt: skip
for name, d in chains.items():
    print(f"{name:<22} gap {d.gap_eV:5.2f} eV  ξ = {d.fit.decay_length:5.2f} Å  p = {d.fit.exponent:4.2f}  "
          f"better: {d.fit.better}")  # fmt: skip
assert chains["dimerised, T_e = 0 K"].fit.decay_length < chains["metal, T_e = 0 K"].fit.decay_length
assert chains["metal, T_e = 30000 K"].fit.decay_length < chains["metal, T_e = 0 K"].fit.decay_length

# %% [markdown]
# A finite chain of N atoms is never quite a metal: its levels are discrete, with a gap ~ 1/N
# (printed above), so far enough out even the "metal" decays exponentially. The benchmark
# `benchmarks/hydrogen_chain_locality.py` uses 80 atoms and four electronic temperatures.
#
# ## 3. What a model can see
#
# A model with T message-passing layers and cutoff r_c gives atom k an energy that depends on
# atoms within T·r_c (its *receptive field*). The force on i involves every ε_k that sees i, and
# each of those sees atoms up to T·r_c further: the force response of a model is **exactly zero**
# beyond 2·T·r_c, whatever its weights. `model_force_response` computes K_ij of a model from its
# exact Hessian (autograd), so the zeros are exact. Here an untrained one-layer equivariant model
# with r_c = 1.6 Å (it sees only bonded neighbours) on the same butane: its force range is 3.2 Å,
# shorter than the molecule, and between 1.6 and 3.2 Å it still responds (two bonds share an atom).

# %%
from nearsight.models.equivariant import EquivariantPotential  # noqa: E402

model = EquivariantPotential([1, 6], cutoff=1.6, channels=4, l_max=1, sh_l_max=2, correlation=2,
                             num_layers=1, radial_hidden=(8,), readout_hidden=4).double()  # fmt: skip
model.set_statistics({1: -13.6, 6: -1030.0}, 0.5, avg_num_neighbours=3.0)
ranges = receptive_field(model)
seen = model_force_response(butane, model, centres=centres)
print(f"receptive field {ranges['receptive_field']:.1f} Å, force range {ranges['force_range']:.1f} Å")
beyond = seen.distances > ranges["force_range"]
print(f"largest model response beyond it: {seen.response[beyond].max() if beyond.any() else 0.0:.1e} eV/Å²")
assert beyond.any() and np.all(seen.response[beyond] == 0.0)
between = (seen.distances > ranges["receptive_field"]) & (seen.distances < ranges["force_range"])
assert np.any(seen.response[between] > 0.0)

# %% [markdown]
# ## 4. Choosing r_c
#
# A cutoff r_c ignores, for atom i, every atom beyond it. If those atoms move by a thermal
# amplitude a (~0.1 Å), the force on i changes by up to a · Σ_{r_ij > r_c} K_ij (all of them
# moving the worst way: a bound), which the model cannot represent. `cutoff_for(tolerance)` gives
# the smallest cutoff that keeps this below a tolerance in eV/Å; `kind="max"` uses the single
# worst atom instead of the sum. A cutoff equal to the largest distance in the structure means
# the structure is too small to tell: `cutoff_for` warns, and the value is only a lower bound
# (butane is 5.6 Å long; the benchmark uses 1-pentanol).

# %%
for tol in (0.01, 0.05):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r_sum = reference.cutoff_for(tol, amplitude_A=0.1)
        r_max = reference.cutoff_for(tol, amplitude_A=0.1, kind="max")
    note = "  (too small a molecule: at least this)" if caught else ""
    print(
        f"tolerance {tol:g} eV/Å: r_c ≥ {r_sum:.2f} Å (all atoms beyond move), ≥ {r_max:.2f} Å (one moves){note}"
    )
    assert r_max <= r_sum

summary = locality_summary(reference, seen, list(chains.values()), tolerances=(0.01, 0.05), receptive=ranges,
                           structure=f"trans-butane, HF/{basis}")  # fmt: skip
print(format_table(summary))
write_json(OUT / "locality.json", summary)
cut = {
    f"r_c for {c['tolerance_eV_per_A']:g} eV/Å: {c['cutoff_A']:.2f} Å": c["cutoff_A"]
    for c in summary["reference"]["cutoffs"]
}
plot_locality(OUT / "locality.png", reference, seen, list(chains.values()), cut, ranges, title="trans-butane")
print(OUT / "locality.png")

# %% [markdown]
# The plot shows K_ij on a log scale for the reference (circles) and the model (crosses) with
# their fits, the cutoff the tolerance needs, and the model's cutoff and force range; the second
# panel the density-matrix decays. For the PBE/def2-SVP level of the ethanol examples, the
# benchmark `benchmarks/force_response_locality.py` measures this on 1-pentanol and compares the
# implied cutoff with the examples' r_c = 5 Å (see `benchmarks/RESULTS_locality.md`).
