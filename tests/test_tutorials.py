"""Every tutorial of the documentation (docs/tutorials/*.py) runs to the end in its quick mode.

Each tutorial is a jupytext "percent" script that asserts what it teaches, so a tutorial the code
no longer supports fails here.  ``NEARSIGHT_TUTORIAL_QUICK=1`` selects the short version (well under
a minute each on one core) and ``NEARSIGHT_TUTORIAL_DIR`` a fresh output directory.  The tutorials
are spread over two xdist groups so that the two CI workers share them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TUTORIALS = sorted((ROOT / "docs" / "tutorials").glob("*.py"))


def _param(k: int, path: Path):
    return pytest.param(
        path, id=path.stem, marks=[pytest.mark.slow, pytest.mark.xdist_group(f"tutorials_{k % 2}")]
    )


def test_tutorials_exist():
    assert len(TUTORIALS) >= 5, [p.name for p in TUTORIALS]


@pytest.mark.parametrize("script", [_param(k, p) for k, p in enumerate(TUTORIALS)])
def test_tutorial_runs(script: Path, tmp_path: Path):
    env = {
        **os.environ,
        "NEARSIGHT_TUTORIAL_QUICK": "1",
        "NEARSIGHT_TUTORIAL_DIR": str(tmp_path / script.stem),
        "OMP_NUM_THREADS": "1",
        "MPLBACKEND": "Agg",
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH")) if p),
    }
    t0 = time.perf_counter()
    run = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    seconds = time.perf_counter() - t0
    assert run.returncode == 0, (
        f"{script.name} failed after {seconds:.0f} s:\n{run.stdout[-4000:]}\n{run.stderr[-6000:]}"
    )
    print(f"{script.name}: {seconds:.1f} s")
