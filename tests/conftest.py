"""Test configuration: GPU tests run only where the backend resolver finds a usable CUDA GPU."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("MPLBACKEND", "Agg")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not any("gpu" in item.keywords for item in items):
        return
    from core.backend import resolve_backend

    backend = resolve_backend("auto")
    if backend.cuda.usable:
        return
    skip = pytest.mark.skip(reason=f"needs a usable CUDA GPU: {backend.cuda.reason}")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
