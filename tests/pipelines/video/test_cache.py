"""Decoded-clip cache: second pass reads it and yields identical clips; a changed source is a miss."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from core.backend import resolve_backend
from pipelines.data.records import VideoRecord
from pipelines.video.cache import ClipCache, FrameLayout
from pipelines.video.clips import ClipSpec
from pipelines.video.codecs import write_video
from pipelines.video.decode import DecodeError, decode_frames, scaled_size
from pipelines.video.loader import make_clip_loader


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


def test_scaled_size_only_shrinks() -> None:
    assert scaled_size(240, 320, 128) == (128, 171)
    assert scaled_size(320, 240, 128) == (171, 128)
    assert scaled_size(120, 160, 128) == (120, 160)
    assert scaled_size(48, 64, None) == (48, 64)


def test_small_sources_are_cached_small_and_resized_by_the_pipeline(records: list[VideoRecord], tmp_path: Path) -> None:
    spec = ClipSpec(frames=4, size=112, layout="BTHWC")  # short side 128 > 48
    backend = resolve_backend("cpu")
    direct = np.concatenate([b.clips for b in make_clip_loader(records, spec, backend, batch_size=2)])
    for _ in range(2):  # cold, then warm
        cached = np.concatenate(
            [b.clips for b in make_clip_loader(records, spec, backend, batch_size=2, cache_dir=tmp_path)]
        )
        assert cached.shape == direct.shape == (2, 4, 112, 112, 3)
        # Same frames, same crop; the cache path decodes with PyAV, the direct VP9 one with DALI.
        assert np.abs(cached.astype(int) - direct.astype(int)).mean() < 3
    entry = ClipCache(tmp_path).entry(records[0].path, spec.short_side)
    assert entry is not None and entry.layout == FrameLayout("i420", 10, 48, 64)


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
    # Shrunk to the clip short side (ceil(32 * 1.14) = 37), rounded up to even sides for I420:
    # 10 + 8 frames of 38x50 pixels at 1.5 bytes each, plus headers and sidecars.
    assert 18 * 38 * 50 * 3 // 2 <= size < 18 * 38 * 50 * 3 // 2 + 4096
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
    assert cache.entry(source, 32) is None
    video = cache.decode_and_store(source, 32)
    assert video.shape == (10, 32, 44, 3)  # 32 x 42.7, long side rounded up to even for I420
    entry = cache.entry(source, 32)
    assert entry is not None and entry.shape == video.shape
    assert cache.entry(source, 24) is None  # another short side is another entry
    stat = os.stat(source)
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert cache.entry(source, 32) is None
    cache.decode_and_store(source, 32)
    assert cache.entry(source, 32) is not None
    assert not list((tmp_path / "cache").rglob("*.tmp"))


def test_entries_of_other_formats_are_removed_on_the_first_store(records: list[VideoRecord], tmp_path: Path) -> None:
    old = tmp_path / "cache" / "v1-s32"
    old.mkdir(parents=True)
    (old / "a-0123.npy").write_bytes(b"0" * 100)
    cache = ClipCache(tmp_path / "cache")
    assert cache.entry(records[0].path, 32) is None and old.exists()  # reading deletes nothing
    cache.decode_and_store(records[0].path, 32)
    assert not old.exists() and cache.entry(records[0].path, 32) is not None


def test_entry_reads_sampled_frames_as_rgb(records: list[VideoRecord], tmp_path: Path) -> None:
    cache = ClipCache(tmp_path / "cache")
    source = records[0].path
    video = cache.decode_and_store(source, 32)
    entry = cache.entry(source, 32)
    assert entry is not None
    picked = entry.read([9, 0, 4, 4])
    assert picked.flags.c_contiguous and picked.dtype == np.uint8 and picked.shape == (4, 32, 44, 3)
    np.testing.assert_array_equal(picked, video.read([9, 0, 4, 4]))
    for outside in (10, -1):
        with pytest.raises(IndexError):
            entry.read([outside])


def test_i420_entries_match_decoding_to_rgb(tmp_path: Path) -> None:
    """Stored as I420 and shrunk plane by plane: within a few grey levels of decoding straight to
    RGB and shrinking that (the routes differ only in where chroma is resampled), on smooth
    content like real video."""
    y, x = np.mgrid[0:96, 0:128]
    frame = np.stack([x * 2, y * 2, 255 - x - y], axis=-1).clip(0, 255).astype(np.uint8)
    record = _record(tmp_path / "smooth.webm", np.repeat(frame[None], 5, axis=0), "vp9")
    entry_frames = ClipCache(tmp_path / "cache").decode_and_store(record.path, 40).read([0, 4])
    assert entry_frames.shape == (2, 40, 54, 3)  # 40 x 53.3, long side rounded up to even
    direct = decode_frames(record.path, [0, 4])
    shrunk = np.stack([cv2.resize(f, (54, 40), interpolation=cv2.INTER_AREA) for f in direct])
    assert np.abs(entry_frames.astype(int) - shrunk.astype(int)).mean() < 2


def test_full_range_sources_are_cached_as_rgb(tmp_path: Path) -> None:
    """MJPEG decodes to full-range 4:2:0, which the I420 conversion would get wrong: stored as RGB."""
    rng = np.random.default_rng(1)
    frames = np.repeat(rng.integers(0, 255, (1, 48, 64, 3), dtype=np.uint8), 6, axis=0)
    record = _record(tmp_path / "m.avi", frames, "mjpeg")
    cache = ClipCache(tmp_path / "cache")
    video = cache.decode_and_store(record.path, 128)
    entry = cache.entry(record.path, 128)
    assert entry is not None and entry.layout == FrameLayout("rgb24", 6, 48, 64)
    np.testing.assert_array_equal(entry.read([5, 1]), decode_frames(record.path, [5, 1]))
    np.testing.assert_array_equal(entry.read([5, 1]), video.read([5, 1]))


def test_a_damaged_entry_is_decoded_again(records: list[VideoRecord], tmp_path: Path) -> None:
    """An entry cut short behind the cache's back (its own writes are atomic) no longer matches its
    sidecar's layout: a miss, decoded and stored again, not a crash and not a rejected video."""
    cache_dir = tmp_path / "cache"
    spec = ClipSpec(frames=4, size=32, layout="BTHWC")
    backend = resolve_backend("cpu")
    cold = make_clip_loader(records, spec, backend, batch_size=2, cache_dir=cache_dir)
    first = np.concatenate([b.clips for b in cold])
    frames_file = next(cache_dir.rglob("a-*.npy"))
    with open(frames_file, "r+b") as handle:
        handle.truncate(frames_file.stat().st_size // 2)
    again = make_clip_loader(records, spec, backend, batch_size=2, cache_dir=cache_dir)
    second = np.concatenate([b.clips for b in again])
    assert (again.cache_hits, again.cache_misses, again.rejected) == (1, 1, [])
    np.testing.assert_array_equal(first, second)
    assert ClipCache(cache_dir).entry(records[0].path, spec.short_side) is not None


@pytest.mark.parametrize("damage", ["frames cut by a few bytes", "empty sidecar"])
def test_a_damaged_entry_is_set_aside_named_and_decoded_again(
    records: list[VideoRecord], tmp_path: Path, capsys: pytest.CaptureFixture[str], damage: str
) -> None:
    """A few bytes missing from the frames used to shift the read offset (wrong frames, silently);
    an unreadable sidecar was ignored. Both are now set aside, named, and the video decoded again."""
    cache_dir = tmp_path / "cache"
    spec = ClipSpec(frames=4, size=32, layout="BTHWC")
    backend = resolve_backend("cpu")
    cold = make_clip_loader(records, spec, backend, batch_size=2, cache_dir=cache_dir)
    first = np.concatenate([b.clips for b in cold])
    frames_file = next(cache_dir.rglob("a-*.npy"))
    damaged = frames_file if damage.startswith("frames") else frames_file.with_suffix(".json")
    with open(damaged, "r+b") as handle:
        handle.truncate(damaged.stat().st_size - 5 if damage.startswith("frames") else 0)
    capsys.readouterr()
    again = make_clip_loader(records, spec, backend, batch_size=2, cache_dir=cache_dir)
    second = np.concatenate([b.clips for b in again])
    assert (again.cache_hits, again.cache_misses, again.rejected) == (1, 1, [])
    np.testing.assert_array_equal(first, second)
    assert f"{damaged} cannot be read" in capsys.readouterr().err
    assert damaged.with_name(damaged.name + ".corrupt").is_file()
    assert ClipCache(cache_dir).entry(records[0].path, spec.short_side) is not None
