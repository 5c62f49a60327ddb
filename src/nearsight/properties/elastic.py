"""Elastic constants C_ij from the stress of finitely strained cells (matscipy's strain patterns and fit).

A relaxed crystal (forces and stress ≈ 0) is strained by ε = k δ along each pattern of the chosen
symmetry (``triclinic``: each Voigt component in turn, xx yy zz yz xz xy with engineering shears
γ = 2ε_ij), k = −(n−1)/2 … (n−1)/2; the cell and the positions follow x → (I + ε) x. With
``relax_internal`` (relaxed-ion constants) the positions are then relaxed at the fixed strained cell,
so C includes the internal-strain (Kleinman) relaxation that lowers e.g. C44 of diamond; without it
the constants are clamped-ion. Hooke's law, σ_i = Σ_j C_ij ε_j, is fitted by linear regression of each
stress component against the strain (``matscipy.elasticity.fit_elastic_constants``), which also gives
the standard error of each slope. In triclinic mode every column j of the slope matrix D_ij = ∂σ_i/∂ε_j
is fitted from its own pattern; C = (D + Dᵀ)/2, and ``asymmetry_GPa`` = max |D − Dᵀ|/2 is a check of
the model: a stress that is the strain derivative of an energy gives a symmetric D.

From C and the compliance S = C⁻¹ (Voigt, Reuss, Hill; Hill, Proc. Phys. Soc. A 65, 349 (1952)):

    K_V = [(C11 + C22 + C33) + 2(C12 + C13 + C23)] / 9
    G_V = [(C11 + C22 + C33) − (C12 + C13 + C23) + 3(C44 + C55 + C66)] / 15
    K_R = 1 / [(S11 + S22 + S33) + 2(S12 + S13 + S23)]
    G_R = 15 / [4(S11 + S22 + S33) − 4(S12 + S13 + S23) + 3(S44 + S55 + S66)]
    K_H = (K_V + K_R)/2,   G_H = (G_V + G_R)/2.

A crystal is mechanically (Born) stable when C is positive definite (Mouhat & Coudert, PRB 90, 224104
(2014)); for a cubic crystal that is C11 − C12 > 0, C11 + 2 C12 > 0 and C44 > 0, and then
K_V = K_R = (C11 + 2 C12)/3. C11, C12 and C44 are given when C has the cubic form in the Cartesian
axes (cube axes along x, y, z), each the mean of its three symmetry-equivalent entries.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator
from ase.calculators.singlepoint import SinglePointCalculator
from ase.units import GPa

from .common import ModelLike, require_periodic, require_relaxed
from .relax import CommitteeResult, committee, make_optimizer, relax

VOIGT = ("xx", "yy", "zz", "yz", "xz", "xy")


@dataclass
class ElasticResult:
    """Elastic constants (GPa) in Voigt order xx yy zz yz xz xy.

    ``C_GPa`` [6, 6] and its fit error ``C_err_GPa`` [6, 6] (the standard error of each slope; it also
    counts the curvature of σ(ε), which does not bias the slope over strains symmetric about 0);
    ``asymmetry_GPa`` max |D − Dᵀ|/2 of the raw slopes (triclinic patterns only, else None);
    ``C11_GPa``, ``C12_GPa``, ``C44_GPa`` for a cubic C, else None; Voigt, Reuss and Hill bulk (K) and
    shear (G) moduli; ``stable`` whether C is positive definite; ``atoms`` the reference structure.
    """

    C_GPa: np.ndarray
    C_err_GPa: np.ndarray
    asymmetry_GPa: float | None
    relaxed_ion: bool
    symmetry: str
    delta: float
    n_steps: int
    atoms: Atoms

    @property
    def S_per_GPa(self) -> np.ndarray:
        """The compliance S = C⁻¹ (1/GPa)."""
        return np.linalg.inv(self.C_GPa)

    @property
    def cubic(self) -> bool:
        """Whether C has the cubic form (C11 = C22 = C33, C12 = C13 = C23, C44 = C55 = C66, others 0)
        within 1 % of its largest entry or three fit errors."""
        C = self.C_GPa
        tol = max(1e-2 * np.abs(C).max(), 3.0 * self.C_err_GPa.max())
        groups = (np.diag(C)[:3], C[[0, 0, 1], [1, 2, 2]], np.diag(C)[3:])
        zero = np.ones((6, 6), dtype=bool)
        zero[:3, :3] = False
        zero[[3, 4, 5], [3, 4, 5]] = False
        return bool(max(np.ptp(g) for g in groups) <= tol and np.abs(C[zero]).max() <= tol)

    def _cubic_entry(self, rows: list[int], cols: list[int]) -> float | None:
        return float(self.C_GPa[rows, cols].mean()) if self.cubic else None

    @property
    def C11_GPa(self) -> float | None:
        return self._cubic_entry([0, 1, 2], [0, 1, 2])

    @property
    def C12_GPa(self) -> float | None:
        return self._cubic_entry([0, 0, 1, 1, 2, 2], [1, 2, 0, 2, 0, 1])

    @property
    def C44_GPa(self) -> float | None:
        return self._cubic_entry([3, 4, 5], [3, 4, 5])

    def moduli(self) -> dict[str, float]:
        """Voigt, Reuss and Hill bulk and shear moduli (GPa; equations in the module docstring)."""
        C, S = self.C_GPa, self.S_per_GPa
        d, o, s = np.trace(C[:3, :3]), C[0, 1] + C[0, 2] + C[1, 2], np.trace(C[3:, 3:])
        k_v, g_v = (d + 2 * o) / 9.0, (d - o + 3 * s) / 15.0
        ds, os_, ss = np.trace(S[:3, :3]), S[0, 1] + S[0, 2] + S[1, 2], np.trace(S[3:, 3:])
        k_r, g_r = 1.0 / (ds + 2 * os_), 15.0 / (4 * ds - 4 * os_ + 3 * ss)
        return {
            "K_voigt_GPa": float(k_v),
            "K_reuss_GPa": float(k_r),
            "K_hill_GPa": float((k_v + k_r) / 2),
            "G_voigt_GPa": float(g_v),
            "G_reuss_GPa": float(g_r),
            "G_hill_GPa": float((g_v + g_r) / 2),
        }

    @property
    def eigenvalues_GPa(self) -> np.ndarray:
        """The eigenvalues of C (GPa), ascending: all > 0 for a Born-stable crystal."""
        return np.linalg.eigvalsh(self.C_GPa)

    @property
    def stable(self) -> bool:
        """Born stability: C positive definite."""
        return bool(self.eigenvalues_GPa[0] > 0)

    def born_conditions(self) -> dict[str, bool] | None:
        """The cubic Born criteria, each True when met (None for a C that is not cubic)."""
        if not self.cubic:
            return None
        c11, c12, c44 = self.C11_GPa, self.C12_GPa, self.C44_GPa
        return {"C11 - C12 > 0": c11 - c12 > 0, "C11 + 2 C12 > 0": c11 + 2 * c12 > 0, "C44 > 0": c44 > 0}

    def summary(self) -> dict[str, Any]:
        """Plain numbers for JSON and :func:`committee_spread` (GPa)."""
        return {
            "C_GPa": self.C_GPa.tolist(),
            "C_err_GPa": self.C_err_GPa.tolist(),
            "asymmetry_GPa": self.asymmetry_GPa,
            "C11_GPa": self.C11_GPa,
            "C12_GPa": self.C12_GPa,
            "C44_GPa": self.C44_GPa,
            **self.moduli(),
            "eigenvalues_GPa": self.eigenvalues_GPa.tolist(),
            "stable": self.stable,
            "born_conditions": self.born_conditions(),
            "relaxed_ion": self.relaxed_ion,
            "symmetry": self.symmetry,
            "delta": self.delta,
            "n_steps": self.n_steps,
        }

    def table(self) -> str:
        """A short text report: C, its fit error, the cubic constants and the moduli."""
        kind = "relaxed-ion" if self.relaxed_ion else "clamped-ion"
        lines = [
            f"C_ij (GPa, {kind}, Voigt order {' '.join(VOIGT)}; ± largest fit error "
            f"{self.C_err_GPa.max():.2g} GPa)"
        ]
        lines += ["  " + " ".join(f"{c:9.2f}" for c in row) for row in self.C_GPa]
        if self.cubic:
            lines.append(
                f"cubic: C11 = {self.C11_GPa:.2f}, C12 = {self.C12_GPa:.2f}, C44 = {self.C44_GPa:.2f} GPa"
            )
        m = self.moduli()
        lines.append(
            "bulk modulus K (Voigt/Reuss/Hill) = "
            f"{m['K_voigt_GPa']:.2f} / {m['K_reuss_GPa']:.2f} / {m['K_hill_GPa']:.2f} GPa"
        )
        lines.append(
            "shear modulus G (Voigt/Reuss/Hill) = "
            f"{m['G_voigt_GPa']:.2f} / {m['G_reuss_GPa']:.2f} / {m['G_hill_GPa']:.2f} GPa"
        )
        lines.append(
            f"Born stable: {'yes' if self.stable else 'NO'} (smallest eigenvalue of C "
            f"{self.eigenvalues_GPa[0]:.2f} GPa)"
        )
        if self.asymmetry_GPa is not None:
            lines.append(f"asymmetry max |C_ij - C_ji|/2 = {self.asymmetry_GPa:.2g} GPa")
        return "\n".join(lines)


def elastic_constants(
    atoms: Atoms,
    calc: Calculator,
    delta: float = 1e-3,
    n_steps: int = 5,
    relax_internal: bool = True,
    fmax: float = 1e-4,
    steps: int = 200,
    symmetry: str = "triclinic",
    check_relaxed: bool = True,
    relaxed_fmax: float = 5e-3,
    relaxed_stress: float = 5e-4,
    relax_first: bool = False,
    where: str = "the structure",
) -> ElasticResult:
    """Elastic constants of ``atoms`` with ``calc`` (see the module docstring).

    ``delta`` is the strain step and ``n_steps`` the number of strains per pattern (largest strain
    δ(n−1)/2); ``relax_internal=False`` gives clamped-ion constants, else positions are relaxed to
    ``fmax`` (eV/Å) in at most ``steps`` at each strain. ``symmetry`` is a matscipy strain-pattern set
    (``triclinic`` assumes nothing; ``cubic`` needs the cube axes along x, y, z). The structure must
    be relaxed: forces ≤ ``relaxed_fmax`` (eV/Å) and stress ≤ ``relaxed_stress`` (eV/Å³), unless
    ``check_relaxed=False``; ``relax_first`` relaxes positions and cell to ``fmax`` first (in at least
    500 steps). ``where`` names the structure in error messages.
    """
    from matscipy.elasticity import fit_elastic_constants, generate_strained_configs, strain_patterns

    require_periodic(atoms, "elastic constants", where)
    if atoms.constraints:
        raise ValueError(f"{where} has constraints (e.g. FixAtoms); remove them for elastic constants")
    if symmetry not in strain_patterns or symmetry == "None":
        raise ValueError(f"symmetry = {symmetry!r}: must be one of {', '.join(map(str, strain_patterns))}")
    if not 0 < delta < 0.05:
        raise ValueError(f"delta = {delta!r}: the strain step must be in (0, 0.05)")
    if n_steps < 3:
        raise ValueError(f"n_steps = {n_steps!r}: a slope with an error estimate needs ≥ 3 strains")
    work = atoms.copy()
    if relax_first:
        first = relax(atoms, calc, fmax=fmax, steps=max(steps, 500), where=where)
        first.require_converged(f"{where} (relax_first before elastic constants)")
        work = first.atoms.copy()
    work.calc = calc
    if check_relaxed:
        require_relaxed(work, relaxed_fmax, "elastic constants", where, stress_max=relaxed_stress)
    configs = list(generate_strained_configs(work, symmetry, n_steps, delta))
    for config in configs:
        config.calc = calc
        if relax_internal and len(config) > 1:
            opt = make_optimizer("BFGS", config)
            if not opt.run(fmax=fmax, steps=steps):
                strain = np.round(config.info["strain"], 6).tolist()
                raise ValueError(
                    f"{where}, elastic constants: the positions at strain {strain} did not relax to "
                    f"fmax = {fmax:g} eV/Å in {steps} steps; allow more steps or loosen fmax"
                )
        stress = config.get_stress(voigt=True)
        config.calc = SinglePointCalculator(config, stress=stress)  # the fit reads this stress
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        C, C_err = fit_elastic_constants(
            configs, symmetry=symmetry, N_steps=n_steps, delta=delta, optimizer=None, verbose=False
        )
    # a stress component that is exactly constant over the strains (an exact zero slope) has a NaN
    # correlation coefficient in scipy's linregress and so a NaN standard error: its error is 0
    C_err = np.nan_to_num(np.asarray(C_err, dtype=float), nan=0.0)
    work.calc = None
    return ElasticResult(
        C_GPa=np.asarray(C) / GPa,
        C_err_GPa=C_err / GPa,
        asymmetry_GPa=_asymmetry(configs, n_steps) / GPa if symmetry == "triclinic" else None,
        relaxed_ion=relax_internal,
        symmetry=symmetry,
        delta=delta,
        n_steps=n_steps,
        atoms=work,
    )


def _asymmetry(configs: list[Atoms], n_steps: int) -> float:
    """max |D_ij − D_ji|/2 (eV/Å³) of the least-squares slopes D_ij = ∂σ_i/∂ε_j, pattern j of the
    triclinic set straining Voigt component j alone."""
    from matscipy.elasticity import full_3x3_to_Voigt_6_strain

    D = np.zeros((6, 6))
    for j in range(6):
        block = configs[j * n_steps : (j + 1) * n_steps]
        strain = np.array([full_3x3_to_Voigt_6_strain(c.info["strain"])[j] for c in block])
        stress = np.array([c.get_stress(voigt=True) for c in block])  # [n_steps, 6]
        x = strain - strain.mean()
        D[:, j] = x @ (stress - stress.mean(axis=0)) / (x @ x)
    return float(np.abs(D - D.T).max() / 2.0)


def committee_elastic_constants(
    atoms: Atoms, models: ModelLike | list[ModelLike], **kwargs: Any
) -> CommitteeResult[ElasticResult]:
    """:func:`elastic_constants` with each committee member: mean ± σ of every C_ij and modulus. Each
    member needs a structure relaxed for it: pass ``relax_first=True`` unless they agree."""
    return committee(elastic_constants, atoms, models, **kwargs)
