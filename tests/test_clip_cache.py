"""Decoded-clip cache: second pass reads it and yields identical clips; a changed source is a miss."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from pipelines.backend import resolve_backend
from pipelines.clip_cache import ClipCache, DecodeError, decode_frames, scaled_size
from pipelines.clips import ClipSpec
from pipelines.loader import make_clip_loader
from pipelines.records import VideoRecord
from pipelines.video_io import write_video


def _record(path: Path, frames: np.ndarray, codec: str) -> VideoRecord:
    write_video(path, frames, 25, codec)
    return VideoRecord(
        path.stem, str(path), "c", 0, path.stem, "train", codec, len(frames), 25.0, frames.shape[2], frames.shape[1]
    )


@pytest.fixture()
def records(tmp_path: Path) -> list[VideoRecord]:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (1, 48, 64, 3), dtype=np.uint8)
    frames = np.repeat(base, 10, axis=0)
    frames[:, :, :, 0] = np.arange(10, dtype=np.uint8)[:, None, None] * 20
    return [_record(tmp_path / "a.webm", frames, "vp9"), _record(tmp_path / "b.avi", frames[:8], "mpeg4")]


def test_scaled_size_upscales_only_a_little() -> None:
    assert scaled_size(240, 320, 128) == (128, 171)
    assert scaled_size(120, 160, 128) == (120, 160)
    assert scaled_size(120, 160, 128, max_upscale=1.25) == (128, 171)
    assert scaled_size(120, 160, 256, max_upscale=1.25) == (120, 160)
    assert scaled_size(48, 64, None) == (48, 64)


def test_small_sources_are_cached_small_and_resized_by_the_pipeline(records: list[VideoRecord], tmp_path: Path) -> None:
    spec = ClipSpec(frames=4, size=112, layout="BTHWC")  # short side 128 > 1.25 x 48
    backend = resolve_backend("cpu")
    direct = np.concatenate([b.clips for b in make_clip_loader(records, spec, backend, batch_size=2)])
    for _ in range(2):  # cold, then warm
        cached = np.concatenate(
            [b.clips for b in make_clip_loader(records, spec, backend, batch_size=2, cache_dir=tmp_path)]
        )
        assert cached.shape == direct.shape == (2, 4, 112, 112, 3)
        # Same frames, same crop; the cache path decodes with PyAV, the direct VP9 one with DALI.
        assert np.abs(cached.astype(int) - direct.astype(int)).mean() < 3
    assert np.load(next(tmp_path.rglob("a-*.npy")), mmap_mode="r").shape == (10, 48, 64, 3)


def test_decode_frames_errors_and_short_tail(records: list[VideoRecord], tmp_path: Path) -> None:
    assert decode_frames(records[1].path).shape == (8, 48, 64, 3)
    assert decode_frames(records[1].path, [7, 7], short_side=24).shape == (2, 24, 32, 3)
    with pytest.raises(DecodeError):
        decode_frames(records[1].path, [40])
    garbage = tmp_path / "garbage.avi"
    garbage.write_bytes(b"0" * 1000)
    with pytest.raises(DecodeError):
        decode_frames(garbage)


def test_second_pass_reads_cache_and_yields_same_clips(records: list[VideoRecord], tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    spec = ClipSpec(frames=4, size=32, test_clips=2, layout="BTHWC")
    backend = resolve_backend("cpu")
    cold = make_clip_loader(records, spec, backend, batch_size=3, cache_dir=cache_dir)
    first = np.concatenate([batch.clips for batch in cold])
    assert (cold.cache_hits, cold.cache_misses) == (0, 2)
    size = ClipCache(cache_dir).cache_size_bytes()
    # Stored at the clip short side (ceil(32 * 1.14) = 37): 10 + 8 frames of 37x49x3 plus headers.
    assert 18 * 37 * 49 * 3 <= size < 18 * 37 * 49 * 3 + 4096
    warm = make_clip_loader(records, spec, backend, batch_size=3, cache_dir=cache_dir)
    second = np.concatenate([batch.clips for batch in warm])
    assert (warm.cache_hits, warm.cache_misses) == (2, 0)
    np.testing.assert_array_equal(first, second)
    # Training from the cache works and is reproducible.
    train = ClipSpec(frames=4, size=32, mode="train", layout="BCTHW", mean=(0.5,) * 3, std=(0.25,) * 3)
    runs = [
        np.concatenate(
            [b.clips.numpy() for b in make_clip_loader(records, train, backend, batch_size=2, cache_dir=cache_dir)]
        )
        for _ in range(2)
    ]
    np.testing.assert_array_equal(*runs)


def test_touching_the_source_invalidates_the_entry(records: list[VideoRecord], tmp_path: Path) -> None:
    cache = ClipCache(tmp_path / "cache")
    source = records[0].path
    frames, hit = cache.load_or_decode(source, 32)
    assert not hit and frames.shape == (10, 32, 43, 3)
    again, hit = cache.load_or_decode(source, 32)
    assert hit and isinstance(again, np.memmap)
    np.testing.assert_array_equal(frames, again)
    assert cache.load(source, 24) is None  # another short side is another entry
    stat = os.stat(source)
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert cache.load(source, 32) is None
    _, hit = cache.load_or_decode(source, 32)
    assert not hit
    assert cache.load(source, 32) is not None
    assert not list((tmp_path / "cache").rglob("*.tmp"))


def test_entry_reads_sampled_frames_and_goes_stale(records: list[VideoRecord], tmp_path: Path) -> None:
    cache = ClipCache(tmp_path / "cache")
    source = records[0].path
    assert cache.entry(source, 32) is None
    frames = cache.decode_and_store(source, 32)
    entry = cache.entry(source, 32)
    assert entry is not None and entry.shape == frames.shape
    picked = entry.read([9, 0, 4, 4])
    assert picked.flags.c_contiguous
    np.testing.assert_array_equal(picked, frames[[9, 0, 4, 4]])
    with pytest.raises(IndexError):
        entry.read([10])
    stat = os.stat(source)
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert cache.entry(source, 32) is None
