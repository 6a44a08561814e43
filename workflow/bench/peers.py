"""What a PyTorch user would pick instead of the project's loader, timed on the same clips.

Each peer decodes a clip's frames with its library, inside a ``torch.utils.data.DataLoader`` with
:data:`PEER_WORKERS` worker processes, and applies torchvision ``transforms.v2`` to the whole clip:
evaluation resizes the short side to the clip's short side, centre-crops the clip size and
normalises with the model's mean/std; training takes a random resized crop, flip, rotation and
colour jitter (one draw per clip). The frame numbers are the project's own sampling
(:mod:`pipelines.video.clips`) on the prepared frame count, so every loader reads the same frames.

* ``torchcodec``: ``VideoDecoder(path, seek_mode="approximate", num_ffmpeg_threads=1).get_frames_at(indices)``
  (needs the system FFmpeg libraries, e.g. ``apt-get install ffmpeg``).
* ``decord``: ``VideoReader(path).get_batch(indices)``.

Both are optional (``pip install -e ".[peers]"``); :func:`check_peers` says which one is missing.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from pipelines.data.records import VideoRecord
from pipelines.video.clips import (
    CROP_RATIO,
    CROP_SCALE,
    MAX_ROTATION_DEG,
    SATURATION,
    ClipSpec,
    clip_rng,
    eval_indices,
    train_indices,
)

PEERS = ("torchcodec", "decord")
PEER_WORKERS = 2


def check_peers(peers: Sequence[str]) -> None:
    """Raise ``ValueError`` naming the first unknown or missing peer and how to install it."""
    for name in peers:
        if name not in PEERS:
            raise ValueError(f"unknown peer {name!r}; choose from {', '.join(PEERS)}")
        if importlib.util.find_spec(name) is None:
            extra = "; it also needs the FFmpeg libraries (apt-get install ffmpeg)" if name == "torchcodec" else ""
            raise ValueError(f"peer {name!r} is not installed: pip install -e '.[peers]', or pip install {name}{extra}")


def _frames_torchcodec(path: str, indices: list[int]) -> torch.Tensor:
    from torchcodec.decoders import VideoDecoder

    decoder = VideoDecoder(path, seek_mode="approximate", num_ffmpeg_threads=1)
    return decoder.get_frames_at(indices).data  # (T, C, H, W) uint8


def _frames_decord(path: str, indices: list[int]) -> torch.Tensor:
    import decord

    batch = decord.VideoReader(path).get_batch(indices).asnumpy()  # (T, H, W, C) uint8
    return torch.from_numpy(batch).permute(0, 3, 1, 2)


_READERS: dict[str, Callable[[str, list[int]], torch.Tensor]] = {
    "torchcodec": _frames_torchcodec,
    "decord": _frames_decord,
}


def clip_transform(spec: ClipSpec) -> Callable[[torch.Tensor], torch.Tensor]:
    """torchvision ``transforms.v2`` for a (T, C, H, W) uint8 clip -> float32 (see the module docstring)."""
    from torchvision.transforms import v2

    assert spec.mean is not None and spec.std is not None
    if spec.mode == "eval":
        geometry = [v2.Resize(spec.short_side, antialias=True), v2.CenterCrop(spec.size)]
    else:
        geometry = [
            v2.RandomResizedCrop(spec.size, scale=CROP_SCALE, ratio=CROP_RATIO, antialias=True),
            v2.RandomHorizontalFlip(),
            v2.RandomRotation(MAX_ROTATION_DEG),
            v2.ColorJitter(0.25, 0.25, SATURATION),
        ]
    return v2.Compose([*geometry, v2.ToDtype(torch.float32, scale=True), v2.Normalize(spec.mean, spec.std)])


class PeerClips(Dataset):
    """One clip per video, decoded by ``peer`` and transformed, laid out as ``spec.layout``."""

    def __init__(self, peer: str, records: Sequence[VideoRecord], spec: ClipSpec, seed: int = 0) -> None:
        # Imported here, so DataLoader workers fork with the library loaded instead of each
        # importing it on its first clip (seconds on a busy machine, not data time).
        importlib.import_module(f"{peer}.decoders" if peer == "torchcodec" else peer)
        self.read = _READERS[peer]
        self.records = list(records)
        self.spec = spec
        self.seed = seed
        self.transform = clip_transform(spec)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, video: int) -> torch.Tensor:
        record = self.records[video]
        if self.spec.mode == "eval":
            indices = eval_indices(record.frames, self.spec, fps=record.fps)
        else:
            indices = train_indices(record.frames, self.spec, clip_rng(self.seed, 0, video), fps=record.fps)
        clip = self.transform(self.read(record.path, [int(i) for i in indices]))  # (T, C, H, W)
        return clip.permute(1, 0, 2, 3) if self.spec.layout == "BCTHW" else clip


def peer_pass(peer: str, records: Sequence[VideoRecord], spec: ClipSpec, batch_size: int) -> Callable[[], int]:
    """A function that loads every clip once through ``peer`` in a DataLoader; returns the clip count."""

    def run_pass() -> int:
        # fork, Linux's default, also in a spawned process (see workflow.bench.loader.in_fresh_interpreter)
        clips = PeerClips(peer, records, spec)
        loader = DataLoader(clips, batch_size=batch_size, num_workers=PEER_WORKERS, multiprocessing_context="fork")
        return sum(int(batch.shape[0]) for batch in loader)

    return run_pass
