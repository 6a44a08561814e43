"""What every report section reads: the run's results and the evidence computed once from them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from analysis.comparison import Comparison
from analysis.scene_bias import NeighbourShares, Representation
from analysis.tables import ModelRow
from analysis.training import DeepTraining
from core.backend import Backend
from core.schema import ModelResult


@dataclass(frozen=True)
class ReportOptions:
    """How much work the report does, and what it records about how it was made."""

    n_resamples: int = 2000
    seed: int = 0
    interpret: bool = True
    gradcam_per_class: int = 2
    occlusion_per_class: int = 6
    embeddings: tuple[str, ...] = ("tsne", "umap")
    command: str | None = None  # the command line that made the report, shown under Environment


@dataclass
class ReportContext:
    run_dir: Path
    out: Path  # RUN_DIR/report
    options: ReportOptions
    results: list[ModelResult]
    class_names: list[str]
    groups: dict[str, str] | None  # video_id -> group (None without videos.csv)
    comparison: Comparison
    rows: list[ModelRow]
    trained: list[DeepTraining]  # the deep models, in report order
    representations: list[Representation]
    scene: list[NeighbourShares]
    backend: Backend | None
    log: Callable[[str], None]
    notes: list[str] = field(default_factory=list)  # shown in the summary (e.g. skipped result files)
    representation_notes: list[str] = field(default_factory=list)  # missing features or embeddings

    @property
    def models(self) -> list[str]:
        return [r.model for r in self.results]

    @property
    def by_name(self) -> dict[str, ModelResult]:
        return {r.model: r for r in self.results}
