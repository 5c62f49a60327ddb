"""Vibrational spectra from molecular dynamics: the vibrational density of states (VDOS) from the
velocity autocorrelation and the IR absorption from the dipole autocorrelation.

Autocorrelations are averaged over all time origins of a trajectory of T frames, Δt apart::

    C(τ) = 1/(T − τ) Σ_{t=0}^{T−τ−1} x(t)·x(t + τ),   τ = 0 … L  (L = max_lag)

computed by FFT (Wiener–Khinchin) of the series zero-padded to ≥ 2T, so the product is linear, not
circular: no lag wraps around. A spectrum is the cosine transform of C tapered by a lag window w
(``window="hann"``: w(τ) = ½[1 + cos(πτ/L)], w(0) = 1, w(L) = 0; ``None``: none, w = 1, which rings)::

    F(ν) = Δt [C(0) + 2 Σ_{τ=1}^{L} w(τ) C(τ) cos(2πντΔt)]

on the grid ν_k = k / (n Δt), n = 4L (zero-padded, twice finer than the 1/(2LΔt) the window
resolves), up to the Nyquist frequency 1/(2Δt). Frequencies are given in cm⁻¹ (ν̃ = ν/c) and THz.

VDOS, from velocities v_i (mass-weighted with masses m_i, else m_i = 1)::

    g(ν̃) = 3N · 2F(ν̃) / C(0),   ∫_0^{ν̃_Nyquist} g(ν̃) dν̃ = 3N   (per cm⁻¹; exact on the grid by the
                                                                 DFT sum rule, trapezoid rule)

or, with ``temperature_K`` (masses and velocities in ASE units, ``atoms.get_velocities()``),
g(ν̃) = 2F(ν̃) / (k_B T) in absolute units, whose integral 2⟨E_kin⟩/(k_B T) is 3N only at
equipartition. The removed centre-of-mass motion carries no weight, so 3N − 3 modes share 3N.

IR, from the total dipole M(t) (e·Å) less its mean: with x = βħω, the absorption coefficient times
the refractive index, from the quantum (Kubo) line shape and the classical correlation through a
quantum correction factor Q (Ramírez et al., J. Chem. Phys. 121, 3973 (2004))::

    α(ω) n(ω) ∝ ω (1 − e^{−x}) Q(x) F_M(ω),   Q = x/(1 − e^{−x}) (harmonic) | 1 (none)
                                              | e^{x/2} (Schofield) | 2/(1 + e^{−x}) (standard)

The harmonic factor, exact for a harmonic system with a linear dipole, gives α n ∝ ω² F_M(ω): the
Fourier transform of ⟨Ṁ(0)·Ṁ(t)⟩. Every Q → 1 as x → 0. Intensities are arbitrary, normalised so
that ∫ I dν̃ = 1 (per cm⁻¹).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import units
from scipy.fft import irfft, next_fast_len, rfft
from scipy.integrate import trapezoid

C_CM_PER_FS = units._c * 100 * 1e-15  # speed of light, cm/fs
WINDOWS = ("hann", None)
QUANTUM_CORRECTIONS = ("harmonic", "none", "schofield", "standard")


@dataclass
class Spectrum:
    """A spectrum on a frequency grid, with what it was computed from."""

    kind: str  # "vdos" or "ir"
    frequency_cm: np.ndarray  # [n] cm⁻¹, 0 … Nyquist
    intensity: np.ndarray  # [n] VDOS per cm⁻¹ (∫ = 3N), or IR arbitrary units (∫ = 1)
    correlation: np.ndarray  # [L + 1] the autocorrelation at lags 0 … L (units of x·x)
    timestep_fs: float  # time between frames
    window: str | None
    n_frames: int
    temperature_K: float | None = None
    quantum_correction: str | None = None  # IR only

    @property
    def frequency_THz(self) -> np.ndarray:  # noqa: N802 - the unit's spelling
        return self.frequency_cm * C_CM_PER_FS * 1e3

    @property
    def max_lag(self) -> int:
        return len(self.correlation) - 1

    @property
    def resolution_cm(self) -> float:
        """1/(2LΔt) in cm⁻¹: the spacing of the independent frequencies a correlation of length L gives."""
        return 1.0 / (2 * self.max_lag * self.timestep_fs * C_CM_PER_FS)

    @property
    def nyquist_cm(self) -> float:
        return 1.0 / (2 * self.timestep_fs * C_CM_PER_FS)

    @property
    def units(self) -> str:
        if self.kind == "ir":
            return "arbitrary, normalised to unit area per cm^-1"
        if self.temperature_K is None:
            return "states per cm^-1, integral 3N"
        return "states per cm^-1 from 2F/(k_B T), integral 2<E_kin>/(k_B T)"

    def integral(self) -> float:
        """∫ I dν̃ (trapezoid rule on the grid)."""
        return float(trapezoid(self.intensity, self.frequency_cm))

    def moment(self, order: int) -> float:
        """⟨ν̃^order⟩ = ∫ ν̃^order I dν̃ / ∫ I dν̃ (cm⁻¹ to the order)."""
        return float(
            trapezoid(self.frequency_cm**order * self.intensity, self.frequency_cm) / self.integral()
        )

    def peak_cm(self) -> float:
        """The frequency of the highest point (cm⁻¹)."""
        return float(self.frequency_cm[int(np.argmax(self.intensity))])

    def to_csv(self, path: str | os.PathLike) -> Path:
        """Columns frequency_cm, frequency_THz, intensity; header lines (#) give the units and settings."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        header = (
            f"{self.kind} spectrum from {self.n_frames} frames, {self.timestep_fs:g} fs apart; window "
            f"{self.window}, max_lag {self.max_lag} ({self.max_lag * self.timestep_fs:g} fs), resolution "
            f"{self.resolution_cm:.3g} cm^-1; temperature_K {self.temperature_K}; quantum correction "
            f"{self.quantum_correction}; intensity: {self.units}\nfrequency_cm,frequency_THz,intensity"
        )
        data = np.column_stack([self.frequency_cm, self.frequency_THz, self.intensity])
        np.savetxt(path, data, delimiter=",", header=header, fmt="%.8g")
        return path

    def plot(self, path: str | os.PathLike, max_cm: float | None = None) -> Path:
        """The spectrum against wavenumber (PNG, matplotlib Agg), up to ``max_cm`` (default: Nyquist)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=110)
        ax.plot(self.frequency_cm, self.intensity, lw=1.0)
        ax.set_xlim(0.0, max_cm or self.frequency_cm[-1])
        ax.set_xlabel("wavenumber (cm$^{-1}$)")
        if self.kind == "ir":
            ax.set_ylabel(r"$\alpha n$ (arb. units, unit area)")
            title = f"IR from dipole autocorrelation, {self.quantum_correction} quantum correction"
        else:
            ax.set_ylabel("VDOS (states per cm$^{-1}$)")
            title = "vibrational density of states"
        ax.set_title(f"{title}\n{self.window or 'no'} window, resolution {self.resolution_cm:.2g} cm$^{{-1}}$",
                     fontsize=9)  # fmt: skip
        fig.tight_layout()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
        plt.close(fig)
        return path


def autocorrelation(series: np.ndarray, max_lag: int | None = None) -> np.ndarray:
    """C(τ) = 1/(T − τ) Σ_t x(t)·x(t + τ) for τ = 0 … ``max_lag`` (default T − 1) of ``series``
    ``[T, ...]``, the product summed over every axis after the first. Linear, by FFT of the series
    zero-padded to ≥ 2T."""
    x = np.asarray(series, dtype=float)
    n_steps = x.shape[0]
    max_lag = n_steps - 1 if max_lag is None else int(max_lag)
    if n_steps < 2 or not 1 <= max_lag < n_steps or not np.all(np.isfinite(x)):
        raise ValueError(
            f"an autocorrelation needs at least 2 finite frames and 1 <= max_lag < frames; got "
            f"{n_steps} frames, max_lag = {max_lag}"
        )
    x = x.reshape(n_steps, -1)
    n = next_fast_len(2 * n_steps)
    spectrum = rfft(x, n=n, axis=0)
    power = (spectrum.real**2 + spectrum.imag**2).sum(axis=1)
    lags = irfft(power, n=n)[: max_lag + 1]
    return lags / (n_steps - np.arange(max_lag + 1))


def velocity_autocorrelation(
    velocities: np.ndarray, masses: np.ndarray | None = None, max_lag: int | None = None
) -> np.ndarray:
    """Σ_i m_i ⟨v_i(0)·v_i(τ)⟩ (m_i = 1 without ``masses``) of ``velocities [T, N, 3]`` at lags 0 … L."""
    v = np.asarray(velocities, dtype=float)
    if v.ndim != 3 or v.shape[2] != 3:
        raise ValueError(f"velocities must be [n_steps, n_atoms, 3], got shape {v.shape}")
    if masses is not None:
        m = np.asarray(masses, dtype=float)
        if m.shape != (v.shape[1],) or np.any(m <= 0):
            raise ValueError(f"masses must be {v.shape[1]} positive numbers (amu), got shape {m.shape}")
        v = v * np.sqrt(m)[None, :, None]
    return autocorrelation(v, max_lag)


def cosine_transform(
    correlation: np.ndarray, timestep_fs: float, window: str | None = "hann"
) -> tuple[np.ndarray, np.ndarray]:
    """Frequencies (cm⁻¹) and F(ν) = Δt[C(0) + 2 Σ_τ w(τ) C(τ) cos(2πντΔt)] (units of C × fs) of a
    correlation at lags 0 … L, on the grid k/(4LΔt) up to the Nyquist frequency."""
    c = np.asarray(correlation, dtype=float)
    lag = len(c) - 1
    if window not in WINDOWS and window != "none":
        raise ValueError(f"window must be one of {WINDOWS} (or 'none'), got {window!r}")
    if timestep_fs <= 0 or lag < 1:
        raise ValueError(f"need timestep_fs > 0 and at least 2 lags, got {timestep_fs} and {len(c)}")
    tau = np.arange(lag + 1)
    w = 0.5 * (1.0 + np.cos(np.pi * tau / lag)) if window == "hann" else np.ones(lag + 1)
    n = 4 * lag
    even = np.zeros(n)  # the even extension, zeros between the positive and negative lags
    even[: lag + 1] = w * c
    even[n - lag + 1 :] = (w * c)[1:lag][::-1]
    transform = rfft(even).real * timestep_fs  # [n/2 + 1]
    frequency_cm = np.arange(len(transform)) / (n * timestep_fs) / C_CM_PER_FS
    return frequency_cm, transform


def vibrational_dos(
    velocities: np.ndarray,
    timestep_fs: float,
    masses: np.ndarray | None = None,
    window: str | None = "hann",
    max_lag: int | None = None,
    temperature_K: float | None = None,
) -> Spectrum:
    """VDOS g(ν̃) per cm⁻¹ of ``velocities [T, N, 3]`` (frames ``timestep_fs`` apart), mass-weighted with
    ``masses``, normalised to ∫ g dν̃ = 3N, or with ``temperature_K`` to 2F/(k_B T) (see the module
    docstring). ``max_lag`` (frames, default T/2) sets the correlation length and the resolution."""
    v = np.asarray(velocities, dtype=float)
    max_lag = max(v.shape[0] // 2, 1) if max_lag is None else max_lag
    corr = velocity_autocorrelation(v, masses, max_lag)
    if corr[0] <= 0:
        raise ValueError("the velocities are all zero: a VDOS needs MD velocities")
    frequency_cm, transform = cosine_transform(corr, timestep_fs, window)
    if temperature_K is None:
        density = 3 * v.shape[1] * 2 * transform / corr[0]
    else:
        if masses is None or temperature_K <= 0:
            raise ValueError("the absolute VDOS (temperature_K) needs masses and temperature_K > 0")
        density = 2 * transform / (units.kB * temperature_K)  # eV·fs / eV: per 1/fs
    density = density * C_CM_PER_FS  # per cm⁻¹ instead of per 1/fs
    return Spectrum("vdos", frequency_cm, density, corr, float(timestep_fs), _name(window), v.shape[0],
                    temperature_K)  # fmt: skip


def quantum_correction_factor(
    frequency_cm: np.ndarray, temperature_K: float, kind: str = "harmonic"
) -> np.ndarray:
    """Q(x), x = βħω = hcν̃/(k_B T): the ratio of the quantum to the classical correlation spectrum
    (``harmonic`` x/(1 − e^{−x}), ``schofield`` e^{x/2}, ``standard`` 2/(1 + e^{−x}), ``none`` 1)."""
    if kind not in QUANTUM_CORRECTIONS:
        raise ValueError(f"quantum_correction must be one of {QUANTUM_CORRECTIONS}, got {kind!r}")
    if temperature_K <= 0:
        raise ValueError(f"temperature_K must be > 0, got {temperature_K}")
    x = np.asarray(frequency_cm, dtype=float) * units.invcm / (units.kB * temperature_K)
    if kind == "harmonic":
        safe = np.where(x == 0, 1.0, x)
        return np.where(x == 0, 1.0, safe / -np.expm1(-safe))
    if kind == "schofield":
        return np.exp(0.5 * x)
    if kind == "standard":
        return 2.0 / (1.0 + np.exp(-x))
    return np.ones_like(x)


def ir_spectrum(
    dipoles: np.ndarray,
    timestep_fs: float,
    temperature_K: float | None = None,
    window: str | None = "hann",
    max_lag: int | None = None,
    quantum_correction: str = "harmonic",
) -> Spectrum:
    """IR absorption α(ω)n(ω) ∝ ω(1 − e^{−x}) Q(x) F_M(ω) from total dipoles ``[T, 3]`` (e·Å, frames
    ``timestep_fs`` apart), normalised to unit area (module docstring). ``temperature_K`` is needed
    except for the harmonic correction, where it cancels (α n ∝ ω² F_M)."""
    m = np.asarray(dipoles, dtype=float)
    if m.ndim != 2 or m.shape[1] != 3:
        raise ValueError(f"dipoles must be [n_steps, 3] (e·Å), got shape {m.shape}")
    if temperature_K is None and quantum_correction != "harmonic":
        raise ValueError(f"the {quantum_correction!r} quantum correction needs temperature_K")
    max_lag = max(m.shape[0] // 2, 1) if max_lag is None else max_lag
    corr = autocorrelation(m - m.mean(axis=0), max_lag)
    frequency_cm, transform = cosine_transform(corr, timestep_fs, window)
    if temperature_K is None:
        factor = np.ones_like(frequency_cm)
    else:
        x = frequency_cm * units.invcm / (units.kB * temperature_K)
        safe = np.where(x == 0, 1.0, x)
        detailed = np.where(x == 0, 1.0, -np.expm1(-safe) / safe)  # (1 − e^{−x})/x
        factor = detailed * quantum_correction_factor(frequency_cm, temperature_K, quantum_correction)
    intensity = frequency_cm**2 * factor * transform
    area = trapezoid(intensity, frequency_cm)
    if not area > 0:
        raise ValueError("the dipole does not fluctuate: no IR spectrum (constant or zero dipoles)")
    return Spectrum("ir", frequency_cm, intensity / area, corr, float(timestep_fs), _name(window), m.shape[0],
                    temperature_K, quantum_correction)  # fmt: skip


def _name(window: str | None) -> str | None:
    return None if window in (None, "none") else window


def read_trajectory(
    path: str | os.PathLike, kind: str, index: str = ":", timestep_fs: float | None = None
) -> tuple[np.ndarray, np.ndarray, float]:
    """Velocities ``[T, N, 3]`` (ASE units; ``kind="vdos"``) or dipoles ``[T, 3]`` (e·Å, from the frames'
    calculator results or ``info["dipole"]``; ``kind="ir"``), the masses, and the time between frames
    (fs): ``timestep_fs``, else from ``info["time_fs"]`` of the frames."""
    import ase.io

    frames = ase.io.read(path, index=index)
    frames = frames if isinstance(frames, list) else [frames]
    if len(frames) < 4:
        raise ValueError(f"{path}: {len(frames)} frame(s); a spectrum needs a trajectory of many frames")
    if kind == "vdos":
        data = np.array([a.get_velocities() for a in frames])
        if not np.any(data):
            raise ValueError(f"{path}: the frames carry no velocities (momenta); write them during the MD")
    elif kind == "ir":
        dipoles = []
        for k, atoms in enumerate(frames):
            d = atoms.calc.results.get("dipole") if atoms.calc is not None else None
            d = atoms.info.get("dipole") if d is None else d
            if d is None:
                raise ValueError(
                    f"{path}: frame {k} has no dipole; an IR spectrum needs MD with a model that has a "
                    "charge head (its calculator writes the dipole to the trajectory)"
                )
            dipoles.append(np.asarray(d, dtype=float))
        data = np.array(dipoles)
    else:
        raise ValueError(f"kind must be 'vdos' or 'ir', got {kind!r}")
    if timestep_fs is None:
        times = [a.info.get("time_fs") for a in frames]
        steps = np.diff(np.array(times, dtype=float)) if None not in times else np.array([])
        if not len(steps) or np.ptp(steps) > 1e-6 * abs(steps[0]) or steps[0] <= 0:
            raise ValueError(
                f"{path}: the frames record no evenly spaced info['time_fs']: give timestep_fs (--timestep-fs), "
                "the time between saved frames (the MD timestep times the write interval)"
            )
        timestep_fs = float(steps[0])
    return data, frames[0].get_masses(), float(timestep_fs)


def spectrum_from_trajectory(
    path: str | os.PathLike,
    kind: str = "vdos",
    timestep_fs: float | None = None,
    window: str | None = "hann",
    max_lag: int | None = None,
    temperature_K: float | None = None,
    quantum_correction: str = "harmonic",
    index: str = ":",
) -> Spectrum:
    """The mass-weighted VDOS (``kind="vdos"``) or the IR spectrum (``"ir"``) of an MD trajectory (any
    file ASE reads; see :func:`read_trajectory`)."""
    data, masses, dt = read_trajectory(path, kind, index, timestep_fs)
    if kind == "vdos":
        return vibrational_dos(data, dt, masses, window, max_lag, temperature_K)
    return ir_spectrum(data, dt, temperature_K, window, max_lag, quantum_correction)


def plot_sticks(
    path: str | os.PathLike,
    frequencies_cm: np.ndarray,
    heights: np.ndarray | None = None,
    frequency_std: np.ndarray | None = None,
    height_std: np.ndarray | None = None,
    title: str = "",
) -> Path:
    """A stick spectrum (PNG, matplotlib Agg): IR intensity (km/mol) against wavenumber, or unit sticks
    where no intensities are known; error bars where σ is given; imaginary modes (ν̃ < 0) in red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nu = np.asarray(frequencies_cm, dtype=float)
    h = np.ones_like(nu) if heights is None else np.asarray(heights, dtype=float)
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=110)
    colours = np.where(nu < 0, "tab:red", "tab:blue")
    ax.vlines(nu, 0.0, h, colors=colours, linewidth=2)
    if frequency_std is not None or height_std is not None:
        ax.errorbar(nu, h, xerr=frequency_std, yerr=height_std, fmt="none", ecolor="k", capsize=2, lw=0.8)
    ax.axhline(0.0, color="k", lw=0.5)
    ax.set_xlabel("wavenumber (cm$^{-1}$; imaginary modes negative, red)")
    ax.set_ylabel("IR intensity (km/mol)" if heights is not None else "mode (no IR intensities)")
    ax.set_title(title or "harmonic vibrations")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
