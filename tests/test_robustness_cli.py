"""Robustness where users get hurt (issue 16): broken data files, label keys of other codes,
reruns and resumes, one-line errors, a light ``--help``, the README snippet, arbitrary
least-squares reference energies."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml
from ase.io import read, write

from nearsight.cli.main import main
from nearsight.data.frame import Frame
from nearsight.data.readers import read_frames
from nearsight.data.stats import fit_reference_energies
from nearsight.training.config import validate_config
from nearsight.training.trainer import Trainer
from training_helpers import tiny_config

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "examples" / "data" / "ethanol_train300.xyz"
TEST = ROOT / "examples" / "data" / "ethanol_test200.xyz"
LINES_PER_FRAME = 11  # ethanol: the atom count, the header and 9 atom lines


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


def file_states(directory: Path) -> dict[str, tuple[int, str]]:
    """Modification time and content hash of every file under ``directory``."""
    return {
        str(p.relative_to(directory)): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("model")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # least-squares reference energies of one composition
        return Trainer(validate_config(tiny_config(out / "run")), log=lambda m: None).train()


# --------------------------------------------------------------- item 4: broken extxyz files
def _ethanol_lines(n_frames: int) -> list[str]:
    return TRAIN.read_text().splitlines(keepends=True)[: n_frames * LINES_PER_FRAME]


def _broken(tmp_path: Path, case: str) -> Path:
    """A 3-frame ethanol file broken in frame 1 (lines 12-22) or truncated in frame 2."""
    lines = _ethanol_lines(3)
    if case == "truncated":
        lines = lines[: 2 * LINES_PER_FRAME + 5]  # frame 2: count, header and 3 of 9 atom lines
    elif case == "atom_count":
        lines[LINES_PER_FRAME] = "7\n"  # frame 1 declares 7 atoms but has 9
    elif case == "text_in_coordinate":
        fields = lines[LINES_PER_FRAME + 3].split()
        fields[2] = "abc"
        lines[LINES_PER_FRAME + 3] = "  ".join(fields) + "\n"  # line 15
    elif case == "property_type":
        lines[LINES_PER_FRAME + 1] = lines[LINES_PER_FRAME + 1].replace("forces:R:3", "forces:Q:3")
    path = tmp_path / f"{case}.xyz"
    path.write_text("".join(lines))
    return path


BROKEN = {
    "truncated": r"truncated\.xyz', frame 2 \(line 23\): 9 atoms declared but the file ends after 3 atom lines",
    "atom_count": r"atom_count\.xyz', frame 2 \(line 21\): expected the atom count of a frame, got 'H .*"
    r"the atom count 7 of frame 1 \(line 12\) may be wrong",
    "text_in_coordinate": r"text_in_coordinate\.xyz', frame 1 \(line 15\): could not convert string to float: 'abc'",
    "property_type": r"property_type\.xyz', frame 1 \(line 13\): Unknown property type: Q",
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_extxyz_files_name_the_file_frame_and_line(tmp_path, case):
    with pytest.raises(ValueError, match=BROKEN[case]):
        read_frames(_broken(tmp_path, case))


def test_a_wrong_atom_count_that_swallows_the_next_frame_names_the_line(tmp_path):
    lines = _ethanol_lines(3)
    lines[LINES_PER_FRAME] = "12\n"
    path = tmp_path / "too_many.xyz"
    path.write_text("".join(lines))
    with pytest.raises(
        ValueError, match=r"frame 1 \(line 12\): 12 atoms declared but line 23 is not an atom line"
    ):
        read_frames(path)


def test_broken_data_reaches_evaluate_and_train_as_one_line(tmp_path, model_path, capsys):
    bad = _broken(tmp_path, "text_in_coordinate")
    assert main(["evaluate", str(model_path), str(bad)]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in captured.err
    assert re.match(r"nearsight evaluate: error: '.*text_in_coordinate\.xyz', frame 1 \(line 15\)", err[0])
    config = write_config(
        tmp_path / "bad.yaml", tiny_config(tmp_path / "run", train=_broken(tmp_path, "truncated"))
    )
    assert main(["train", str(config)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.match(
        r"nearsight train: error: '.*truncated\.xyz', frame 2 \(line 23\)", err[0]
    )


# ------------------------------------------------------ item 4: training errors, one line
def test_training_errors_reach_the_cli_as_one_line_and_traceback_on_request(tmp_path, capsys, monkeypatch):
    config = write_config(tmp_path / "c.yaml", tiny_config(tmp_path / "run"))

    def diverge(self):
        raise FloatingPointError("non-finite loss nan at epoch 1, step 0; batch frames: a.xyz:3")

    monkeypatch.setattr(Trainer, "train", diverge)
    assert main(["train", str(config)]) == 2
    captured = capsys.readouterr()
    assert (
        captured.err
        == "nearsight train: error: non-finite loss nan at epoch 1, step 0; batch frames: a.xyz:3\n"
    )
    with pytest.raises(FloatingPointError, match="non-finite loss"):
        main(["train", str(config), "--traceback"])
    monkeypatch.setenv("NEARSIGHT_TRACEBACK", "1")
    with pytest.raises(FloatingPointError):
        main(["train", str(config)])
    monkeypatch.delenv("NEARSIGHT_TRACEBACK")
    monkeypatch.undo()
    assert main(["train", str(config), "--resume"]) == 2  # a CheckpointError: there is no checkpoint
    err = capsys.readouterr().err
    assert err.startswith("nearsight train: error: ") and "checkpoint" in err and err.count("\n") == 1


# ------------------------------------------------------------ item 5: label keys
def _relabelled(
    tmp_path: Path, name: str, energy: str | None, forces: str | None, plain: bool = False
) -> Path:
    """The first 20 test frames with their labels under other keys (no calculator results)."""
    images = read(TEST, ":20")
    for atoms in images:
        e, f = atoms.get_potential_energy(), atoms.get_forces()
        if not plain:
            atoms.calc = None
        if energy:
            atoms.info[energy] = e
        if forces:
            atoms.arrays[forces] = f
        atoms.info["note"] = "x"
    path = tmp_path / name
    write(path, images, format="extxyz")
    return path


def test_evaluate_detects_mace_style_ref_keys(tmp_path, model_path, capsys):
    plain, mace = tmp_path / "plain.json", tmp_path / "mace.json"
    subset = tmp_path / "subset.xyz"
    write(subset, read(TEST, ":20"))
    assert main(["evaluate", str(model_path), str(subset), "--json", str(plain)]) == 0
    capsys.readouterr()
    ref = _relabelled(tmp_path, "ref.xyz", "REF_energy", "REF_forces")
    assert main(["evaluate", str(model_path), str(ref), "--json", str(mace)]) == 0
    out = capsys.readouterr().out
    assert "energy from 'REF_energy' (20 of 20 frames), forces from 'REF_forces' (20 of 20 frames)" in out
    assert "nan" not in out.lower()
    a, b = json.loads(plain.read_text()), json.loads(mace.read_text())
    for key in ("energy_mae", "forces_mae", "forces_rmse"):
        assert np.isfinite(b[key]) and b[key] == pytest.approx(a[key], rel=1e-9)
    assert b["label_keys"]["energy"] == "REF_energy" and b["label_keys"]["forces"] == "REF_forces"
    dft = _relabelled(tmp_path, "dft.xyz", "dft_energy", "dft_force")
    assert main(["evaluate", str(model_path), str(dft)]) == 0
    assert "energy from 'dft_energy'" in capsys.readouterr().out


def test_evaluate_without_labels_lists_the_keys_instead_of_a_nan_table(tmp_path, model_path, capsys):
    path = _relabelled(tmp_path, "odd.xyz", "my_energy", "my_forces")
    assert main(["evaluate", str(model_path), str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # no table
    assert "no frame has an energy, forces or stress label" in captured.err
    assert "'my_energy'" in captured.err and "'my_forces'" in captured.err and "'note'" in captured.err
    assert main(["evaluate", str(model_path), str(path), "--energy-key", "my_energy"]) == 0
    out = capsys.readouterr().out  # energy only: the force columns show "-", not NaN
    assert "energy from 'my_energy'" in out and "no forces" in out and "nan" not in out.lower()
    assert main(["evaluate", str(model_path), str(path), "--energy-key", "my_enrgy"]) == 2
    assert "energy_key 'my_enrgy': no frame has it" in capsys.readouterr().err


def test_evaluate_refuses_two_conventions_for_one_label(tmp_path, model_path, capsys):
    both = _relabelled(tmp_path, "both.xyz", "REF_energy", None, plain=True)  # energy and REF_energy
    assert main(["evaluate", str(model_path), str(both)]) == 2
    assert "energy labels under several keys ['energy', 'REF_energy']" in capsys.readouterr().err
    assert main(["evaluate", str(model_path), str(both), "--energy-key", "REF_energy"]) == 0
    assert "energy from 'REF_energy'" in capsys.readouterr().out


# ------------------------------------------------------------ item 8: reruns and resumes
def test_train_refuses_a_directory_with_a_run_unless_overwrite(tmp_path, capsys):
    out = tmp_path / "run"
    config = write_config(tmp_path / "c.yaml", tiny_config(Path("run"), epochs=1))  # relative output_dir
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        assert main(["train", str(config)]) == 0
        lines = capsys.readouterr().out.strip().splitlines()
        assert lines[0] == f"output directory: {out.resolve()}"
        before = file_states(out)
        assert main(["train", str(config)]) == 2
        err = capsys.readouterr().err
        assert "already holds a finished run (best_model.pt, checkpoint.pt)" in err and "--overwrite" in err
        assert file_states(out) == before
        (out / "training_log.csv").write_text("stale\n")
        assert main(["train", str(config), "--overwrite"]) == 0
        with open(out / "training_log.csv", newline="") as fh:
            assert [row["epoch"] for row in csv.DictReader(fh)] == ["1"]
        assert main(["train", str(config), "--overwrite", "--resume"]) == 2
        assert "pick one" in capsys.readouterr().err
    finally:
        os.chdir(cwd)


def test_resume_of_a_finished_run_changes_nothing(tmp_path, capsys):
    config = tiny_config(tmp_path / "run", max_steps=4, checkpoint_every=1)
    Trainer(validate_config(config), log=lambda m: None).train()
    before = file_states(tmp_path / "run")
    path = write_config(tmp_path / "c.yaml", config)
    assert main(["train", str(path), "--resume"]) == 0
    out = capsys.readouterr().out
    assert "the run already finished (max_steps 4 reached); nothing to do" in out
    assert out.strip().splitlines()[-1] == str((tmp_path / "run" / "best_model.pt").resolve())
    assert file_states(tmp_path / "run") == before
    config["training"]["max_steps"] = None  # now every epoch: 2 epochs of 3 steps
    assert main(["train", str(write_config(path, config)), "--resume"]) == 0
    summary = json.loads((tmp_path / "run" / "training_summary.json").read_text())
    assert summary["stopped_by"] == "epochs" and summary["steps"] == 6
    before = file_states(tmp_path / "run")
    messages = []
    Trainer(validate_config(config), log=messages.append, resume=True).train()
    assert messages == [f"{tmp_path / 'run'}: the run already finished (all 2 epochs done); nothing to do "
                        "(raise training.epochs, max_steps or max_time_minutes to train on)"]  # fmt: skip
    assert file_states(tmp_path / "run") == before


def test_resume_after_a_kill_does_not_repeat_epochs_in_the_log(tmp_path):
    """A kill after rows were written past the last checkpoint: the resumed run writes them once."""
    config = validate_config(tiny_config(tmp_path / "run", epochs=4, max_steps=4))
    Trainer(config, log=lambda m: None).train()  # epoch 1 validated, checkpoint at step 4 (epoch 2)
    saved = tmp_path / "checkpoint_at_step_4.pt"
    shutil.copy(tmp_path / "run" / "checkpoint.pt", saved)
    config["training"]["max_steps"] = None
    Trainer(config, log=lambda m: None, resume=True).train()  # epochs 2-4
    shutil.copy(saved, tmp_path / "run" / "checkpoint.pt")  # as if killed before the checkpoints after step 4
    with open(tmp_path / "run" / "training_log.csv", "a") as fh:
        fh.write("4,12,0.1")  # and a row cut short by the kill
    Trainer(config, log=lambda m: None, resume=True).train()
    with open(tmp_path / "run" / "training_log.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [row["epoch"] for row in rows] == ["1", "2", "3", "4"]
    assert [row["step"] for row in rows] == ["3", "6", "9", "12"]


# ------------------------------------------------------------------ item 11: small ones
def test_help_does_not_import_torch_and_version_prints(tmp_path):
    code = (
        "import sys\n"
        "from nearsight.cli.main import main\n"
        "for argv in (['--help'], ['train', '--help'], ['evaluate', '--help'], ['--version']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit as exc:\n"
        "        assert exc.code == 0, (argv, exc.code)\n"
        "import nearsight.cli.demo\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    from nearsight import __version__

    assert f"nearsight {__version__}" in done.stdout
    assert "--overwrite" in done.stdout and "--traceback" in done.stdout


def test_readme_and_guide_python_snippets_run_on_a_molecule(tmp_path, model_path):
    """The README's snippet and the Python guide's (docs/guide/python.md: the calculator and the
    physics checks) run as written against the demo's model path."""
    readme = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    guide = re.findall(
        r"```python\n(.*?)```", (ROOT / "docs" / "guide" / "python.md").read_text(), flags=re.S
    )
    snippet = next(b for b in guide if "NearsightCalculator(path" in b)
    assert "get_stress" not in snippet
    target = tmp_path / "outputs" / "demo" / "training" / "best_model.pt"
    target.parent.mkdir(parents=True)
    shutil.copy(model_path, target)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    outputs = []
    for code in (snippet, readme[0]):
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path
        )
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout)
    assert "rotation[molecule]" in outputs[0]


def test_least_squares_reference_energies_of_one_composition_warn():
    frames = read_frames(TRAIN, index=":10")
    with pytest.warns(UserWarning, match=r"10 frames with an energy .*ethanol_train300.xyz\) all have the same "
                      r"composition, so the split of the energy between the elements \['H', 'C', 'O'\] is arbitrary"):  # fmt: skip
        fit_reference_energies(frames)
    rng = np.random.default_rng(0)
    varied = [
        Frame(
            numbers,
            rng.normal(size=(len(numbers), 3)) * 3,
            np.zeros((3, 3)),
            [False] * 3,
            energy=-len(numbers),
        )
        for numbers in ([1, 1, 8], [1, 8], [1, 1, 1, 8, 8], [8, 8])
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # compositions that fix every element: no warning
        fit_reference_energies(varied, species=[1, 6, 8])  # carbon never occurs: it gets 0, no warning
