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
