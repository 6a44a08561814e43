from __future__ import annotations

import time

import numpy as np
import pytest

from core.cost import (
    MEMORY_KINDS,
    PeakMemory,
    file_size_bytes,
    peak_rss_in_fresh_process,
    release_device_pools,
    time_call,
    timed,
)

MB = 1024 * 1024


def allocate_and_sum(n_bytes: int) -> float:
    """Touch a known large array (every page written), then free it."""
    array = np.ones(n_bytes // 8, dtype=np.float64)
    total = float(array.sum())
    del array
    return total


class MemoryHungryModel:
    """A model whose fit allocates a known working array (200 MB), then keeps a tiny state."""

    def fit(self, X: np.ndarray, y: np.ndarray) -> MemoryHungryModel:
        self.total_ = allocate_and_sum(200 * MB)
        return self


def test_peak_memory_sees_a_model_allocating_a_known_large_array() -> None:
    with PeakMemory() as memory:
        MemoryHungryModel().fit(np.zeros((4, 2)), np.zeros(4))
    assert memory.rss_delta_bytes >= 150 * MB
    assert memory.rss_peak_bytes >= memory.rss_baseline_bytes + memory.rss_delta_bytes - 1
    assert memory.peak_bytes == memory.rss_delta_bytes
    assert memory.kind == "process_rss_peak_delta"
    assert memory.samples >= 1


def test_peak_memory_of_idle_work_is_small() -> None:
    with PeakMemory() as memory:
        time.sleep(0.02)
    assert memory.rss_baseline_bytes > 10 * MB  # an interpreter with NumPy loaded
    assert memory.rss_delta_bytes < 50 * MB


def test_peak_memory_without_cuda_reports_no_device_figure() -> None:
    with PeakMemory(cuda=False) as memory:
        allocate_and_sum(1 * MB)
    assert memory.device_delta_bytes is None
    assert memory.torch_peak_bytes is None


def test_fresh_process_reports_its_own_high_water_mark() -> None:
    total, peak = peak_rss_in_fresh_process(allocate_and_sum, 200 * MB)
    assert total == 200 * MB // 8
    assert peak >= 200 * MB


def test_timing_helpers_measure_wall_clock() -> None:
    with timed() as clock:
        time.sleep(0.02)
    assert 0.015 < clock.seconds < 1.0
    result, seconds = time_call(sum, [1, 2, 3])
    assert result == 6 and seconds >= 0


def test_file_size_of_a_file_and_of_a_directory(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "a.bin").write_bytes(b"x" * 100)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.bin").write_bytes(b"y" * 23)
    assert file_size_bytes(tmp_path / "a.bin") == 100
    assert file_size_bytes(tmp_path) == 123


def test_every_memory_kind_is_explained():
    release_device_pools()  # nothing to release without CUDA; must not initialise it
    with PeakMemory(cuda=True) as memory:
        _ = bytearray(8 << 20)
    assert memory.kind in MEMORY_KINDS


@pytest.mark.gpu
def test_gpu_memory_left_cached_by_earlier_work_is_counted_again():
    """PyTorch keeps freed blocks cached: without releasing them first, a fit that reuses them
    would show no device memory at all (the tuned-pools under-report). Released, it shows."""
    import torch

    size = 256 << 20
    earlier = torch.empty(size, dtype=torch.uint8, device="cuda")
    del earlier  # cached by torch's allocator, still taken from the device
    with PeakMemory(cuda=True) as memory:
        block = torch.empty(size, dtype=torch.uint8, device="cuda")
        block.fill_(1)
        torch.cuda.synchronize()
    assert memory.kind == "cuda_device_used_peak_delta"
    assert memory.peak_bytes >= 0.9 * size
    assert memory.torch_peak_bytes is not None and memory.torch_peak_bytes >= size


@pytest.mark.gpu
def test_gpu_memory_left_in_cupys_pool_is_counted_again():
    cupy = pytest.importorskip("cupy")

    size = 256 << 20
    earlier = cupy.empty(size, dtype=cupy.uint8)
    del earlier  # back in CuPy's pool, still taken from the device
    with PeakMemory(cuda=True) as memory:
        block = cupy.ones(size, dtype=cupy.uint8)
        cupy.cuda.Device().synchronize()
    del block
    assert memory.peak_bytes >= 0.9 * size
