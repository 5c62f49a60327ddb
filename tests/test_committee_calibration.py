"""Committee σ against errors per quantity (``committee_calibration``) and in ``nearsight evaluate``:
the fitted σ scale, and scales given by ``--sigma-scales`` (fitted on one dataset, checked on another).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml
from ase.io import read, write

from nearsight import units
from nearsight.cli.main import main
from nearsight.data.frame import Frame
from nearsight.uncertainty.calibration import committee_calibration, miscalibration_area
from training_helpers import tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "examples" / "data" / "ethanol_train300.xyz"
TEST = ROOT / "examples" / "data" / "ethanol_test200.xyz"


def synthetic(n_frames: int = 300, n_atoms: int = 4, true_scale: float = 2.0, seed: int = 0):
    """Periodic frames with labels and committee predictions whose errors are N(0, (true_scale σ)²),
    σ log-uniform over a decade (per frame for energy and stress, per component for forces)."""
    rng = np.random.default_rng(seed)
    frames, preds = [], []
    for i in range(n_frames):
        energy, forces, stress = rng.normal(), rng.normal(size=(n_atoms, 3)), rng.normal(size=(3, 3)) * 0.01
        sigma_e = 10 ** rng.uniform(-2, -1) * n_atoms  # eV; 0.01-0.1 eV/atom
        sigma_f = 10 ** rng.uniform(-2, -1, size=(n_atoms, 3))  # eV/Å
        sigma_s = np.full((3, 3), 10 ** rng.uniform(-4, -3))  # eV/Å³
        frames.append(
            Frame(
                numbers=np.full(n_atoms, 14),
                positions=rng.uniform(0, 5, size=(n_atoms, 3)),
                cell=np.eye(3) * 5,
                pbc=True,
                energy=energy,
                forces=forces,
                stress=stress,
                index=i,
            )
        )
        preds.append(
            {
                "energy": energy + rng.normal(0, true_scale * sigma_e),
                "energy_std": sigma_e,
                "forces": forces + rng.normal(0, true_scale * sigma_f),
                "forces_std": sigma_f,
                "stress": stress + rng.normal(0, true_scale * sigma_s),
                "stress_std": sigma_s,
            }
        )
    return frames, preds


def test_fitted_scale_recovers_the_true_scale_and_sigma_ranks_errors():
    frames, preds = synthetic()
    report = committee_calibration(frames, preds)
    assert set(report) == {"energy_per_atom", "forces", "stress"}
    n = {"energy_per_atom": 300, "forces": 300 * 4 * 3, "stress": 300 * 9}
    for name, r in report.items():
        assert r["n"] == n[name]
        # the ML scale's relative standard error is ≈ 1/sqrt(2 n_independent); stress: 300 frames
        independent = 300 if name != "forces" else n[name]
        assert r["sigma_scale"] == pytest.approx(2.0, rel=4 / np.sqrt(2 * independent)), name
        assert r["sigma_scale_fitted"] == r["sigma_scale"] and r["scale_given"] is False
        assert r["spearman"] > 0.4, name  # σ over a decade: larger σ, larger |error| (≈ 0.57)
        assert r["miscalibration_area_scaled"] < 0.05 < r["miscalibration_area_raw"]
        assert r["nll_scaled"] < r["nll_raw"]
    # units: eV/atom, eV/Å and GPa
    mean_e = np.mean([p["energy_std"] / 4 for p in preds])
    assert report["energy_per_atom"]["mean_sigma"] == pytest.approx(mean_e, rel=1e-12)
    mean_s = np.mean([p["stress_std"] for p in preds]) / units.GPa
    assert report["stress"]["mean_sigma"] == pytest.approx(mean_s, rel=1e-12)
    assert units.GPa == pytest.approx(1 / 160.21766208, rel=1e-8)

    given = committee_calibration(frames, preds, scales={"forces": 1.5})
    assert given["forces"]["sigma_scale"] == 1.5 and given["forces"]["scale_given"] is True
    assert given["forces"]["sigma_scale_fitted"] == pytest.approx(report["forces"]["sigma_scale"], rel=1e-12)
    assert given["energy_per_atom"] == report["energy_per_atom"]  # not named: fitted as before


def test_quantities_without_labels_are_left_out():
    frames, preds = synthetic(n_frames=20)
    for frame in frames[:10]:
        frame.stress = None
    for frame in frames:
        frame.energy = None
    report = committee_calibration(frames, preds)
    assert set(report) == {"forces", "stress"} and report["stress"]["n"] == 10 * 9
    for frame in frames:
        frame.pbc[:] = False  # no stress for molecules, whatever the labels say
    assert set(committee_calibration(frames, preds)) == {"forces"}


def test_zero_sigma_is_an_error_naming_the_quantity():
    frames, preds = synthetic(n_frames=10)
    preds[3]["forces_std"] = np.zeros_like(preds[3]["forces_std"])  # e.g. the same model twice
    with pytest.raises(
        ValueError, match=r"^forces: committee σ = 0 for 12 of 120 values \(first at index 36\)"
    ):
        committee_calibration(frames, preds)
    frames, preds = synthetic(n_frames=10)
    preds[0]["energy_std"] = 0.0
    with pytest.raises(ValueError, match=r"^energy_per_atom: committee σ = 0 .*the same model twice"):
        committee_calibration(frames, preds)
    preds[0]["energy_std"] = float("nan")  # other bad σ: _pair's message, with the quantity
    with pytest.raises(ValueError, match=r"^energy_per_atom: 1 non-finite error\(s\) or σ <= 0"):
        committee_calibration(frames, preds)


@pytest.fixture(scope="module")
def committee(tmp_path_factory) -> tuple[list[str], Path, Path]:
    """Two tiny ACSF models (``train --members 2``: 2 epochs on 12 ethanol frames), a validation and
    a test file of 6 frames each."""
    tmp = tmp_path_factory.mktemp("committee")
    config = tiny_config(tmp / "run")
    (tmp / "config.yaml").write_text(yaml.safe_dump(config))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # least-squares reference energies of one composition
        assert main(["train", str(tmp / "config.yaml"), "--members", "2"]) == 0
    models = [str(tmp / "run" / f"member_{k}" / "best_model.pt") for k in range(2)]
    frames = read(TEST, index=":12")
    write(tmp / "valid.xyz", frames[:6])
    write(tmp / "test.xyz", frames[6:])
    return models, tmp / "valid.xyz", tmp / "test.xyz"


def test_evaluate_reports_calibration_and_applies_given_scales(committee, tmp_path, capsys):
    models, valid, test = committee
    fitted = tmp_path / "valid.json"
    assert main(["evaluate", *models, str(valid), "--json", str(fitted)]) == 0
    out = capsys.readouterr().out
    metrics = json.loads(fitted.read_text())
    calibration = metrics["calibration"]
    assert set(calibration) == {"energy_per_atom", "forces"}  # molecules: no stress
    assert calibration["energy_per_atom"]["n"] == 6 and calibration["forces"]["n"] == 6 * 9 * 3
    for r in calibration.values():
        assert {"sigma_scale", "spearman", "nll_raw", "miscalibration_area_raw", "mean_sigma", "rmse"} <= set(
            r
        )
        assert r["sigma_scale"] > 0 and r["scale_given"] is False
    assert calibration["forces"]["mean_sigma"] == pytest.approx(metrics["forces_std_mean"], rel=1e-12)
    assert "committee σ calibration (σ scale fitted on these data):" in out
    row = next(line for line in out.splitlines() if line.startswith("forces "))
    assert f"{calibration['forces']['sigma_scale']:.3g}" in row and "→" in row

    # the scales fitted on the validation file, applied to the test file: from the JSON output ...
    checked = tmp_path / "test.json"
    assert main(["evaluate", *models, str(test), "--sigma-scales", str(fitted), "--json", str(checked)]) == 0
    out = capsys.readouterr().out
    on_test = json.loads(checked.read_text())
    assert on_test["sigma_scales_file"] == str(fitted)
    for name, r in on_test["calibration"].items():
        assert r["sigma_scale"] == calibration[name]["sigma_scale"] and r["scale_given"] is True
    assert f"with the σ scales given in {fitted} (not fitted on these data)" in out
    # ... or from a plain file of scales
    plain = tmp_path / "scales.json"
    plain.write_text(json.dumps({"energy_per_atom": 3.0, "forces": 0.5, "stress": 1.0}))
    assert main(["evaluate", *models, str(test), "--sigma-scales", str(plain), "--json", str(checked)]) == 0
    again = json.loads(checked.read_text())["calibration"]
    assert again["energy_per_atom"]["sigma_scale"] == 3.0 and again["forces"]["sigma_scale"] == 0.5
    # the fitted scale on the test data does not depend on the given one
    assert again["forces"]["sigma_scale_fitted"] == pytest.approx(
        on_test["calibration"]["forces"]["sigma_scale_fitted"]
    )
    capsys.readouterr()

    # a file without the scale of a quantity, or a single model: one-line errors naming them
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({"energy_per_atom": 3.0}))
    assert main(["evaluate", *models, str(test), "--sigma-scales", str(partial)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"nearsight evaluate: error: --sigma-scales: {partial} has no σ scale for 'forces'")
    assert main(["evaluate", models[0], str(test), "--sigma-scales", str(plain)]) == 2
    assert "error: --sigma-scales needs a committee" in capsys.readouterr().err
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"calibration": {"forces": {"rmse": 1.0}}}))
    assert main(["evaluate", *models, str(test), "--sigma-scales", str(broken)]) == 2
    err = capsys.readouterr().err
    assert f"{broken} has no key 'calibration' → 'forces' → 'sigma_scale'" in err
    # a single model: no calibration
    single = tmp_path / "single.json"
    assert main(["evaluate", models[0], str(test), "--json", str(single)]) == 0
    assert "calibration" not in json.loads(single.read_text())


def test_the_fitted_scale_is_robust_to_a_small_committee_and_ignores_symmetry_zeros():
    """σ from 4 members is itself noisy (χ² with 3 degrees of freedom): the maximum-likelihood scale
    is set by the values whose σ came out small by chance, the median scale stays near the truth.
    Stress components that are zero for every member and the label (symmetry) are left out."""
    frames, preds = synthetic(n_frames=400, true_scale=1.0, seed=3)
    rng = np.random.default_rng(4)
    for frame, pred in zip(frames, preds):
        # σ as 4 members would estimate it: the true σ times sqrt(χ²₃ / 4) (ddof 0)
        pred["forces_std"] = pred["forces_std"] * np.sqrt(rng.chisquare(3, size=pred["forces_std"].shape) / 4)
        for target in (frame.stress, pred["stress"], pred["stress_std"]):
            target[0, 1] = target[1, 0] = 0.0  # an off-diagonal component symmetry fixes at 0
    report = committee_calibration(frames, preds)
    forces = report["forces"]
    # the median of |e|/σ̂ with σ̂ = σ sqrt(χ²₃/4): a moderate, predictable inflation (~1.3),
    # while the maximum-likelihood scale, mean((e/σ̂)²)^½, is far larger (heavy tail)
    assert 1.1 < forces["sigma_scale"] < 1.6
    assert forces["sigma_scale_ml"] > 1.3 * forces["sigma_scale"]
    e = np.concatenate([(p["forces"] - f.forces).ravel() for f, p in zip(frames, preds)])
    s = np.concatenate([p["forces_std"].ravel() for p in preds])
    with_ml = miscalibration_area(e, s * forces["sigma_scale_ml"])
    assert forces["miscalibration_area_scaled"] < 0.05 < min(forces["miscalibration_area_raw"], with_ml)
    stress = report["stress"]
    assert stress["n_symmetry_zeros"] == 2 * len(frames) and stress["n"] == 7 * len(frames)
    assert stress["sigma_scale"] == pytest.approx(1.0, rel=0.15)
