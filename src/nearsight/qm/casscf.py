"""Excited-state oracle: state-averaged CASSCF energies, gradients and couplings with PySCF.

:class:`SACASSCFOracle` labels a molecule with the S lowest states of one spin
(ground state first) of a state-averaged CASSCF calculation [1]: the orbitals
minimise the weighted average  E_SA = Σ_I w_I E_I  over the states, and
each state is a CAS-CI root in those orbitals.  The labels are

* ``energy`` = E_0 and ``forces`` = −∇E_0 (the ground state),
* ``extra[STATE_ENERGIES]``  [S]  E_I (eV, ascending),
* ``extra[STATE_FORCES]``  [n_atoms, S, 3]  −∇E_I (eV/Å), analytic SA-CASSCF
  gradients through the Lagrangian of the state-averaged orbital and CI
  response (``pyscf.grad.sacasscf``) [2],
* ``extra[STATE_COUPLINGS]``  [n_atoms, n_pairs, 3]  h_ij = ⟨ψ_i|∇H|ψ_j⟩ =
  (E_j − E_i) d_ij for i < j in the order (0,1), (0,2), …, (1,2), … (eV/Å), with
  the full derivative coupling d_ij = ⟨ψ_i|∇ψ_j⟩ including the "CSF" term of the
  moving basis (``pyscf.nac.sacasscf`` with ``use_etfs=False, mult_ediff=True``)
  [3].  The sign of each pair is that of the states' phases, i.e. arbitrary.
* ``extra["state_spin_square"]``  [S]  ⟨S²⟩ of every root.

PySCF's convention (``pyscf/nac/sacasscf.py``, PySCF 2.14): its docstring says
``kernel(state=(ket, bra))`` returns ⟨bra|∇ket⟩, but finite differences of the
wavefunction overlaps (:func:`state_overlaps`) show that ``kernel(state=(i, j))``
returns d_ij = ⟨ψ_i|∇ψ_j⟩ (= −d_ji), and with ``mult_ediff=True`` that times
(E_j − E_i), i.e. h_ij, symmetric in the pair.  This module returns
``kernel(state=(i, j), use_etfs=False, mult_ediff=True)``; the sign is checked in
``tests/test_casscf_oracle.py`` and ``benchmarks/casscf_oracle_check.py``.

The CAS-CI solver is spin-fixed (``fix_spin_``: H + shift·(Ŝ² − S(S+1))², so roots of
another spin are pushed up); a root whose ⟨S²⟩ is still off by more than
``spin_tol`` fails the label, as do unconverged SCF, CASSCF or gradient/coupling
response equations.

[1] B. O. Roos, P. R. Taylor, P. E. M. Siegbahn, Chem. Phys. 48, 157 (1980);
    H.-J. Werner, W. Meyer, J. Chem. Phys. 74, 5794 (1981) (state averaging).
[2] T. Busch, A. Degli Esposti, H.-J. Werner, J. Chem. Phys. 94, 6708 (1991).
[3] I. F. Galván, M. G. Delcey, T. B. Pedersen, F. Aquilante, R. Lindh,
    J. Chem. Theory Comput. 12, 3636 (2016).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from ase import Atoms

from nearsight.keys import STATE_COUPLINGS, STATE_ENERGIES, STATE_FORCES
from nearsight.qm.oracles import (
    HARTREE_PER_BOHR_TO_EV_PER_ANGSTROM,
    HARTREE_TO_EV,
    Oracle,
    OracleError,
)

__all__ = ["SACASSCFOracle", "STATE_SPIN_SQUARE", "n_csf", "state_overlaps", "state_pairs"]

STATE_SPIN_SQUARE = "state_spin_square"  # [S] ⟨S²⟩ of each root (a per-structure extra label)


def n_csf(n_orbitals: int, n_electrons: int, spin: int) -> int:
    """Number of spin-adapted configurations (Weyl's formula) with 2S = ``spin``:
    (2S+1)/(n+1) · C(n+1, N/2 − S) · C(n+1, N/2 + S + 1)."""
    n, big_n = n_orbitals, n_electrons
    if (big_n - spin) % 2 or spin > big_n or big_n > 2 * n:
        return 0
    return (
        (spin + 1)
        * math.comb(n + 1, (big_n - spin) // 2)
        * math.comb(n + 1, (big_n + spin) // 2 + 1)
        // (n + 1)
    )


def state_pairs(n_states: int) -> list[tuple[int, int]]:
    """(i, j) with i < j in the order of ``STATE_COUPLINGS``: (0,1), (0,2), …, (1,2), …"""
    return [(i, j) for i in range(n_states) for j in range(i + 1, n_states)]


def state_overlaps(mc_bra: Any, mc_ket: Any) -> np.ndarray:
    """⟨ψ_I(R)|ψ_J(R′)⟩  [S_bra, S_ket] of the CASSCF states of two solutions (two geometries).

    The full N-electron overlap: every determinant is expanded over the core
    plus active orbitals, and ⟨Φ|Φ′⟩ = det S^α det S^β with the MO overlaps
    S_pq = C_p(R)ᵀ S_AO(R, R′) C′_q(R′) across the two geometries.  For
    finite-difference derivative couplings d_ij ≈ [⟨ψ_i(R)|ψ_j(R+δ)⟩ −
    ⟨ψ_i(R)|ψ_j(R−δ)⟩] / 2δ (after aligning the phases of ψ_j(R±δ) with ψ_j(R)).
    """
    from pyscf import gto
    from pyscf.fci import cistring

    ncore, ncas = mc_bra.ncore, mc_bra.ncas
    if (ncore, ncas, tuple(mc_bra.nelecas)) != (mc_ket.ncore, mc_ket.ncas, tuple(mc_ket.nelecas)):
        raise ValueError("state_overlaps: the two CASSCF solutions have different active spaces")
    nocc = ncore + ncas
    s_mo = mc_bra.mo_coeff[:, :nocc].T @ gto.intor_cross("int1e_ovlp", mc_bra.mol, mc_ket.mol)
    s_mo = s_mo @ mc_ket.mo_coeff[:, :nocc]  # [nocc, nocc]

    def det_overlaps(n_el: int) -> np.ndarray:  # [n_strings, n_strings]
        strings = cistring.make_strings(range(ncas), n_el)
        occ = [list(range(ncore)) + [ncore + k for k in range(ncas) if s >> k & 1] for s in strings]
        return np.array([[np.linalg.det(s_mo[np.ix_(a, b)]) for b in occ] for a in occ])

    na, nb = mc_bra.nelecas
    d_a, d_b = det_overlaps(na), det_overlaps(nb)
    bras = [np.asarray(c).reshape(len(d_a), len(d_b)) for c in _ci_list(mc_bra)]
    kets = [np.asarray(c).reshape(len(d_a), len(d_b)) for c in _ci_list(mc_ket)]
    return np.array([[np.einsum("ab,ac,bd,cd->", x, d_a, d_b, y) for y in kets] for x in bras])


def _ci_list(mc: Any) -> list[np.ndarray]:
    return list(mc.ci) if isinstance(mc.ci, list | tuple) else [mc.ci]


class SACASSCFOracle(Oracle):
    """SA-CASSCF(n_active_electrons, n_active_orbitals) over ``n_states`` roots of one spin.

    ``weights``: state-averaging weights (default equal; positive, summing to 1).
    ``spin``: 2S, the number of unpaired electrons (0: singlets; RHF start) -- the
    ROHF start is used for ``spin > 0``.  ``starts``: the initial active spaces,
    each the 0-based indices of the SCF orbitals that form it (``None``: the ones
    around the HOMO-LUMO gap, ``ncore … ncore + n_active_orbitals − 1``).
    SA-CASSCF has several local minima of E_SA, and which one a label comes from is
    ``select``'s choice (provenance ``start``, ``start_e_sa_hartree``; starts that
    do not converge are skipped, the label fails only if none converges):
    ``"lowest"`` converges every start and keeps the solution of lowest E_SA;
    ``"first"`` keeps the first start that converges, so the later ones are
    fall-backs.  Lowest E_SA is not the same electronic states everywhere: where two
    solutions of different active orbitals cross in E_SA, the states that are
    averaged change character and the labels jump between the two sets; ``"first"``
    with a start that follows the wanted orbitals keeps one set.  One start, the
    default, is the cheapest.  ``forces`` /
    ``couplings``: compute the per-state gradients / the couplings h_ij (both
    needed for ``STATE_FORCES`` / ``STATE_COUPLINGS``).  ``spin_shift`` (Eh) is the
    level shift of the spin penalty and ``spin_tol`` the largest accepted
    |⟨S²⟩ − S(S+1)| of a root.  ``conv_tol`` (energy, Eh) and ``conv_tol_grad``
    (orbital gradient) are the CASSCF thresholds: the single-state energies are not
    stationary in the orbitals, so their error is first order in the orbital
    gradient, hence a default tighter than PySCF's √conv_tol (PySCF's CASSCF solvers
    stall at 2-4e-7 for CH2NH2+ singlets, so 1e-7 is out of reach).  See the module docstring for the labels.
    """

    method = "sa-casscf"

    def __init__(
        self,
        basis: str = "6-31g",
        n_active_orbitals: int = 2,
        n_active_electrons: int = 2,
        n_states: int = 2,
        weights: tuple[float, ...] | None = None,
        charge: int = 0,
        spin: int = 0,
        starts: tuple[tuple[int, ...] | None, ...] = (None,),
        select: str = "lowest",
        conv_tol: float = 1e-10,
        conv_tol_grad: float = 1e-6,
        max_cycle: int = 100,
        scf_conv_tol: float = 1e-10,
        scf_max_cycle: int = 100,
        forces: bool = True,
        couplings: bool = True,
        spin_shift: float = 0.2,
        spin_tol: float = 1e-3,
        timeout_s: float | None = None,
        verbose: int = 0,
        max_memory_mb: int = 2000,
    ) -> None:
        where = "SACASSCFOracle"
        n_orb, n_el, spin = int(n_active_orbitals), int(n_active_electrons), int(spin)
        if int(n_states) < 2:
            raise ValueError(f"{where}: n_states must be >= 2 (state averaging), got {n_states}")
        if n_orb < 1 or n_el < 1 or n_el > 2 * n_orb:
            raise ValueError(
                f"{where}: active space of {n_el} electrons in {n_orb} orbitals is impossible "
                "(need 1 <= n_active_electrons <= 2 * n_active_orbitals)"
            )
        if spin < 0 or (n_el - spin) % 2 or spin > n_el:
            raise ValueError(
                f"{where}: spin 2S = {spin} is impossible with {n_el} active electrons "
                "(need 0 <= spin <= n_active_electrons and the same parity)"
            )
        available = n_csf(n_orb, n_el, spin)
        if int(n_states) > available:
            raise ValueError(
                f"{where}: {n_states} states asked, but CAS({n_el},{n_orb}) has only {available} "
                f"configurations of spin 2S = {spin}"
            )
        w = np.full(int(n_states), 1.0 / int(n_states)) if weights is None else np.asarray(weights, float)
        if w.shape != (int(n_states),) or np.any(w <= 0) or abs(w.sum() - 1.0) > 1e-10:
            raise ValueError(f"{where}: weights {weights!r} must be {n_states} positive numbers summing to 1")
        if not starts or any(a is not None and len(set(a)) != n_orb for a in starts):
            raise ValueError(
                f"{where}: starts {starts!r} must each be None or name {n_orb} distinct orbitals"
            )
        if select not in ("lowest", "first"):
            raise ValueError(
                f"{where}: select {select!r} must be 'lowest' (E_SA) or 'first' (converged start)"
            )
        if timeout_s is not None and not timeout_s > 0:
            raise ValueError(f"{where}: timeout_s must be positive, got {timeout_s}")
        self.basis = str(basis).lower()
        self.n_active_orbitals, self.n_active_electrons, self.n_states = n_orb, n_el, int(n_states)
        self.weights = tuple(float(x) for x in w)
        self.charge, self.spin = int(charge), spin
        self.starts = tuple(None if a is None else tuple(int(i) for i in a) for a in starts)
        self.select = select
        self.conv_tol, self.conv_tol_grad, self.max_cycle = (
            float(conv_tol),
            float(conv_tol_grad),
            int(max_cycle),
        )
        self.scf_conv_tol, self.scf_max_cycle = float(scf_conv_tol), int(scf_max_cycle)
        self.forces, self.couplings = bool(forces), bool(couplings)
        self.spin_shift, self.spin_tol = float(spin_shift), float(spin_tol)
        self.timeout_s = None if timeout_s is None else float(timeout_s)
        self.verbose, self.max_memory_mb = int(verbose), int(max_memory_mb)

    @property
    def name(self) -> str:
        n = self.n_states
        return f"PySCF SA{n}-CASSCF({self.n_active_electrons},{self.n_active_orbitals})/{self.basis}"

    @property
    def wants_forces(self) -> bool:
        return self.forces

    def settings(self) -> dict[str, Any]:
        return {
            "oracle": "SACASSCFOracle",
            "method": self.method,
            "basis": self.basis,
            "n_active_orbitals": self.n_active_orbitals,
            "n_active_electrons": self.n_active_electrons,
            "n_states": self.n_states,
            "weights": list(self.weights),
            "charge": self.charge,
            "spin": self.spin,
            "starts": [None if a is None else list(a) for a in self.starts],
            "select": self.select,
            "conv_tol": self.conv_tol,
            "conv_tol_grad": self.conv_tol_grad,
            "max_cycle": self.max_cycle,
            "scf_conv_tol": self.scf_conv_tol,
            "scf_max_cycle": self.scf_max_cycle,
            "forces": self.forces,
            "couplings": self.couplings,
            "spin_shift": self.spin_shift,
            "spin_tol": self.spin_tol,
        }

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.settings().items() if k not in ("oracle", "method"))
        return f"SACASSCFOracle({args})"

    # ------------------------------------------------------------ electronic structure
    def molecule(self, atoms: Atoms) -> Any:
        """The ``pyscf.gto.Mole`` of ``atoms`` (Å); raises ``ValueError`` if the active space does not fit."""
        from pyscf import gto

        if np.any(atoms.pbc):
            raise OracleError(f"structure is periodic (pbc={atoms.pbc.tolist()}); molecules only")
        symbols = atoms.get_chemical_symbols()
        n_electrons = int(np.sum(atoms.numbers)) - self.charge
        if n_electrons < self.n_active_electrons or (n_electrons - self.spin) % 2:
            raise ValueError(
                f"{atoms.get_chemical_formula()} with charge {self.charge} has {n_electrons} electrons: "
                f"incompatible with spin 2S = {self.spin} and {self.n_active_electrons} active electrons"
            )
        mol = gto.M(
            atom=[(s, tuple(float(x) for x in p)) for s, p in zip(symbols, atoms.positions)],
            unit="Angstrom",
            basis=self.basis,
            charge=self.charge,
            spin=self.spin,
            symmetry=False,
            verbose=self.verbose,
            max_memory=self.max_memory_mb,
        )
        n_core = (n_electrons - self.n_active_electrons) // 2
        if n_core + self.n_active_orbitals > mol.nao:
            raise ValueError(
                f"{atoms.get_chemical_formula()}/{self.basis}: {n_core} core + {self.n_active_orbitals} "
                f"active orbitals exceed the {mol.nao} basis functions"
            )
        return mol

    def casscf(self, atoms: Atoms, mo_coeff: np.ndarray | None = None, ci0: Any = None) -> Any:
        """The converged, spin-fixed SA-CASSCF object of ``atoms`` (raises :class:`OracleError` if not).

        ``mo_coeff`` / ``ci0``: start only from these orbitals / CI vectors (e.g. of a
        neighbouring geometry, for finite differences) instead of the SCF ones.
        """
        return self._solve(atoms, mo_coeff, ci0)[0]

    def _solve(self, atoms: Atoms, mo_coeff: np.ndarray | None = None, ci0: Any = None) -> tuple[Any, dict]:
        from pyscf import mcscf, scf

        mol = self.molecule(atoms)
        mf = scf.RHF(mol) if self.spin == 0 else scf.ROHF(mol)
        mf.conv_tol, mf.max_cycle, mf.verbose = self.scf_conv_tol, self.scf_max_cycle, self.verbose
        mf.kernel()
        if mo_coeff is None and not mf.converged:
            raise OracleError(
                f"{type(mf).__name__} SCF (start orbitals) not converged in {mf.max_cycle} cycles"
            )

        def converge(start_mo: np.ndarray | None, active: tuple[int, ...] | None) -> Any:
            mc = mcscf.CASSCF(mf, self.n_active_orbitals, self.n_active_electrons)
            s = self.spin / 2
            mc.fix_spin_(shift=self.spin_shift, ss=s * (s + 1))
            mc = mc.state_average_(list(self.weights))
            mc.conv_tol, mc.conv_tol_grad = self.conv_tol, self.conv_tol_grad
            mc.max_cycle_macro, mc.verbose = self.max_cycle, self.verbose
            if start_mo is None:
                start_mo = mf.mo_coeff if active is None else mc.sort_mo(list(active), mf.mo_coeff, base=0)
            else:  # orthonormal in this geometry's metric (Löwdin): C (Cᵀ S C)^(-1/2)
                start_mo = np.asarray(start_mo, dtype=np.float64)
                eigval, eigvec = np.linalg.eigh(start_mo.T @ mf.get_ovlp() @ start_mo)
                start_mo = start_mo @ (eigvec * eigval**-0.5) @ eigvec.T
            mc.kernel(start_mo, ci0=ci0)
            if not mc.converged:
                raise OracleError(
                    f"SA-CASSCF not converged in {self.max_cycle} macro iterations (conv_tol={self.conv_tol:g}, "
                    f"state energies {np.round(np.asarray(mc.e_states), 8).tolist()} Ha)"
                )
            return mc

        if mo_coeff is not None:
            return converge(mo_coeff, None), {}
        solutions, errors = [], []
        for k, active in enumerate(self.starts):
            try:
                solutions.append((converge(None, active), k))
            except OracleError as err:
                errors.append(f"start {k} ({'HOMO-LUMO' if active is None else list(active)}): {err}")
                continue
            if self.select == "first":
                break
        if not solutions:
            raise OracleError("; ".join(errors))
        mc, best = min(solutions, key=lambda sol: sol[0].e_tot)
        e_sa = [float("nan")] * len(self.starts)
        for m, k in solutions:
            e_sa[k] = float(m.e_tot)
        return mc, {"start": best, "start_e_sa_hartree": e_sa}

    def spin_squares(self, mc: Any) -> np.ndarray:
        """⟨S²⟩ of every root  [S]."""
        from pyscf.fci import spin_op

        return np.array([spin_op.spin_square0(c, mc.ncas, mc.nelecas)[0] for c in _ci_list(mc)])

    def compute(self, atoms: Atoms) -> tuple[float, np.ndarray | None, dict[str, Any], dict[str, np.ndarray]]:
        import pyscf

        mc, start_info = self._solve(atoms)
        e_states = np.asarray(mc.e_states, dtype=np.float64)  # [S] Ha
        if np.any(np.diff(e_states) < 0):
            raise OracleError(f"SA-CASSCF roots are not in ascending order: {e_states.tolist()} Ha")
        s = self.spin / 2
        ss = self.spin_squares(mc)
        for root, value in enumerate(ss):
            if abs(value - s * (s + 1)) > self.spin_tol:
                raise OracleError(
                    f"root {root} has <S^2> = {value:.6f}, not {s * (s + 1):g} (spin 2S = {self.spin}) "
                    f"within {self.spin_tol:g}"
                )
        provenance: dict[str, Any] = {
            "pyscf_version": pyscf.__version__,
            "active_space": [self.n_active_electrons, self.n_active_orbitals],
            "n_core": int(mc.ncore),
            "nao": int(mc.mol.nao),
            "states": list(range(self.n_states)),
            "e_states_hartree": e_states.tolist(),
            "spin_square": ss.tolist(),
            "casscf_converged": bool(mc.converged),
            **start_info,
        }
        extra = {STATE_ENERGIES: e_states * HARTREE_TO_EV, STATE_SPIN_SQUARE: ss}
        n_atoms = len(atoms)
        forces = None
        if self.forces:
            grad = mc.nuc_grad_method()
            grad.verbose = self.verbose
            state_forces = np.zeros((n_atoms, self.n_states, 3))  # [n_atoms, S, 3] eV/Å
            for i in range(self.n_states):
                g = grad.kernel(state=i)  # [n_atoms, 3] Ha/bohr
                if not grad.converged:
                    raise OracleError(f"SA-CASSCF gradient response (state {i}) not converged")
                state_forces[:, i] = -np.asarray(g) * HARTREE_PER_BOHR_TO_EV_PER_ANGSTROM
            provenance["gradients_converged"] = True
            extra[STATE_FORCES] = state_forces
            forces = state_forces[:, 0].copy()
        if self.couplings:
            nac = mc.nac_method()
            nac.verbose = self.verbose
            pairs = state_pairs(self.n_states)
            h = np.zeros((n_atoms, len(pairs), 3))  # [n_atoms, n_pairs, 3] eV/Å
            for k, (i, j) in enumerate(pairs):
                # (E_j − E_i)⟨ψ_i|∇ψ_j⟩ = ⟨ψ_i|∇H|ψ_j⟩, see the module docstring
                v = nac.kernel(state=(i, j), use_etfs=False, mult_ediff=True)  # [n_atoms, 3] Ha/bohr
                if not nac.converged:
                    raise OracleError(f"SA-CASSCF coupling response (states {i}, {j}) not converged")
                h[:, k] = np.asarray(v) * HARTREE_PER_BOHR_TO_EV_PER_ANGSTROM
            provenance["couplings_converged"] = True
            extra[STATE_COUPLINGS] = h
        return float(e_states[0] * HARTREE_TO_EV), forces, provenance, extra
