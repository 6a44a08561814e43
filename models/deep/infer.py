"""Inference with a trained CNN of a run on videos outside it: the saved model and its test clip
protocol, clip scores streamed batch by batch and averaged per video as the evaluation does."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from models.deep.build import clip_specs
from models.deep.config import DeepConfig
from models.deep.runtime import amp_dtype, autocast, prepare_model
from models.deep.train import load_trained_model
from pipelines.video.clips import ClipSpec


@dataclass
class TrainedNetwork:
    """A saved CNN ready for inference: the network on its device, how it was trained, the clip
    it reads (the test protocol, with the normalisation it was trained with) and its classes."""

    network: nn.Module
    config: DeepConfig
    clip: ClipSpec
    class_names: list[str]
    device: torch.device

    @property
    def dtype(self) -> torch.dtype | None:
        """The autocast dtype the evaluation used on this device (None: float32)."""
        return amp_dtype(self.config, self.device)


def saved_config(meta: dict[str, Any]) -> DeepConfig:
    """The :class:`DeepConfig` stored with a saved model (settings this version lacks are ignored)."""
    return DeepConfig.from_saved(meta["config"])


def load_network(path: str | os.PathLike[str], device: torch.device) -> TrainedNetwork:
    """RUN_DIR/models/<model>.pt on ``device`` in eval mode, laid out (channels_last) as in training."""
    network, meta = load_trained_model(Path(path), device)
    config = saved_config(meta)
    clip = replace(clip_specs(config)["test"], mean=tuple(meta["mean"]), std=tuple(meta["std"]))
    network = prepare_model(network, config, device).eval()
    return TrainedNetwork(network, config, clip, list(meta["class_names"]), device)


def clip_probabilities(trained: TrainedNetwork, clips: torch.Tensor) -> np.ndarray:
    """Softmax class probabilities (B, C) float32 of a batch of clips, as the evaluation computes them."""
    with torch.no_grad(), autocast(trained.device, trained.dtype):
        logits = trained.network(clips.to(trained.device, non_blocking=True))
    return torch.softmax(logits.float(), dim=1).cpu().numpy()


class ClipAverager:
    """Collects the clip probabilities of each video and hands back a video's scores once all its
    ``clips_per_video`` clips are in: their mean, renormalised (the evaluation's per-video scores)."""

    def __init__(self, clips_per_video: int) -> None:
        self.clips_per_video = clips_per_video
        self._pending: dict[str, list[np.ndarray]] = {}

    def add(self, video_ids: list[str], probabilities: np.ndarray) -> dict[str, np.ndarray]:
        """Add one batch (row i belongs to ``video_ids[i]``); return the videos it completed."""
        done = {}
        for video_id, row in zip(video_ids, probabilities, strict=True):
            rows = self._pending.setdefault(video_id, [])
            rows.append(row)
            if len(rows) == self.clips_per_video:
                mean = np.mean(self._pending.pop(video_id), axis=0).astype(np.float64)
                done[video_id] = mean / mean.sum()
        return done

    @property
    def incomplete(self) -> list[str]:
        """Videos with some clips but not all (none unless the loader dropped clips)."""
        return list(self._pending)
