"""The clip loader on tiny generated videos: layouts, normalisation, augmentation, coverage,
sharding, codecs, DALI-vs-PyAV decoding and corrupt files (CPU; GPU tests marked ``gpu``)."""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch

from core.backend import resolve_backend
from core.runfiles import read_rejected
from pipelines.data.preflight import probe_video
from pipelines.data.records import VideoRecord
from pipelines.video.clips import ClipSpec, clip_rng, draw_augmentation, eval_indices, train_indices
from pipelines.video.codecs import codec_extension, write_video
from pipelines.video.decode import decode_frames
from pipelines.video.loader import make_clip_loader
from tests.edited_videos import still_track_first

HEIGHT, WIDTH = 48, 64


def moving_frames(count: int, seed: int = 0) -> np.ndarray:
    """Smooth frames with a bright square moving right, plus a per-frame colour ramp."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    frames = np.empty((count, HEIGHT, WIDTH, 3), np.uint8)
    base = rng.integers(40, 200, size=3)
    for t in range(count):
        frame = np.zeros((HEIGHT, WIDTH, 3), np.float64)
        frame[..., 0] = base[0] + 30 * np.sin(xx / 9.0 + t / 3)
        frame[..., 1] = base[1] + 30 * np.cos(yy / 7.0)
        frame[..., 2] = (base[2] + 4 * t) % 255
        x0 = (3 * t) % (WIDTH - 12)
        frame[16:28, x0 : x0 + 12] = 250
        frames[t] = frame.clip(0, 255).astype(np.uint8)
    return frames


def make_record(directory: Path, name: str, frames: np.ndarray, codec: str, label: int = 0) -> VideoRecord:
    path = directory / f"{name}{codec_extension(codec)}"
    write_video(path, frames, 25, codec)
    return VideoRecord(
        video_id=f"cls{label}/{name}",
        path=str(path),
        class_name=f"cls{label}",
        label=label,
        group=name,
        split="train",
        codec=codec,
        frames=len(frames),
        fps=25.0,
        width=frames.shape[2],
        height=frames.shape[1],
    )


@pytest.fixture(scope="module")
def backend():  # type: ignore[no-untyped-def]
    return resolve_backend("cpu")


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> list[VideoRecord]:
    """Five short videos: VP9 (DALI CPU decoder), MPEG-4 AVI and H.264 MP4 (PyAV), MJPEG."""
    directory = tmp_path_factory.mktemp("videos")
    codecs = ["vp9", "mpeg4", "h264", "mjpeg", "vp9"]
    lengths = [20, 14, 18, 6, 24]  # the 6-frame video is shorter than a clip: it loops
    return [
        make_record(directory, f"v{i}", moving_frames(n, seed=i), codec, label=i % 2)
        for i, (codec, n) in enumerate(zip(codecs, lengths, strict=True))
    ]


def collect(loader):  # type: ignore[no-untyped-def]
    batches = list(loader)
    keys = [(vid, int(k)) for batch in batches for vid, k in zip(batch.video_ids, batch.clip_index, strict=True)]
    return batches, keys


IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize(
    "layout, shape",
    [("BTCHW", (8, 3, 32, 32)), ("BCTHW", (3, 8, 32, 32)), ("BTHWC", (8, 32, 32, 3))],
)
def test_shapes_dtypes_layouts(videos, backend, mode: str, layout: str, shape: tuple[int, ...]) -> None:  # type: ignore[no-untyped-def]
    mean, std = (None, None) if layout == "BTHWC" else IMAGENET
    spec = ClipSpec(
        frames=8,
        size=32,
        mode=mode,
        layout=layout,
        mean=mean,
        std=std,
        sampling="segment" if layout == "BTCHW" else "window",
    )
    loader = make_clip_loader(videos, spec, backend, batch_size=2)
    batches, keys = collect(loader)
    assert len(batches) == len(loader) == 3
    for batch in batches:
        assert tuple(batch.clips.shape[1:]) == shape
        assert batch.labels.dtype == np.int64 and batch.clip_index.dtype == np.int64
        assert len(batch.video_ids) == batch.clips.shape[0] == len(batch.labels)
        if layout == "BTHWC":
            assert isinstance(batch.clips, np.ndarray) and batch.clips.dtype == np.uint8
        else:
            assert isinstance(batch.clips, torch.Tensor) and batch.clips.dtype == torch.float32
            assert batch.clips.device.type == "cpu"
    assert sorted(keys) == sorted((r.video_id, 0) for r in videos)


def _weights_normalization():  # type: ignore[no-untyped-def]
    from torchvision.models import ResNet18_Weights
    from torchvision.models.video import R3D_18_Weights

    image = ResNet18_Weights.IMAGENET1K_V1.transforms()
    video = R3D_18_Weights.KINETICS400_V1.transforms()
    return {"cnn2d": (tuple(image.mean), tuple(image.std)), "cnn3d": (tuple(video.mean), tuple(video.std))}


@pytest.mark.parametrize("model", ["cnn2d", "cnn3d"])
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_normalisation_matches_weights_metadata(tmp_path: Path, backend, model: str, mode: str) -> None:  # type: ignore[no-untyped-def]
    """A flat-colour video gives ``(colour / 255 - mean) / std`` with the weights' mean/std.

    Training: a flat grey (which saturation leaves alone) shows the clip's brightness ``b`` and
    contrast ``c`` draw, folded into the normalisation: ``b * c * v + 128 * b * (1 - c)``."""
    mean, std = _weights_normalization()[model]
    colour = np.array([200, 120, 60] if mode == "eval" else [200, 200, 200], np.uint8)
    frames = np.broadcast_to(colour, (8, HEIGHT, WIDTH, 3)).copy()
    record = make_record(tmp_path, "flat", frames, "mjpeg")
    layout = "BTCHW" if model == "cnn2d" else "BCTHW"
    spec = ClipSpec(frames=4, size=32, mode=mode, layout=layout, mean=mean, std=std)
    (batch,) = list(make_clip_loader([record], spec, backend, batch_size=1, seed=5))
    channel_axis = 2 if layout == "BTCHW" else 1
    clip = batch.clips[0].movedim(channel_axis - 1, 0)  # C, T, H, W
    clip = clip[:, :, 8:24, 8:24].reshape(3, -1)  # the centre: no rotation corners
    seen = clip.mean(1).numpy()
    if mode == "eval":
        value = colour.astype(np.float64)
    else:
        rng = clip_rng(5, 0, 0)
        train_indices(8, spec, rng, fps=25.0)
        draw = draw_augmentation(rng, HEIGHT, WIDTH)
        b, c = draw.brightness, draw.contrast
        value = b * c * colour + 128 * b * (1 - c)
    expected = (value / 255.0 - np.array(mean)) / np.array(std)
    # MJPEG round trip of a flat colour: within 3 grey levels.
    np.testing.assert_allclose(seen, expected, atol=3 / 255 / min(std))
    assert float(clip.std(1).max()) < 0.05


def test_augmentation_is_one_draw_per_clip(tmp_path: Path, backend) -> None:  # type: ignore[no-untyped-def]
    """Static quadrant pattern: all frames of a clip are identical after augmentation, and
    the crop and flip of each clip match its recorded draw (red = left half, blue = top half)."""
    frames = np.zeros((10, HEIGHT, WIDTH, 3), np.uint8)
    frames[:, :, : WIDTH // 2, 0] = 255
    frames[:, : HEIGHT // 2, :, 2] = 255
    records = [make_record(tmp_path, f"q{i}", frames, "mjpeg") for i in range(6)]
    spec = ClipSpec(frames=4, size=40, mode="train", layout="BTHWC")
    loader = make_clip_loader(records, spec, backend, batch_size=6, seed=3)
    (batch,) = list(loader)
    flips = []
    for clip, video_id in zip(batch.clips.astype(int), batch.video_ids, strict=True):
        assert np.abs(clip - clip[:1]).max() <= 2, "frames of one clip were augmented differently"
        video = int(video_id.split("q")[-1])
        rng = clip_rng(3, 0, video)
        train_indices(10, spec, rng, fps=25.0)
        draw = draw_augmentation(rng, HEIGHT, WIDTH)
        x, y, w, h = draw.crop
        row, column = clip[0, 20, :, 0], clip[0, :, 20, 2]
        red_fraction = (row > (row.max() + row.min()) / 2).mean()
        blue_fraction = (column > (column.max() + column.min()) / 2).mean()
        assert red_fraction == pytest.approx(np.clip((WIDTH / 2 - x) / w, 0, 1), abs=0.08)
        assert blue_fraction == pytest.approx(np.clip((HEIGHT / 2 - y) / h, 0, 1), abs=0.08)
        assert (row[:4].mean() > row[-4:].mean()) == (not draw.flip)
        flips.append(draw.flip)
    assert len(set(flips)) == 2, "the test needs flipped and unflipped clips"


def test_training_reproducible_and_shuffled_per_epoch(videos, backend) -> None:  # type: ignore[no-untyped-def]
    spec = ClipSpec(frames=4, size=24, mode="train", layout="BTHWC")
    first = collect(make_clip_loader(videos, spec, backend, batch_size=5, seed=1))[0][0]
    again = collect(make_clip_loader(videos, spec, backend, batch_size=5, seed=1))[0][0]
    np.testing.assert_array_equal(first.clips, again.clips)
    assert first.video_ids == again.video_ids
    loader = make_clip_loader(videos, spec, backend, batch_size=5, seed=1)
    orders = set()
    for epoch in range(4):
        loader.set_epoch(epoch)
        orders.add(tuple(collect(loader)[1]))
    assert len(orders) > 1


def test_eval_deterministic_and_exactly_once(videos, backend) -> None:  # type: ignore[no-untyped-def]
    spec = ClipSpec(frames=4, size=24, test_clips=2, layout="BCTHW", mean=IMAGENET[0], std=IMAGENET[1])
    loader = make_clip_loader(videos, spec, backend, batch_size=3)  # 10 clips, batches 3+3+3+1
    batches, keys = collect(loader)
    assert [len(b.video_ids) for b in batches] == [3, 3, 3, 1] and len(loader) == 4
    assert keys == [(r.video_id, k) for r in videos for k in range(2)]
    again, _ = collect(make_clip_loader(videos, spec, backend, batch_size=4))
    torch.testing.assert_close(torch.cat([b.clips for b in batches]), torch.cat([b.clips for b in again]))
    assert batches[0].labels.tolist() == [videos[0].label] * 2 + [videos[1].label]


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_shards_disjoint_and_covering(videos, backend, mode: str) -> None:  # type: ignore[no-untyped-def]
    spec = ClipSpec(frames=2, size=16, mode=mode, layout="BTHWC")
    shards = [
        collect(make_clip_loader(videos, spec, backend, batch_size=2, num_shards=2, shard_id=s))[1] for s in range(2)
    ]
    assert not set(shards[0]) & set(shards[1])
    if mode == "eval":
        assert sorted(shards[0] + shards[1]) == sorted((r.video_id, 0) for r in videos)
    else:
        assert len(shards[0]) == len(shards[1]) == len(videos) // 2


@pytest.mark.parametrize("codec", ["mpeg4", "h264", "vp9"])
def test_codecs_decode_to_the_source_frames(tmp_path: Path, backend, codec: str) -> None:  # type: ignore[no-untyped-def]
    """MPEG-4 AVI and H.264 MP4 go through PyAV, VP9 through DALI's CPU decoder; all three
    give the sampled source frames (lossy codecs: mean error under 4 grey levels)."""
    source = moving_frames(12, seed=5)
    record = make_record(tmp_path, "c", source, codec)
    spec = ClipSpec(frames=4, size=HEIGHT, resize_short=HEIGHT, stride=3, layout="BTHWC")
    (batch,) = list(make_clip_loader([record], spec, backend, batch_size=1))
    crop_x = (WIDTH - HEIGHT) // 2
    indices = eval_indices(len(source), spec, fps=25.0)
    np.testing.assert_array_equal(indices, [1, 4, 7, 10])
    expected = source[indices, :, crop_x : crop_x + HEIGHT].astype(int)
    error = np.abs(batch.clips[0].astype(int) - expected).mean(axis=(1, 2, 3))
    assert error.max() < 4, error  # neighbouring frames differ by more than 6 on average


@pytest.mark.parametrize(("codec", "route"), [("vp9", "dali-cpu"), ("mpeg4", "pyav")])
def test_clips_span_the_same_time_at_any_frame_rate(tmp_path: Path, backend, codec: str, route: str) -> None:  # type: ignore[no-untyped-def]
    """The same 2.4 s scene (its grey level codes the time) filmed at 25, 50, 29.97 and 10 fps: the
    frame rate comes from the file (as `prepare` probes it), and every rate's centred clip samples
    the scene 80 ms apart (stride 2 at 25 fps), on the DALI and the PyAV route. Counting the stride
    in frames would give 40 ms at 50 fps."""
    seconds, low, high = 2.4, 30.0, 230.0
    spec = ClipSpec(frames=16, size=32, resize_short=32, stride=2, layout="BTHWC")
    for fps in (25.0, 50.0, 30000 / 1001, 10.0):
        times = np.arange(int(round(seconds * fps))) / fps
        levels = np.round(low + (high - low) * times / seconds).astype(np.uint8)
        path = tmp_path / f"at{fps:.0f}{codec_extension(codec)}"
        write_video(
            path, np.repeat(levels[:, None, None, None], 32, axis=1).repeat(32, axis=2).repeat(3, axis=3), fps, codec
        )
        probe = probe_video(path)
        assert probe.ok and abs(probe.fps - fps) < 1e-3
        record = VideoRecord(
            f"c/{path.stem}", str(path), "c", 0, path.stem, "test", codec, probe.frames, probe.fps, 32, 32
        )
        loader = make_clip_loader([record], spec, backend, batch_size=1)
        (batch,) = list(loader)
        assert loader.decode_stats.routes == {route: 1}
        seen = (np.asarray(batch.clips[0]).reshape(16, -1).mean(axis=1) - low) / (high - low) * seconds
        # Grey levels are rounded and lossy (about 1 level: 12 ms); samples land on the nearest frame.
        tolerance = 0.5 / fps + 0.025
        np.testing.assert_allclose(np.diff(seen), 0.08, atol=2 * tolerance, err_msg=f"{fps} fps")
        assert abs(seen[-1] - seen[0] - 1.2) < tolerance, (fps, seen)
        assert abs((seen[0] + seen[-1]) / 2 - seconds / 2) < 1 / fps + tolerance, (fps, seen)  # centred


def dali_decode(path: str, indices: np.ndarray, device: str = "cpu") -> np.ndarray:
    """``fn.decoders.video`` (as the loader's encoded route uses it) on one file: (T, H, W, 3)."""
    from nvidia.dali import fn, pipeline_def, types

    @pipeline_def(batch_size=1, num_threads=1, device_id=None if device == "cpu" else 0, prefetch_queue_depth=1)
    def decode_pipeline():  # type: ignore[no-untyped-def]
        encoded = fn.external_source(name="encoded", dtype=types.UINT8)
        frames = fn.external_source(name="indices", dtype=types.INT32)
        return fn.decoders.video(encoded, frames=frames, device=device)

    pipe = decode_pipeline()
    pipe.build()
    pipe.feed_input("encoded", [np.fromfile(path, np.uint8)])
    pipe.feed_input("indices", [np.asarray(indices, np.int32)])
    (output,) = pipe.run()
    return np.array(output.as_cpu()[0] if device != "cpu" else output[0])


def test_dali_cpu_decoder_matches_pyav_on_vp9(videos) -> None:  # type: ignore[no-untyped-def]
    """Same VP9 file, same frames: DALI (libavcodec) vs PyAV. Both decode the same YUV; they
    differ only in YUV->RGB conversion (chroma upsampling, rounding): on smooth content the
    mean absolute difference is below 2 grey levels and no pixel differs by more than 40."""
    record = videos[0]
    indices = np.array([0, 5, 11, 19], np.int32)
    dali_frames = dali_decode(record.path, indices).astype(int)
    pyav_frames = decode_frames(record.path, indices).astype(int)
    assert dali_frames.shape == pyav_frames.shape
    difference = np.abs(dali_frames - pyav_frames)
    assert difference.mean() < 2 and difference.max() <= 40


def assert_exact_frames(decoded: np.ndarray, indices: list[int], full: np.ndarray, tolerance: float) -> None:
    """Each decoded frame is within ``tolerance`` (mean grey levels: colour conversion) of its own
    frame of a sequential decode, and closer to it than to either neighbour."""
    for row, index in enumerate(indices):
        neighbourhood = (index - 1, index, index + 1)
        errors = {i: np.abs(decoded[row].astype(int) - full[i].astype(int)).mean() for i in neighbourhood}
        assert errors[index] < tolerance and errors[index] < min(errors[index - 1], errors[index + 1]), (index, errors)


def test_dali_cpu_decoder_seeks_to_the_exact_frames(tmp_path: Path) -> None:
    """VP9 with a keyframe every 12 frames: DALI's decoder seeks with its own index; the frames it
    returns are those a sequential decode gives at the same numbers."""
    path = tmp_path / "v.webm"
    write_video(path, moving_frames(60, seed=3), 25, "vp9", options={"g": "12"})
    indices = [37, 41, 41, 50, 13, 58]  # a repeated frame (below 12.5 fps), a wrapped one (a looping video)
    assert_exact_frames(dali_decode(str(path), np.array(indices)), indices, decode_frames(path), 2)


def two_video_streams(first: Path, second: Path, target: Path) -> None:
    """A Matroska file with ``first``'s video stream, then ``second``'s marked as the default one
    (both files of the same frame count: their packets are interleaved one by one)."""
    with av.open(str(first)) as a, av.open(str(second)) as b, av.open(str(target), "w", format="matroska") as out:
        sources = [(a, a.streams.video[0]), (b, b.streams.video[0])]
        copies = [out.add_stream_from_template(stream) for _, stream in sources]
        copies[0].disposition, copies[1].disposition = 0, av.stream.Disposition.default
        packets = [[p for p in container.demux(stream) if p.dts is not None] for container, stream in sources]
        for pair in zip(*packets, strict=True):
            for packet, copy in zip(pair, copies, strict=True):
                packet.stream = copy
                out.mux(packet)


def test_dali_decodes_the_stream_that_was_probed(tmp_path: Path, backend) -> None:  # type: ignore[no-untyped-def]
    """Files with more than one video stream: DALI's CPU decoder gives the frames of the stream the
    pre-flight probe chose (FFmpeg's best: here the default one, second in the file), and a file with
    a still track first fails on DALI's route and is decoded by PyAV: never another stream's frames.
    That file's failure is its own: the next plain VP9 file still takes DALI's route."""
    source = moving_frames(20, seed=6)
    write_video(tmp_path / "main.webm", source, 25, "vp9")
    write_video(tmp_path / "other.webm", np.ascontiguousarray(255 - source[:, ::2, ::2]), 25, "vp9")
    two_video_streams(tmp_path / "other.webm", tmp_path / "main.webm", tmp_path / "two.mkv")
    still_track_first(tmp_path / "main.webm", tmp_path / "still.mkv")
    spec = ClipSpec(frames=4, size=HEIGHT, resize_short=HEIGHT, stride=3, layout="BTHWC")
    crop_x = (WIDTH - HEIGHT) // 2
    expected = source[eval_indices(len(source), spec, fps=25.0), :, crop_x : crop_x + HEIGHT].astype(int)
    records = []
    for name in ("two.mkv", "still.mkv", "main.webm"):
        probe = probe_video(tmp_path / name)
        assert probe.ok and (probe.codec, probe.width, probe.height, probe.frames) == ("vp9", WIDTH, HEIGHT, 20)
        records.append(
            VideoRecord(
                video_id=f"cls0/{name}",
                path=str(tmp_path / name),
                class_name="cls0",
                label=0,
                group=name,
                split="test",
                codec="vp9",
                frames=probe.frames,
                fps=25.0,
                width=WIDTH,
                height=HEIGHT,
            )
        )
    for files, routes in ((records[:1], {"dali-cpu": 1}), (records[1:], {"pyav": 1, "dali-cpu": 1})):
        loader = make_clip_loader(files, spec, backend, batch_size=1)
        batches = list(loader)
        assert loader.decode_stats.routes == routes, loader.decode_stats.to_dict()
        assert loader.decode_stats.fallbacks == ({"dali-cpu->pyav (decode failed)": 1} if len(files) > 1 else {})
        assert not loader.decode_stats.broken
        for batch in batches:
            error = np.abs(np.asarray(batch.clips[0]).astype(int) - expected).mean(axis=(1, 2, 3))
            assert error.max() < 4, (batch.video_ids, error)


@pytest.mark.gpu
@pytest.mark.nvdec
def test_nvdec_seeks_to_the_exact_frames_of_h264_with_b_frames(tmp_path: Path) -> None:
    """The GPU route: NVDEC on H.264 with B-frames and a keyframe every 12 frames gives the frames of
    a sequential PyAV decode (NVDEC converts colour its own way: a looser tolerance), also for a
    repeated frame (a window of a video below 12.5 fps) and a wrapped one (a looping short video)."""
    resolve_backend("gpu")  # fails clearly if the GPU is unusable (the marker skips without one)
    path = tmp_path / "v.mp4"
    write_video(path, moving_frames(60, seed=4), 25, "h264", options={"g": "12", "bf": "3"})
    indices = [37, 41, 41, 50, 13, 58]
    assert_exact_frames(dali_decode(str(path), np.array(indices), device="mixed"), indices, decode_frames(path), 4)


@pytest.mark.parametrize("codec", ["vp9", "mpeg4"])
def test_corrupt_file_is_skipped_and_listed(tmp_path: Path, videos, backend, codec: str) -> None:  # type: ignore[no-untyped-def]
    broken = tmp_path / f"broken{codec_extension(codec)}"
    broken.write_bytes(b"\x1aE\xdf\xa3 not a video" * 50)
    bad = VideoRecord("cls0/broken", str(broken), "cls0", 0, "broken", "test", codec, 20, 25.0, WIDTH, HEIGHT)
    records = [videos[0], bad, videos[1], videos[2]]
    spec = ClipSpec(frames=4, size=24, layout="BTHWC")
    loader = make_clip_loader(records, spec, backend, batch_size=2, run_dir=tmp_path, stage="test-stage")
    _, keys = collect(loader)
    assert [vid for vid, _ in keys] == [videos[0].video_id, videos[1].video_id, videos[2].video_id]
    assert [item.path for item in loader.rejected] == [str(broken)]
    rows = read_rejected(tmp_path)
    assert len(rows) == 1 and rows[0]["path"] == str(broken) and rows[0]["stage"] == "test-stage"
    assert rows[0]["reason"]


def test_wrong_frame_count_is_rejected_not_padded(videos, backend) -> None:  # type: ignore[no-untyped-def]
    """An index claiming more frames than the VP9 file has: DALI must not pad with black frames;
    the PyAV fallback finds the real length and rejects the video with the reason."""
    real = videos[4]
    wrong = VideoRecord(
        real.video_id,
        real.path,
        real.class_name,
        real.label,
        real.group,
        real.split,
        real.codec,
        real.frames * 3,
        real.fps,
        real.width,
        real.height,
    )
    spec = ClipSpec(frames=4, size=24, layout="BTHWC", sampling="segment")
    loader = make_clip_loader([videos[0], wrong], spec, backend, batch_size=2)
    _, keys = collect(loader)
    assert keys == [(videos[0].video_id, 0)]
    assert "frames decodable" in loader.rejected[0].reason


def scaled_frames(count: int, width: int, height: int) -> np.ndarray:
    """:func:`moving_frames` resized to ``width`` x ``height``."""
    frames = moving_frames(count)
    return np.stack([cv2.resize(frame, (width, height), interpolation=cv2.INTER_LINEAR) for frame in frames])


@pytest.mark.gpu
@pytest.mark.nvdec
@pytest.mark.parametrize("codec", ["h264", "vp9", "mpeg4", "mjpeg"])
def test_gpu_decode_runs_on_nvdec_and_stays_on_gpu(tmp_path: Path, codec: str) -> None:
    """At 192x128 (inside NVDEC's sizes for every codec here) the clips are decoded by NVDEC, not by
    a fallback that would also return CUDA tensors: the route is asserted, and the pixels match
    the CPU path's within the decoders' colour-conversion differences."""
    backend = resolve_backend("gpu")
    assert backend.decode.name == "dali-gpu", backend.dali_gpu.reason
    record = make_record(tmp_path, "g", scaled_frames(16, 192, 128), codec)
    spec = ClipSpec(frames=4, size=64, mode="eval", layout="BCTHW", mean=IMAGENET[0], std=IMAGENET[1])
    loader = make_clip_loader([record], spec, backend, batch_size=1)
    (batch,) = list(loader)
    assert loader.decode_stats.to_dict() == {"routes": {"nvdec": 1}}
    assert batch.clips.is_cuda and batch.clips.shape == (1, 3, 4, 64, 64)
    (on_cpu,) = list(make_clip_loader([record], spec, resolve_backend("cpu"), batch_size=1))
    std = torch.tensor(IMAGENET[1]).view(1, 3, 1, 1, 1)
    grey_levels = (batch.clips.cpu() - on_cpu.clips).abs() * 255 * std
    assert float(grey_levels.mean()) < 4
    raw = ClipSpec(frames=4, size=32, layout="BTHWC", mode="train")
    raw_loader = make_clip_loader([record], raw, backend, batch_size=1)
    (batch,) = list(raw_loader)
    import cupy

    assert isinstance(batch.clips, cupy.ndarray) and batch.clips.shape == (1, 4, 32, 32, 3)
    assert raw_loader.decode_stats.routes == {"nvdec": 1}


@pytest.mark.gpu
@pytest.mark.nvdec
def test_gpu_routes_files_below_nvdec_sizes_elsewhere_and_counts_them(tmp_path: Path) -> None:
    """The default demo's 160x120 VP9 is below NVDEC's VP9 minimum (128x128): it is decoded by
    DALI on the CPU and uploaded; a 64x48 H.264 (above H.264's 48x16) still goes to NVDEC."""
    backend = resolve_backend("gpu")
    small_vp9 = make_record(tmp_path, "v", scaled_frames(12, 160, 120), "vp9")
    h264 = make_record(tmp_path, "h", moving_frames(12), "h264")
    loader = make_clip_loader([small_vp9, h264], ClipSpec(frames=4, size=32, layout="BCTHW", mean=IMAGENET[0],
                              std=IMAGENET[1]), backend, batch_size=2)  # fmt: skip
    (batch,) = list(loader)
    assert batch.clips.is_cuda and batch.video_ids == [small_vp9.video_id, h264.video_id]
    assert loader.decode_stats.to_dict() == {
        "routes": {"dali-cpu": 1, "nvdec": 1},
        "fallbacks": {"nvdec->dali-cpu (outside NVDEC frame sizes)": 1},
    }


def test_earlier_batches_stay_valid_while_later_ones_are_made(videos, backend) -> None:  # type: ignore[no-untyped-def]
    """Batches share DALI's output buffers without a copy: holding them must be safe, i.e. a
    later run never writes into a batch the caller still holds."""
    spec = ClipSpec(frames=4, size=24, mode="train", layout="BCTHW", mean=IMAGENET[0], std=IMAGENET[1])
    held, snapshots = [], []
    for batch in make_clip_loader(videos, spec, backend, batch_size=1, seed=2):
        held.append(batch.clips)
        snapshots.append(batch.clips.clone())
    assert len(held) == len(videos)
    for clips, snapshot in zip(held, snapshots, strict=True):
        torch.testing.assert_close(clips, snapshot, rtol=0, atol=0)
    assert len({float(s.sum()) for s in snapshots}) == len(videos)


def test_every_clip_is_counted_under_its_decode_route(videos, backend) -> None:  # type: ignore[no-untyped-def]
    """CPU routes: VP9 and MJPEG on DALI's CPU decoder, MPEG-4 and H.264 through PyAV."""
    spec = ClipSpec(frames=4, size=24, test_clips=2, layout="BTHWC")
    loader = make_clip_loader(videos, spec, backend, batch_size=3)
    collect(loader)
    assert loader.decode_stats.to_dict() == {"routes": {"dali-cpu": 6, "pyav": 4}}
    assert "dali-cpu 6, pyav 4" in loader.decode_stats.summary()


def test_a_bad_file_is_isolated_and_the_rest_of_its_batch_stays_on_the_route(tmp_path: Path, backend) -> None:  # type: ignore[no-untyped-def]
    """DALI fails a whole batch on one bad file: the batch is split until the bad file is alone,
    the good VP9 files are still decoded by DALI, only the bad one goes to PyAV (and is
    rejected), and the route is not blamed."""
    good = [make_record(tmp_path, f"ok{i}", moving_frames(12, seed=i), "vp9") for i in range(3)]
    broken = tmp_path / "bad.webm"
    broken.write_bytes(b"\x1aE\xdf\xa3 not a video" * 50)
    bad = VideoRecord("cls0/bad", str(broken), "cls0", 0, "bad", "test", "vp9", 12, 25.0, WIDTH, HEIGHT)
    loader = make_clip_loader([good[0], bad, good[1], good[2]], ClipSpec(frames=4, size=24, layout="BTHWC"),
                              backend, batch_size=4)  # fmt: skip
    _, keys = collect(loader)
    assert [vid for vid, _ in keys] == [r.video_id for r in good]
    stats = loader.decode_stats
    assert stats.routes == {"dali-cpu": 3} and not stats.fallbacks and not stats.broken
    assert 1 <= stats.failed_runs["dali-cpu"] <= 3  # the batch, then halves down to the bad file
    assert [item.path for item in loader.rejected] == [str(broken)]


@pytest.mark.parametrize("prefetch", [1, 2])
def test_a_route_that_fails_on_a_codec_is_tried_once_and_its_fallbacks_counted(
    tmp_path: Path, backend, monkeypatch: pytest.MonkeyPatch, prefetch: int
) -> None:  # type: ignore[no-untyped-def]
    """DALI's documentation lists H.264 for its CPU decoder, but the pip wheel cannot decode it.
    Routed there anyway, every H.264 file fails on DALI and PyAV decodes it: after the first
    failing file the route is remembered as broken for H.264 and never run again, however many
    batches follow; every clip still arrives, counted as a fallback."""
    import pipelines.video.loader as loader_module

    monkeypatch.setattr(loader_module, "DALI_CPU_CODECS", loader_module.DALI_CPU_CODECS | {"h264"})
    records = [make_record(tmp_path, f"h{i}", moving_frames(10, seed=i), "h264") for i in range(8)]
    loader = make_clip_loader(records, ClipSpec(frames=4, size=24, layout="BTHWC"), backend, batch_size=2,
                              prefetch=prefetch)  # fmt: skip
    batches, keys = collect(loader)
    assert len(batches) == 4 and len(keys) == 8 and not loader.rejected
    stats = loader.decode_stats
    assert stats.routes == {"pyav": 8}
    assert stats.failed_runs == {"dali-cpu": 2}  # the first batch, then its first video alone
    assert list(stats.broken) == ["dali-cpu:h264"]
    assert stats.fallbacks == {
        "dali-cpu->pyav (decode failed)": 1,
        "dali-cpu->pyav (dali-cpu failed on h264 earlier)": 7,
    }
    assert "decode routes (clips): pyav 8 (fallbacks: dali-cpu->pyav (dali-cpu failed on h264 earlier) 7" in (
        stats.summary()
    )


@pytest.mark.parametrize("prefetch", [1, 3])
def test_prefetching_gives_the_same_batches(videos, backend, prefetch: int) -> None:  # type: ignore[no-untyped-def]
    """DALI running batches ahead changes nothing in what is made, in eval and in training."""
    for mode in ("eval", "train"):
        spec = ClipSpec(frames=4, size=24, mode=mode, layout="BCTHW", mean=IMAGENET[0], std=IMAGENET[1])
        reference = collect(make_clip_loader(videos, spec, backend, batch_size=2, seed=4, prefetch=2))[0]
        batches = collect(make_clip_loader(videos, spec, backend, batch_size=2, seed=4, prefetch=prefetch))[0]
        assert [b.video_ids for b in batches] == [b.video_ids for b in reference]
        for batch, expected in zip(batches, reference, strict=True):
            torch.testing.assert_close(batch.clips, expected.clips, rtol=0, atol=0)


def test_an_iteration_stopped_early_leaves_the_next_one_right(videos, backend) -> None:  # type: ignore[no-untyped-def]
    """Batches DALI made ahead for an iteration that stopped are dropped, not handed to the next."""
    spec = ClipSpec(frames=4, size=24, layout="BTHWC")
    loader = make_clip_loader(videos, spec, backend, batch_size=1, prefetch=2)
    for _ in loader:
        break
    batches, keys = collect(loader)
    assert keys == [(r.video_id, 0) for r in videos]
    (expected,) = collect(make_clip_loader(videos[:1], spec, backend, batch_size=1))[0]
    np.testing.assert_array_equal(batches[0].clips, expected.clips)
    assert all(not pipe._ready and not pipe._dropped for pipe in loader._pipes.values())
