"""Charge equilibration of Gaussian charges (the 4G-HDNNP scheme of Ko et al., Nat. Commun. 12, 398 (2021)).

The charges q_i (e) of each structure minimise

    E_QEq(q) = Σ_i (χ_i q_i + ½ J_i q_i²) + E_elec(q) − Σ_i q_i R_i·E    subject to Σ_i q_i = Q

with electronegativities χ_i (eV/e) from the short-range model's charge head (environment-
dependent, as in the 4G-HDNNP), per-element hardnesses J_Z > 0 (eV/e²), E_elec the electrostatic
energy of Gaussian charges of per-element widths σ_Z > 0 (Å, :mod:`~nearsight.longrange.operator`:
pair terms k_e q_i q_j erf(r_ij/γ_ij)/r_ij, self terms k_e q_i²/(2σ_i√π)), an external field E
(V/Å, ``keys.EXTERNAL_FIELD``) and the total charge Q (``keys.TOTAL_CHARGE``).  Writing
E_elec = ½ qᵀ C q, stationarity with a Lagrange multiplier λ gives the linear system

    [A  1] [q]   [−χ + R·E]
    [1ᵀ 0] [λ] = [   Q    ],     A = C + diag(J),
    A_ij = k_e erf(r_ij/γ_ij)/r_ij (i ≠ j, summed over images in periodic cells),
    A_ii = J_i + k_e/(σ_i√π)

(the field enters with +R_i·E because −μ·E = −Σ q_i R_i·E adds −R_i·E to ∂E_QEq/∂q_i).

χ_i = s · c_i, where c_i is the head's output after :func:`~nearsight.models.charges.conserve_charges`
and s (``electronegativity_scale``, eV/e) a fixed factor.  The conservation adds the same number
to every c_i of a structure; a constant added to all χ_i of a structure moves λ only, not q, so
the conserved output serves as χ unchanged.

Solvers (``solver``): ``"dense"`` builds A (the Coulomb operator applied to unit charges: the
direct sum, or Ewald/PME of periodic images) and solves the bordered system with
:func:`torch.linalg.solve`, differentiable to any order; ``"cg"`` applies A as a matvec (one
torch-pme evaluation plus the Gaussian correction per iteration) in a conjugate-gradient solve
on the neutral subspace Σδq = 0 (projected, Jacobi-preconditioned; q = Q/N + δq), which needs A
positive definite on that subspace (true for Gaussian charges with J > 0); ``"auto"`` is dense
up to ``dense_max_atoms`` atoms per structure.  ``tolerance`` is the relative preconditioned
residual (at least 100 machine epsilons of the dtype).  Measured on one CPU thread for a box of
water (float64, accuracy 1e-6 eV/Å): 192 atoms, Ewald, dense 0.4 s forward + 0.3 s forces, CG
1.7 + 1.3 s; 1536 atoms, PME, CG 8.7 s (39 matvecs) + 15 s (80 matvecs).  The dense matrix takes
one torch-pme call on N unit-charge vectors, which suits Ewald; with PME it is slow (192 atoms:
8 s + 96 s), so keep ``method: auto`` (Ewald below 1000 atoms) with the dense solver.  CG solutions are differentiated implicitly: from
the converged x* = (q*, λ*), two refinement steps x ← x + K₀⁻¹(b(θ) − K(θ) x), with K₀⁻¹ the CG
solve at fixed geometry (self-adjoint, so its backward is the same solve), give the exact first
and second derivatives of x with respect to positions, cell, χ, J and σ (forces, stress, and
force training) at the memory of a few matvecs: one CG solve forward, two in the backward pass.

The total energy gets the electrostatic energy E_elec of the equilibrated Gaussian charges (and
−μ·E in a field, :class:`~nearsight.longrange.model.LongRangePotential`), as in the 4G-HDNNP:
χq + ½Jq² only determine the charges and are left to the short-range energy, which is trained
on what the electrostatics leave.  The charges are then not stationary points of the total
energy; forces include the response dq/dR through the differentiated solve.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from ase.data import covalent_radii
from torch import nn

from .. import keys
from .coulomb import Coulomb, element_values
from .operator import CoulombOperator

SOLVERS = ("auto", "dense", "cg")
ELECTRONEGATIVITIES = keys.declare("electronegativities", "atom", (), "eV/e")  # [n_atoms] χ_i


def _inverse_softplus(x: float) -> float:
    return x + math.log(-math.expm1(-x))


class ChargeEquilibration(nn.Module):
    """Charges ``[n_atoms]`` (e) and their electrostatic energies ``[n_atoms]`` (eV) by QEq.

    ``species``: atomic numbers of the model; ``coulomb``: the :class:`Coulomb` term whose
    operator (method, accuracy, exclusion radius) defines E_elec; ``hardness`` (eV/e²) and
    ``widths`` (Å): a number for every element, or ``{element: value}`` with the rest at the
    defaults (J = 10 eV/e², σ = the element's covalent radius); ``learn_hardness`` and
    ``learn_widths``: whether training changes them (J = softplus(a_Z), σ = softplus(b_Z));
    ``tolerance``: relative residual of the CG solve; ``max_iterations`` per CG solve.
    """

    def __init__(
        self,
        species: Sequence[int],
        coulomb: Coulomb,
        hardness: float | Mapping[int | str, float] = 10.0,
        widths: float | Mapping[int | str, float] | None = None,
        electronegativity_scale: float = 10.0,
        learn_hardness: bool = True,
        learn_widths: bool = True,
        solver: str = "auto",
        tolerance: float = 1e-10,
        max_iterations: int = 1000,
        dense_max_atoms: int = 500,
    ) -> None:
        super().__init__()
        if solver not in SOLVERS:
            raise ValueError(f"solver = {solver!r} must be one of {SOLVERS}")
        for name, value in (("electronegativity_scale", electronegativity_scale), ("tolerance", tolerance)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{name} = {value!r} must be a finite number")
        if not tolerance > 0:
            raise ValueError(f"tolerance = {tolerance!r} must be positive")
        for name, value in (("max_iterations", max_iterations), ("dense_max_atoms", dense_max_atoms)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} = {value!r} must be a positive whole number")
        if coulomb.widths is not None:
            raise ValueError(
                "QEq sets the Gaussian widths itself (qeq.widths): the Coulomb term must have no widths"
            )
        self.species = [int(z) for z in species]
        self.coulomb = coulomb
        j = _per_element(hardness, self.species, "hardness", "eV/e²", lambda z: 10.0)
        s = _per_element(widths, self.species, "widths", "Å", lambda z: float(covalent_radii[z]))
        f64 = torch.float64  # exact starting values; the model's dtype follows with .to()
        self.raw_hardness = nn.Parameter(
            torch.tensor([_inverse_softplus(v) for v in j], dtype=f64), learn_hardness
        )
        self.raw_widths = nn.Parameter(
            torch.tensor([_inverse_softplus(v) for v in s], dtype=f64), learn_widths
        )
        self.electronegativity_scale = float(electronegativity_scale)
        self.solver = solver
        self.tolerance = float(tolerance)
        self.max_iterations = int(max_iterations)
        self.dense_max_atoms = int(dense_max_atoms)
        self._index = {z: k for k, z in enumerate(self.species)}

    def hardness(self) -> torch.Tensor:
        """J_Z ``[n_species]`` (eV/e²), in the order of ``species``."""
        return F.softplus(self.raw_hardness)

    def widths(self) -> torch.Tensor:
        """σ_Z ``[n_species]`` (Å), in the order of ``species``."""
        return F.softplus(self.raw_widths)

    def forward(
        self, graph: dict[str, torch.Tensor], electronegativity: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(q ``[n_atoms]`` e, ε_i = ½ q_i V_i ``[n_atoms]`` eV, χ ``[n_atoms]`` eV/e) from the head
        output ``electronegativity`` ``[n_atoms]`` (multiplied by ``electronegativity_scale``)."""
        positions = graph[keys.POSITIONS]
        numbers = graph[keys.ATOMIC_NUMBERS].tolist()
        unknown = sorted(set(numbers) - set(self._index))
        if unknown:
            raise ValueError(f"QEq: element(s) {unknown} not among the model's species {self.species}")
        kind = torch.tensor([self._index[z] for z in numbers], device=positions.device)
        dtype = positions.dtype
        hardness = self.hardness().to(dtype)[kind]  # [n_atoms]
        widths = self.widths().to(dtype)[kind]  # [n_atoms]
        chi = self.electronegativity_scale * electronegativity.to(dtype)  # [n_atoms]
        batch, cell, pbc = graph[keys.BATCH], graph[keys.CELL], graph[keys.PBC]
        n_graphs = cell.shape[0]
        total = graph.get(keys.TOTAL_CHARGE)
        total = positions.new_zeros(n_graphs) if total is None else total.to(dtype)
        field = graph.get(keys.EXTERNAL_FIELD)
        linear = -chi
        if field is not None:
            linear = linear + (positions * field.to(dtype)[batch]).sum(1)  # −χ_i + R_i·E
        charges, energies, order = [], [], []
        for g in range(n_graphs):
            index = torch.nonzero(batch == g).squeeze(1)
            n = index.numel()
            if n == 0:
                continue
            op = self.coulomb.operator(
                positions[index], cell[g], pbc[g], widths[index], torch.ones(n, dtype=dtype), g
            )
            dense = self.solver == "dense" or (self.solver == "auto" and n <= self.dense_max_atoms)
            solve = _dense if dense else self._iterative
            q, potential = solve(op, hardness[index], linear[index], total[g])
            self.coulomb.check_net_charge(q, pbc[g], g)
            charges.append(q)
            energies.append(0.5 * q * potential)
            order.append(index)
        if not order:
            return chi * 0.0, chi * 0.0, chi
        where = torch.cat(order)
        q = torch.zeros_like(chi).index_copy(0, where, torch.cat(charges))
        return q, torch.zeros_like(chi).index_copy(0, where, torch.cat(energies)), chi

    # ------------------------------------------------------------------ CG
    def _iterative(
        self, op: CoulombOperator, hardness: torch.Tensor, linear: torch.Tensor, total: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """q and V = C q of one structure by projected CG, implicitly differentiated."""

        def matvec(v: torch.Tensor) -> torch.Tensor:  # A v at fixed geometry, [n, c]
            with torch.no_grad():
                return op.potential(v) + hardness.detach()[:, None] * v

        solve = _ProjectedCG(matvec, _diagonal(op, hardness.detach()), self.tolerance, self.max_iterations)
        rhs_q, rhs_s = linear[:, None], total.reshape(1, 1)
        q, lam = solve(rhs_q.detach(), rhs_s.detach())
        inputs = (linear, hardness, op.positions, op.cell, op.widths)
        if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in inputs):
            for _ in range(2):  # exact first and second derivatives (module docstring)
                residual_q = rhs_q - (op.potential(q) + hardness[:, None] * q + lam)
                residual_s = rhs_s - q.sum(0, keepdim=True)
                dq, dlam = _InverseKKT.apply(residual_q, residual_s, solve, False)
                q, lam = q + dq, lam + dlam
        return q[:, 0], op.potential(q)[:, 0]


def _dense(
    op: CoulombOperator, hardness: torch.Tensor, linear: torch.Tensor, total: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """q and V = C q of one structure from the bordered system, solved densely."""
    n = linear.shape[0]
    coulomb = op.matrix()  # [n, n], C
    ones = torch.ones((n, 1), dtype=coulomb.dtype, device=coulomb.device)
    kkt = torch.cat(
        [torch.cat([coulomb + torch.diag(hardness), ones], 1), torch.cat([ones.T, ones.new_zeros(1, 1)], 1)],
        0,
    )  # [n + 1, n + 1]
    rhs = torch.cat([linear, total.reshape(1)])
    q = torch.linalg.solve(kkt, rhs)[:n]
    return q, coulomb @ q


def _diagonal(op: CoulombOperator, hardness: torch.Tensor) -> torch.Tensor:
    """A_ii ``[n]`` (Jacobi preconditioner): J_i + the Gaussian self term (the rest of C_ii is small)."""
    if op.widths is None:
        return hardness + 1.0
    return hardness + op.prefactor / (op.widths.detach() * math.sqrt(math.pi))


class _ProjectedCG:
    """(q, λ) ``[n, c], [1, c]`` with A q + λ 1 = r, Σ q = s, by CG on the neutral subspace.

    q = s/n + δ with Σ δ = 0; the preconditioned residual z = D⁻¹ρ − D⁻¹1 (1ᵀD⁻¹ρ)/(1ᵀD⁻¹1)
    (D = diag A, ρ = r − A q) vanishes where ρ ∝ 1, i.e. at the solution, where λ = mean(ρ).
    """

    def __init__(
        self,
        matvec: Callable[[torch.Tensor], torch.Tensor],
        diagonal: torch.Tensor,
        tol: float,
        max_iter: int,
    ) -> None:
        self.matvec, self.inverse_diagonal = matvec, 1.0 / diagonal[:, None]
        self.tol, self.max_iter = tol, max_iter

    def project(self, residual: torch.Tensor) -> torch.Tensor:
        scaled = self.inverse_diagonal * residual  # [n, c]
        return scaled - self.inverse_diagonal * (scaled.sum(0) / self.inverse_diagonal.sum())

    def norm(self, z: torch.Tensor) -> torch.Tensor:
        """ρᵀz = zᵀ D z ``[c]`` (ρ = D z + const·1 and Σ z = 0), free of the cancellation of λ·1 in ρ."""
        return (z * z / self.inverse_diagonal).sum(0)

    @torch.no_grad()
    def __call__(self, rhs: torch.Tensor, total: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = rhs.shape[0]
        q = (total / n).expand_as(rhs).clone()  # [n, c]
        residual = rhs - self.matvec(q)
        z = self.project(residual)
        direction = z.clone()
        rz = self.norm(z)  # [c]
        tol = max(self.tol, 100.0 * torch.finfo(rhs.dtype).eps)  # what the dtype can reach (float32)
        target = tol**2 * rz.abs()  # relative to the first residual
        for _ in range(self.max_iter):
            if bool((rz.abs() <= target).all()):
                break
            a_dir = self.matvec(direction)
            curvature = (direction * a_dir).sum(0)  # [c]
            if bool((curvature <= 0).any()):
                raise RuntimeError(
                    "QEq: the charge-equilibration matrix is not positive definite on neutral charges "
                    "(hardness too small for this exclusion radius?); use qeq.solver: dense"
                )
            step = torch.where(rz.abs() <= target, torch.zeros_like(rz), rz / curvature)
            q = q + step * direction
            residual = residual - step * a_dir
            z = self.project(residual)
            rz_new = self.norm(z)
            direction = z + torch.where(rz == 0, torch.zeros_like(rz), rz_new / rz) * direction
            rz = rz_new
        else:
            if not bool((rz.abs() <= target).all()):
                raise RuntimeError(
                    f"QEq: conjugate gradients did not converge in {self.max_iter} iterations (preconditioned "
                    f"residual² {float(rz.abs().max()):.3g}, target {float(target.max()):.3g}); raise "
                    "qeq.max_iterations or qeq.tolerance"
                )
        lam = (rhs - self.matvec(q)).mean(0, keepdim=True)  # [1, c]
        return q, lam


class _InverseKKT(torch.autograd.Function):
    """(q, λ) = K₀⁻¹ (r, s) at fixed geometry; K₀ is symmetric, so the backward is the same solve.

    With ``solve_forward=False`` the forward returns zeros instead of solving: the refinement steps
    apply it to residuals at the tolerance of x*, whose solution only changes x at that level, while
    their derivatives come from the backward, which always solves (one CG solve per step saved).
    """

    @staticmethod
    def forward(ctx, rhs: torch.Tensor, total: torch.Tensor, solve: _ProjectedCG, solve_forward: bool):  # noqa: ANN001
        ctx.solve = solve
        if not solve_forward:
            return torch.zeros_like(rhs), torch.zeros_like(total)
        return solve(rhs, total)

    @staticmethod
    def backward(ctx, grad_q: torch.Tensor | None, grad_lam: torch.Tensor | None):  # noqa: ANN001
        return *_InverseKKT.apply(grad_q, grad_lam, ctx.solve, True), None, None


def _per_element(
    value: float | Mapping | None, species: list[int], name: str, unit: str, default: Callable[[int], float]
) -> list[float]:
    """One positive value per species from a number, a mapping (others at the default) or None."""
    if value is None:
        return [default(z) for z in species]
    if isinstance(value, Mapping):
        given = element_values(value, name, unit)
        return [given.get(z, default(z)) for z in species]
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not (math.isfinite(value) and value > 0)
    ):
        raise ValueError(
            f"{name} = {value!r} must be a positive number ({unit}) or a mapping {{element: value}}"
        )
    return [float(value)] * len(species)
