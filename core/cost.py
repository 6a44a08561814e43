"""Measured cost: wall-clock time, peak memory and file sizes, for any model family.

Peak memory is measured on the real process, never with ``tracemalloc`` (which sees only
Python-level allocations and misses NumPy/BLAS/libsvm/XGBoost buffers):

* :class:`PeakMemory` samples the resident set size (RSS) of this process and its children in
  a background thread every few milliseconds. On Linux it also resets the kernel's RSS
  high-water mark (``/proc/self/clear_refs``) on entry and reads ``VmHWM`` on exit, so a spike
  shorter than the sampling interval is still caught for this process. With ``cuda=True`` it
  also reports the CUDA device memory, one definition for every model family
  (:data:`MEMORY_KINDS`): the sampled device-wide used memory (``cudaMemGetInfo``) above a
  clean baseline, taken after the memory pools of this process are released
  (:func:`release_device_pools`: PyTorch's caching allocator, CuPy's pools), so memory that
  earlier work (hyper-parameter search, another model) left cached is allocated again inside
  the block and counted. It covers every allocator: PyTorch, CuPy/cuML/RMM, XGBoost, DALI and
  NVDEC. PyTorch's ``max_memory_allocated`` is kept as a second figure (``torch_peak_bytes``).
* On entry, freed heap pages are returned to the kernel (glibc ``malloc_trim``) so that work
  reusing memory an earlier stage freed still counts.
* :func:`peak_rss_in_fresh_process` runs a function in a newly spawned interpreter and reads
  its ``ru_maxrss``: exact, at the price of a process start.

Nested :class:`PeakMemory` blocks share the kernel high-water mark (the inner one resets it);
the outer block then relies on its sampler alone.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")

# What a result's ``cost.memory_kind`` means (the README and the report quote these).
MEMORY_KINDS = {
    "cuda_device_used_peak_delta": (
        "GPU memory in use on the device (cudaMemGetInfo, sampled every 5 ms) at its peak during the fit, minus "
        "the level before it with this process's cached pool memory released; includes everything the fit "
        "allocates through any allocator (PyTorch's caching allocator as reserved, CuPy/cuML/RMM pools, XGBoost, "
        "DALI buffers and NVDEC surfaces) and, for the CNNs, the weights already on the GPU; excludes the CUDA "
        "context; another process on the same GPU would be counted too"
    ),
    "process_rss_peak_delta": (
        "resident memory (RSS) of the process and its children at its peak during the fit minus the level before it"
    ),
}


@dataclass
class Timer:
    """Elapsed wall-clock seconds of a ``with timed() as t:`` block (``perf_counter``)."""

    start: float = 0.0
    seconds: float = 0.0


@contextmanager
def timed() -> Iterator[Timer]:
    timer = Timer(start=time.perf_counter())
    try:
        yield timer
    finally:
        timer.seconds = time.perf_counter() - timer.start


def time_call(function: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, float]:
    """Call ``function`` once; return its result and the wall-clock seconds it took."""
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


def file_size_bytes(path: str | os.PathLike[str]) -> int:
    """Size on disk of a file, or of every file under a directory."""
    path = Path(path)
    if path.is_dir():
        return sum(child.stat().st_size for child in path.rglob("*") if child.is_file())
    return path.stat().st_size


def _rss_tree(process: psutil.Process, include_children: bool) -> int:
    total = process.memory_info().rss
    if include_children:
        for child in process.children(recursive=True):
            try:
                total += child.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
    return total


def _reset_kernel_high_water() -> bool:
    """Reset this process's VmHWM to its current RSS (Linux >= 4.0); False where not allowed."""
    try:
        _CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


def _return_free_heap_to_os() -> None:
    """glibc ``malloc_trim(0)``: give freed heap pages back to the kernel (no-op elsewhere).

    Without it, memory freed by earlier work (a torch model, say) stays resident in malloc's
    free lists; new work that reuses it never raises the RSS, and its peak reads as zero.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _kernel_high_water_bytes() -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def release_device_pools() -> None:
    """Give this process's cached GPU memory back to the device: garbage-collect, then empty
    PyTorch's caching allocator and CuPy's device and pinned pools (only libraries already
    imported; nothing is initialised here). RMM's default resource has no pool to release."""
    import gc

    gc.collect()
    if "torch" in sys.modules:
        import torch

        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
    if "cupy" in sys.modules:
        try:
            import cupy

            cupy.get_default_memory_pool().free_all_blocks()
            cupy.get_default_pinned_memory_pool().free_all_blocks()
        except Exception:  # CuPy imported but without a usable GPU
            pass


def _cuda_device_used_reader() -> Callable[[], int] | None:
    """A function returning device-wide used bytes on the current CUDA device, or None."""
    try:
        import torch

        if torch.cuda.is_available():

            def read_torch() -> int:
                free, total = torch.cuda.mem_get_info()
                return int(total - free)

            read_torch()
            return read_torch
    except Exception:
        pass
    try:
        import cupy

        def read_cupy() -> int:
            free, total = cupy.cuda.runtime.memGetInfo()
            return int(total - free)

        read_cupy()
        return read_cupy
    except Exception:
        return None


class PeakMemory:
    """Context manager measuring the peak memory of the work inside it.

    After the block: ``rss_baseline_bytes`` (process tree RSS on entry), ``rss_peak_bytes``
    (absolute high-water mark), ``rss_delta_bytes`` (high-water minus baseline: what the work
    added) and, with ``cuda=True`` where a CUDA device is usable, ``device_delta_bytes``
    (sampled device-wide used memory, high-water minus baseline) and ``torch_peak_bytes``.
    ``peak_bytes``/``kind`` give the headline figure: the device figure when measured, else the
    RSS delta.
    """

    def __init__(self, interval_s: float = 0.005, include_children: bool = True, cuda: bool = False) -> None:
        self.interval_s = interval_s
        self.include_children = include_children
        self.cuda = cuda
        self.rss_baseline_bytes = 0
        self.rss_peak_bytes = 0
        self.device_baseline_bytes: int | None = None
        self.device_peak_bytes: int | None = None
        self.torch_peak_bytes: int | None = None
        self.samples = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._process = psutil.Process()
        self._kernel_hwm = False
        self._device_reader: Callable[[], int] | None = None
        self._torch_cuda = False

    @property
    def rss_delta_bytes(self) -> int:
        return max(0, self.rss_peak_bytes - self.rss_baseline_bytes)

    @property
    def device_delta_bytes(self) -> int | None:
        if self.device_peak_bytes is None or self.device_baseline_bytes is None:
            return None
        return max(0, self.device_peak_bytes - self.device_baseline_bytes)

    @property
    def kind(self) -> str:
        return "cuda_device_used_peak_delta" if self.device_delta_bytes is not None else "process_rss_peak_delta"

    @property
    def peak_bytes(self) -> int:
        device = self.device_delta_bytes
        return device if device is not None else self.rss_delta_bytes

    def _sample(self) -> None:
        try:
            rss = _rss_tree(self._process, self.include_children)
        except psutil.Error:
            rss = 0
        self.rss_peak_bytes = max(self.rss_peak_bytes, rss)
        if self._device_reader is not None:
            try:
                used = self._device_reader()
                self.device_peak_bytes = max(self.device_peak_bytes or 0, used)
            except Exception:
                pass
        self.samples += 1

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def __enter__(self) -> PeakMemory:
        if self.cuda:
            release_device_pools()
            self._device_reader = _cuda_device_used_reader()
            if self._device_reader is not None:
                self.device_baseline_bytes = self._device_reader()
                self.device_peak_bytes = self.device_baseline_bytes
            if "torch" in sys.modules:
                import torch

                if torch.cuda.is_available() and torch.cuda.is_initialized():
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                    self._torch_cuda = True
        _return_free_heap_to_os()
        self._kernel_hwm = _reset_kernel_high_water()
        self.rss_baseline_bytes = _rss_tree(self._process, self.include_children)
        self.rss_peak_bytes = self.rss_baseline_bytes
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="PeakMemory", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._torch_cuda:
            import torch

            torch.cuda.synchronize()
        self._sample()
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._kernel_hwm:
            own_peak = _kernel_high_water_bytes()
            if own_peak is not None:
                children = 0
                if self.include_children:
                    children = max(0, _rss_tree(self._process, True) - self._process.memory_info().rss)
                self.rss_peak_bytes = max(self.rss_peak_bytes, own_peak + children)
        if self._torch_cuda:
            import torch

            self.torch_peak_bytes = int(torch.cuda.max_memory_allocated())


def _fresh_process_entry(queue: Any, function: Callable[..., Any], args: tuple, kwargs: dict) -> None:
    import resource

    try:
        result = function(*args, **kwargs)
        error = None
    except BaseException as exc:  # report any failure to the parent instead of hanging it
        result, error = None, f"{type(exc).__name__}: {exc}"
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    queue.put((result, error, peak_kib * 1024))


def peak_rss_in_fresh_process(function: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, int]:
    """Run ``function(*args, **kwargs)`` in a spawned interpreter; return (result, peak RSS bytes).

    ``function`` and its arguments must be picklable (a module-level function). The peak is the
    child's whole lifetime high-water mark, interpreter and imports included.
    """
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_fresh_process_entry, args=(queue, function, args, kwargs))
    process.start()
    try:
        result, error, peak = queue.get()
    finally:
        process.join()
    if error is not None:
        raise RuntimeError(f"{getattr(function, '__name__', function)} failed in a fresh process: {error}")
    return result, int(peak)
