"""Evaluation: per-video probabilities and embeddings over K clips, gathered across DDP ranks."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from core import distributed as dist_utils
from core.console import progress_bar
from core.distributed import DistContext
from core.metrics import classification_metrics
from core.schema import Metrics
from models.deep.runtime import autocast, synchronize
from models.networks.protocol import ClipClassifier

if TYPE_CHECKING:  # annotations only: evaluation runs without the video stack (scripts/gpu_check.py)
    from pipelines.video.loader import ClipBatch


@dataclass
class VideoScores:
    """Per-video class probabilities (clip probabilities averaged) and embeddings."""

    video_ids: list[str]
    labels: np.ndarray
    probabilities: np.ndarray
    embeddings: np.ndarray
    n_clips: int
    model_seconds: float
    wall_seconds: float

    def metrics(self, class_names: Sequence[str]) -> Metrics:
        return classification_metrics(self.labels, self.probabilities.argmax(1), self.probabilities, class_names)


def predict_videos(
    model: nn.Module,
    loader: Iterable[ClipBatch],
    device: torch.device,
    dtype: torch.dtype | None,
    context: DistContext,
    *,
    progress: bool = False,
    desc: str = "eval",
) -> VideoScores:
    """Softmax probabilities and embeddings for every (video, clip) of an eval loader, gathered across
    ranks (deduplicated by (video_id, clip_index)) and averaged per video. Every rank gets the result."""
    network = dist_utils.unwrap(model)
    if not isinstance(network, ClipClassifier):
        raise TypeError(f"{type(network).__name__} is not a ClipClassifier (embed + head)")
    network.eval()
    clips: dict[tuple[str, int], tuple[int, np.ndarray, np.ndarray]] = {}
    model_seconds = 0.0
    start = time.perf_counter()
    bar = progress_bar(loader, desc=desc, leave=False, enabled=progress and context.is_main, unit="batch")
    with torch.no_grad():
        for batch in bar:
            inputs = batch.clips.to(device, non_blocking=True)
            synchronize(device)
            t0 = time.perf_counter()
            with autocast(device, dtype):
                embeddings = network.embed(inputs)
                logits = network.head(embeddings)
            probabilities = torch.softmax(logits.float(), dim=1).cpu().numpy()
            embeddings_np = embeddings.float().cpu().numpy()
            model_seconds += time.perf_counter() - t0
            for i, video_id in enumerate(batch.video_ids):
                key = (str(video_id), int(batch.clip_index[i]))
                clips[key] = (int(batch.labels[i]), probabilities[i], embeddings_np[i])
    wall_seconds = time.perf_counter() - start
    network.train()
    merged: dict[tuple[str, int], tuple[int, np.ndarray, np.ndarray]] = {}
    for part in dist_utils.gather_objects(clips, context):
        merged.update(part)
    model_seconds = dist_utils.all_reduce_sum(model_seconds, context)
    wall_seconds = dist_utils.all_reduce_sum(wall_seconds, context)
    per_video: dict[str, list[tuple[int, np.ndarray, np.ndarray]]] = {}
    for (video_id, _), row in sorted(merged.items()):
        per_video.setdefault(video_id, []).append(row)
    video_ids = sorted(per_video)
    if not video_ids:
        raise ValueError("no clip could be decoded for evaluation; see rejected.csv")
    labels = np.array([per_video[v][0][0] for v in video_ids], dtype=np.int64)
    probs = np.stack([np.mean([r[1] for r in per_video[v]], axis=0) for v in video_ids]).astype(np.float64)
    probs /= probs.sum(axis=1, keepdims=True)
    embeddings_all = np.stack([np.mean([r[2] for r in per_video[v]], axis=0) for v in video_ids]).astype(np.float32)
    return VideoScores(video_ids, labels, probs, embeddings_all, len(merged), model_seconds, wall_seconds)
