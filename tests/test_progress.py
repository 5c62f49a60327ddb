"""Progress bars: on stderr at a terminal (or with NEARSIGHT_PROGRESS=1), and the plain lines unchanged."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest
from ase.build import molecule
from ase.calculators.lj import LennardJones

from nearsight.progress import NoBar, progress_bar, progress_enabled
from nearsight.simulate.md import run_md

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "examples" / "data" / "ethanol_train300.xyz"
BAR = re.compile(r"\d+%\|")  # tqdm's "100%|████|"
STEP_LINE = re.compile(r"^step +(\d+)  t ", re.M)


def _terminal(monkeypatch, setting: str | None, tty: bool) -> None:
    """stderr is (or is not) a terminal, NEARSIGHT_PROGRESS is ``setting`` (None: unset)."""
    monkeypatch.setattr(sys.stderr, "isatty", lambda: tty, raising=False)
    monkeypatch.delenv("RANK", raising=False)
    if setting is None:
        monkeypatch.delenv("NEARSIGHT_PROGRESS", raising=False)
    else:
        monkeypatch.setenv("NEARSIGHT_PROGRESS", setting)


@pytest.mark.parametrize(
    "setting, tty, shown",
    [(None, False, False), (None, True, True), ("0", True, False), ("1", False, True), ("", True, True)],
)
def test_when_bars_show(monkeypatch, setting, tty, shown):
    _terminal(monkeypatch, setting, tty)
    assert progress_enabled() is shown
    monkeypatch.setenv("RANK", "1")  # under torchrun, only rank 0 shows a bar
    assert progress_enabled() is False


def test_no_bar_has_the_surface_of_a_bar(monkeypatch):
    _terminal(monkeypatch, None, False)
    with progress_bar([1, 2, 3], total=3, desc="x", unit="y") as bar:
        assert isinstance(bar, NoBar)
        assert list(bar) == [1, 2, 3]
        bar.update()
        bar.set_postfix(a=1, refresh=False)
        bar.set_description("z")
        assert bar.wrap(print) is print  # lines print exactly as without bars
    bar.close()


def test_bar_keeps_postfix_values_and_writes_lines_above_it(monkeypatch, capsys):
    _terminal(monkeypatch, "1", False)
    with progress_bar(total=2, desc="demo", unit="thing") as bar:
        say = bar.wrap(print)
        bar.set_postfix(a="1")
        bar.set_postfix(b="2")
        say("a line")
        bar.update(2)
    out, err = capsys.readouterr()
    assert out == "a line\n"
    assert "demo: 100%|" in err and "a=1, b=2" in err and "thing" in err


def _md(capsys, steps: int = 20, **kwargs) -> tuple[str, str]:
    atoms = molecule("CH4")
    result = run_md(
        atoms,
        LennardJones(sigma=1.0, epsilon=0.01, rc=4.0),
        steps=steps,
        timestep_fs=0.5,
        temperature_K=100.0,
        progress=lambda line: print(line, flush=True),
        progress_interval=5,
        **kwargs,
    )
    assert result.steps == steps
    return capsys.readouterr()


def test_md_bar_and_lines(monkeypatch, capsys):
    _terminal(monkeypatch, "1", False)
    out, err = _md(capsys)
    assert [int(s) for s in STEP_LINE.findall(out)] == [0, 5, 10, 15, 20]  # every plain line
    assert not BAR.search(out)
    assert BAR.search(err) and "20/20" in err and ("step/s" in err or "s/step" in err)
    assert "T=" in err and "E=" in err  # temperature and total energy in the postfix


def test_md_without_terminal_is_unchanged(monkeypatch, capsys):
    _terminal(monkeypatch, None, False)  # output redirected: no bar, as before
    out, err = _md(capsys)
    assert [int(s) for s in STEP_LINE.findall(out)] == [0, 5, 10, 15, 20]
    assert err == "" and not BAR.search(out)
    _terminal(monkeypatch, "0", True)  # a terminal, bars switched off
    out, err = _md(capsys)
    assert [int(s) for s in STEP_LINE.findall(out)] == [0, 5, 10, 15, 20]
    assert err == "" and "\r" not in out


def test_md_bar_on_a_terminal(monkeypatch, capsys):
    _terminal(monkeypatch, None, True)
    _, err = _md(capsys, steps=3)
    assert BAR.search(err) and "3/3" in err
    _, err = _md(capsys, steps=3, show_bar=False)  # what `nearsight md --quiet` passes
    assert err == ""


def test_labelling_bar_counts_failures(monkeypatch, capsys, tmp_path):
    from nearsight.qm import label_structures
    from qm_helpers import CountingOracle, waters

    _terminal(monkeypatch, "1", False)
    frames = waters(3)
    frames[1].info["bad"] = True
    res = label_structures(frames, CountingOracle(fail_on="raise"), tmp_path / "l.db", n_workers=0)
    assert res.failed == 1
    err = capsys.readouterr().err
    assert "labelling" in err and "3/3" in err and "failed=1" in err
    label_structures(frames, CountingOracle(), tmp_path / "l.db", n_workers=0)  # all stored: no bar
    assert not BAR.search(capsys.readouterr().err)


@pytest.mark.filterwarnings("ignore:reference_energies least_squares")
def test_training_bar_and_epoch_lines(monkeypatch, capsys, tmp_path):
    from nearsight.training.config import validate_config
    from nearsight.training.trainer import Trainer

    config = validate_config(
        {
            "seed": 1,
            "dtype": "float64",
            "output_dir": str(tmp_path / "run"),
            "data": {"train": str(TRAIN), "max_train_frames": 12, "valid_fraction": 0.25},
            "model": {"cutoff": 3.0, "n_radial": 4, "n_angular_eta": 1, "hidden": [4]},
            "training": {"epochs": 3, "batch_size": 8, "lr": 0.005, "log_every": 1},
        },
        source="test",
    )
    _terminal(monkeypatch, "1", False)
    Trainer(config).train()
    out, err = capsys.readouterr()
    epochs = [int(e) for e in re.findall(r"^epoch +(\d+)  loss \S+  valid ", out, re.M)]
    assert epochs == [1, 2, 3]  # every per-epoch line, as without a bar
    assert re.search(r"^best epoch \d, validation loss ", out, re.M)
    assert not BAR.search(out)
    assert BAR.search(err) and "3/3" in err and ("epoch/s" in err or "s/epoch" in err)
    assert "loss=" in err and "valid=" in err and "lr=" in err
    with open(tmp_path / "run" / "training_log.csv") as fh:
        assert len(fh.read().splitlines()) == 1 + 3
    assert np.isfinite(float(re.findall(r"valid=([0-9.e+-]+)", err)[-1]))


def test_swarm_bar_counts_steps_across_a_resume(monkeypatch, capsys, tmp_path):
    from nearsight.simulate.swarm_run import run_swarms, tully_problem

    class Kill(RuntimeError):
        pass

    def kill(swarm: int, step: int) -> None:
        if (swarm, step) == (1, 12):
            raise Kill

    _terminal(monkeypatch, "1", False)
    problem = tully_problem(1, -6.0, 20.0, 1.0)
    options = {"trajectories": 6, "swarm_size": 3, "timestep_au": 10.0, "steps": 20, "checkpoint_every": 5}
    with pytest.raises(Kill):
        run_swarms(problem, tmp_path, callback=kill, progress=print, **options)
    out, err = capsys.readouterr()
    assert "32/40" in err and "swarm 1/2 done" in out  # the bar closes on the way out
    run_swarms(problem, tmp_path, resume=True, progress=print, **options)
    out, err = capsys.readouterr()
    assert "40/40" in err and "swarm=2/2" in err and "swarm 2/2 done" in out and not BAR.search(out)
