"""Test configuration: GPU tests (marker ``gpu``) run only where the backend resolver finds a usable
CUDA GPU; NVDEC tests (marker ``nvdec``, a kind of GPU test) also need DALI installed."""

from __future__ import annotations

import importlib.util
import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("MPLBACKEND", "Agg")


def dali_installed() -> bool:
    """Whether DALI is installed, found without importing it: an installed DALI that fails to import
    must fail the tests that use it, not skip them."""
    try:
        return importlib.util.find_spec("nvidia.dali") is not None
    except ModuleNotFoundError:  # no ``nvidia`` package at all
        return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # The marker itself, not ``"gpu" in item.keywords``: keywords also hold folder names (a checkout
    # in a folder called "gpu" would skip every test).
    needs_gpu = [item for item in items if item.get_closest_marker("gpu") or item.get_closest_marker("nvdec")]
    if not needs_gpu:
        return
    from core.backend import resolve_backend

    backend = resolve_backend("auto")
    if not backend.cuda.usable:
        skip = pytest.mark.skip(reason=f"needs a usable CUDA GPU: {backend.cuda.reason}")
        for item in needs_gpu:
            item.add_marker(skip)
    elif not dali_installed():
        # A GPU with PyTorch and CuPy only: the NVDEC tests cannot run, and say so. With DALI
        # installed they run, and an NVDEC that does not decode (or a DALI that does not import) fails them.
        skip = pytest.mark.skip(reason="needs NVDEC through DALI: nvidia-dali not installed")
        for item in needs_gpu:
            if item.get_closest_marker("nvdec"):
                item.add_marker(skip)
