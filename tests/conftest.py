"""Test configuration: GPU tests run only where the backend resolver finds a usable CUDA GPU."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("MPLBACKEND", "Agg")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # The marker itself, not ``"gpu" in item.keywords``: keywords also hold folder names (a checkout
    # in a folder called "gpu" would skip every test).
    if not any(item.get_closest_marker("gpu") for item in items):
        return
    from core.backend import resolve_backend

    backend = resolve_backend("auto")
    if not backend.cuda.usable:
        skip = pytest.mark.skip(reason=f"needs a usable CUDA GPU: {backend.cuda.reason}")
    elif backend.dali_gpu.version is None:
        # A GPU without DALI installed (PyTorch and CuPy only): the NVDEC tests cannot run, and say
        # so. With DALI installed they run, and an NVDEC that does not decode fails them.
        skip = pytest.mark.skip(reason=f"needs NVDEC through DALI: {backend.dali_gpu.reason}")
    else:
        return
    for item in items:
        if item.get_closest_marker("gpu") and (not backend.cuda.usable or item.get_closest_marker("nvdec")):
            item.add_marker(skip)
