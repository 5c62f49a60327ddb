"""Shared test settings: where the reference datasets live, one-thread modules."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """``$NEARSIGHT_DATA``, else ``shared/data`` beside the repository (as in CI), else /work/shared/data."""
    if "NEARSIGHT_DATA" in os.environ:
        return Path(os.environ["NEARSIGHT_DATA"])
    for candidate in (ROOT.parent / "shared" / "data", Path("/work/shared/data")):
        if candidate.is_dir():
            return candidate
    return ROOT.parent / "shared" / "data"


@pytest.fixture(scope="module")
def one_thread():
    """Tiny graphs: one thread is fastest and immune to contention with other jobs
    (``pytestmark = pytest.mark.usefixtures("one_thread")`` in a test module)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def aoti_package(tmp_path_factory):
    """``aoti_package(kind, dtype="float64")`` -> (model file, compiled package) of the water models of
    ``tests/aoti_models.py``, each compiled once per test run and shared by the xdist workers."""
    from filelock import FileLock

    from aoti_models import build_package

    base = tmp_path_factory.getbasetemp()
    shared = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "aoti-packages"
    shared.mkdir(parents=True, exist_ok=True)

    def get(kind: str, dtype: str = "float64"):
        with FileLock(str(shared / f"{kind}_{dtype}.lock")):
            return build_package(kind, shared, dtype)

    return get
