"""Isothermal-isobaric (NPT) molecular dynamics: the Martyna-Tobias-Klein barostat through ASE.

:func:`nearsight.simulate.md.run_md` uses this module for ``ensemble="npt"`` (isotropic: the cell
keeps its shape, the volume fluctuates) and ``ensemble="npt-aniso"`` (the whole cell fluctuates).
Both are ASE's implementations of Martyna, Tobias & Klein, J. Chem. Phys. 101, 4177 (1994)
(``ase.md.nose_hoover_chain.IsotropicMTKNPT`` and ``MTKNPT``).  In the isotropic form, with
ε = ln(V/V₀)/3, barostat momentum p_ε and mass W, N atoms and Nosé-Hoover chains on the particles
and on p_ε (not written):

    ṙ_i = p_i/m_i + (p_ε/W) r_i
    ṗ_i = F_i − (1 + 1/N)(p_ε/W) p_i
    ε̇   = p_ε/W                                   (V̇ = 3V p_ε/W)
    ṗ_ε = 3V (P_int − P_ext) + (1/N) Σ_i p_i²/m_i

with P_int = −tr(σ)/3 + Σ_i p_i²/(3 m_i V) (the virial pressure, σ the stress of the model, ASE
sign: σ > 0 in tension).  The invariant distribution of these equations, in positions, momenta and
volume, is the isothermal-isobaric one, ∝ exp[−β(E + P_ext V)] — mean volume *and* its fluctuations
⟨δV²⟩ = k_B T V κ_T are those of the NPT ensemble.  The integrator (a Trotter splitting, Tuckerman
et al., J. Phys. A 39, 5629 (2006)) is time-reversible and conserves

    H' = E_pot + E_kin + p_ε²/(2W) + P_ext V + (chain energies),

recorded as ``MDResult.conserved_energy``, whose drift measures the integration error.  The
anisotropic form replaces p_ε by a symmetric 3×3 p_g, driven by V(Π − P_ext I) + (2K/3N) I with
Π = −σ + Σ_i p_i⊗p_i/(m_i V) the pressure tensor and K the kinetic energy: cell lengths and angles
fluctuate (h → h exp(p_g dt/W)), without rotating the cell.

Why MTK and not the other barostats ASE offers:

- ``ase.md.nptberendsen.NPTBerendsen`` (weak coupling) rescales the volume toward P_ext at a rate
  ∝ (P_int − P_ext): the mean volume is right, but the fluctuations are suppressed, so it samples no
  ensemble (a compressibility or enthalpy fluctuation from it is wrong).  Useful to equilibrate only.
- ``ase.md.npt.NPT`` (deprecated alias of ``ase.md.melchionna.MelchionnaNPT``; Nosé-Hoover with a
  Parrinello-Rahman cell, Melchionna et al. 1993) lacks the 1/N kinetic coupling of MTK and does not
  generate the exact NPT distribution of the volume (noticeable in small cells); ASE points users to
  its newer NPT classes.
- ``ase.md.langevinbaoab.LangevinBAOAB`` (Langevin piston, Quigley & Probert 2004) samples NPT
  correctly too but is stochastic and has no conserved quantity to monitor; MTK is deterministic,
  so the drift of H' checks the timestep.

Time constants: ``barostat_time_fs`` τ_p sets W = (3N + 3) k_B T τ_p² (isotropic; (N + 1) k_B T τ_p²
for the cell), the convention of ASE and of LAMMPS's ``fix npt ... Pdamp``; default 1000 timesteps
(their advice).  ``thermostat_time_fs`` τ_T sets the Nosé-Hoover chain masses Q = 3N k_B T τ_T²;
default 100 timesteps.  Note that for a solid of bulk modulus B the volume oscillates with period

    t_V ≈ 2π τ_p √((N + 1) k_B T / (3 B V)),

far below τ_p when k_B T ≪ B V/N (0.08 τ_p for Cu at 50 K); the timestep must resolve t_V
(dt ≲ t_V/8), or the run becomes unstable.  The default τ_p = 1000 dt gives t_V ≈ 80 dt there.
"""

from __future__ import annotations

from ase import Atoms, units
from ase.md import MDLogger
from ase.md.md import MolecularDynamics

NPT_ENSEMBLES = ("npt", "npt-aniso")


def require_npt_structure(atoms: Atoms, calculator=None, where: str = "the structure") -> None:
    """Refuse what a barostat cannot act on: a structure that is not periodic in all three
    directions or has no cell, constraints (the MTK integrators ignore them), a calculator
    without a stress."""
    volume = abs(atoms.cell.volume)
    if not all(atoms.pbc) or volume < 1e-9:
        raise ValueError(
            f"{where}: NPT (ensemble 'npt' or 'npt-aniso') needs a structure periodic in all three "
            f"directions with a cell, got pbc = {atoms.pbc.tolist()} and cell volume {volume:.3g} Å³ "
            "(a molecule or a slab has no pressure to control: use ensemble 'nve' or 'langevin')"
        )
    if atoms.constraints:
        names = ", ".join(type(c).__name__ for c in atoms.constraints)
        raise ValueError(
            f"{where}: NPT does not support constraints (got {names}): the MTK integrators would "
            "ignore them; remove them (del atoms.constraints) or use 'nve' or 'langevin'"
        )
    if calculator is not None and "stress" not in getattr(calculator, "implemented_properties", ()):
        raise ValueError(
            f"{where}: NPT needs the stress, and the calculator {type(calculator).__name__} provides none"
        )


def instantaneous_pressure_bar(atoms: Atoms) -> float:
    """The instantaneous pressure P = −tr(σ)/3 + Σ_i p_i²/(3 m_i V) (bar), the barostat's P_int."""
    stress = atoms.get_stress(voigt=True, include_ideal_gas=True)
    return float(-stress[:3].sum() / 3 / units.bar)


def make_npt_dynamics(
    atoms: Atoms,
    *,
    timestep_fs: float,
    temperature_K: float,
    pressure_bar: float,
    barostat_time_fs: float | None = None,
    thermostat_time_fs: float | None = None,
    anisotropic: bool = False,
) -> MolecularDynamics:
    """ASE's MTK NPT integrator on ``atoms`` (which carries the calculator and the momenta).

    ``pressure_bar`` is the external pressure P_ext (bar; 1 GPa = 10⁴ bar), ``barostat_time_fs``
    τ_p (default 1000 · timestep) and ``thermostat_time_fs`` τ_T (default 100 · timestep), see the
    module docstring; ``anisotropic`` lets the whole cell fluctuate (``MTKNPT``) instead of the
    volume only (``IsotropicMTKNPT``).
    """
    from ase.md.nose_hoover_chain import MTKNPT, IsotropicMTKNPT

    tau_p = 1000.0 * timestep_fs if barostat_time_fs is None else float(barostat_time_fs)
    tau_t = 100.0 * timestep_fs if thermostat_time_fs is None else float(thermostat_time_fs)
    if not (tau_p > 0 and tau_t > 0):
        raise ValueError(
            f"barostat_time_fs and thermostat_time_fs must be > 0 (fs), got {tau_p:g} and {tau_t:g}"
        )
    if not temperature_K > 0:
        raise ValueError(f"NPT needs temperature_K > 0 (the barostat mass is ∝ k_B T), got {temperature_K!r}")
    if pressure_bar != pressure_bar or abs(pressure_bar) == float("inf"):
        raise ValueError(f"pressure_bar must be a finite number (bar), got {pressure_bar!r}")
    cls = MTKNPT if anisotropic else IsotropicMTKNPT
    return cls(
        atoms,
        timestep=timestep_fs * units.fs,
        temperature_K=temperature_K,
        pressure_au=pressure_bar * units.bar,  # eV/Å³
        tdamp=tau_t * units.fs,
        pdamp=tau_p * units.fs,
    )


class NPTLogger(MDLogger):
    """ASE's MD log (time, energies per atom, T) with the volume (Å³) and pressure (GPa) added."""

    def __init__(self, dyn: MolecularDynamics, atoms: Atoms, logfile: str, mode: str = "w") -> None:
        super().__init__(dyn, atoms, logfile, header=False, stress=False, peratom=True, mode=mode)
        self.hdr += f" {'Volume[Å³]':>12s} {'P[GPa]':>10s}"
        self.fmt = self.fmt.rstrip("\n") + " %12.4f %10.4f\n"
        self.logfile.write(self.hdr + "\n")

    def __call__(self) -> None:
        n = self.atoms.get_global_number_of_atoms()
        epot = self.atoms.get_potential_energy() / n
        ekin = self.atoms.get_kinetic_energy() / n
        row = (self.dyn.get_time() / (1000 * units.fs), epot + ekin, epot, ekin, self.atoms.get_temperature())
        row += (self.atoms.get_volume(), instantaneous_pressure_bar(self.atoms) * units.bar / units.GPa)
        self.logfile.write(self.fmt % row)
        self.logfile.flush()
