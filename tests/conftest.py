"""Shared fixtures: the repository root, and an environment where notebook export cells are inert."""
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ["IN_TEST"] = "1"  # nbdev: export calls inside notebooks do nothing under test
os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
# two pytest workers each drive a notebook kernel: one thread per kernel avoids 2×2 threads on 2 cores,
# which measured ~3–6× slower training steps
os.environ.setdefault("OMP_NUM_THREADS", "1")  # quiet kernels started by papermill


@pytest.fixture
def root() -> Path:
    return ROOT
