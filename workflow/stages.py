"""One function per stage of a comparison, shared by ``run`` and the single-stage commands.

Each takes the run folder, the backend and the settings of one :class:`~workflow.profiles.Profile`
and returns a :class:`StageReport`: the line that says what the stage did and the videos it could
not decode. ``cli.py`` prints a report; ``workflow.run`` strings reports together. Each first
removes the temporary files that killed writers left in the run folder
(:func:`~core.runfiles.remove_stale_temporaries`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from analysis.report import analyze_run
from core import distributed as dist_utils
from core.backend import Backend
from core.runfiles import RunPaths, atomic_write_text, rejected_notice, remove_stale_temporaries
from models.classical.train import ClassicalConfig, run_classical
from models.deep.build import uses_clip_cache
from models.deep.config import DeepConfig
from models.deep.train import run_deep, summarize
from pipelines.data.prepare import prepare_run
from pipelines.features.kernel import FeatureSpec
from pipelines.features.store import extract_features
from pipelines.video.cache import ClipCache
from pipelines.video.loader import RejectedVideo
from pipelines.video.routes import DecodeStats
from workflow.folds import classical_folds, deep_folds, run_folds
from workflow.profiles import AnalysisSettings


@dataclass
class StageReport:
    """What one stage did: ``message`` (its line in ``run``), the videos it could not decode, and
    ``lines``, what the single-stage command prints (default: the message)."""

    run_dir: Path
    message: str
    rejected: list[RejectedVideo] = field(default_factory=list)
    lines: list[str] | None = None

    def line(self) -> str:
        """The stage line of ``run``: the message and how many videos were rejected."""
        count = len(self.rejected)
        return f"{self.message}, {count} video(s) rejected" if count else self.message

    def text(self) -> str:
        """What a single-stage command prints, ending with the rejected-videos notice if any."""
        notice = rejected_notice(len(self.rejected), self.run_dir)
        lines = [self.message] if self.lines is None else self.lines
        return "\n".join([*lines, notice] if notice else lines)


def prepare(
    data_root: str | os.PathLike[str],
    run_dir: str | os.PathLike[str],
    *,
    classes: Sequence[str] | None = None,
    split: str = "group",
    val: float = 0.15,
    test: float = 0.2,
    seed: int = 0,
    folds: int | None = None,
    progress: bool = True,
) -> StageReport:
    remove_stale_temporaries(run_dir)
    summary = prepare_run(
        data_root, run_dir, classes=classes, split=split, val=val, test=test, seed=seed, folds=folds, progress=progress
    )
    lines = [
        *([] if summary.up_to_date else [summary.table()]),
        *summary.duplicate_lines(),
        *summary.missing_lines(),
        *summary.non_square_lines(),
        *summary.split_changed_lines(),
    ]
    lines.append(f"{summary} -> {summary.videos_csv}")
    return StageReport(Path(run_dir), str(summary), lines=lines)


def features(
    run_dir: str | os.PathLike[str],
    backend: Backend,
    spec: FeatureSpec,
    *,
    force: bool = False,
    progress: bool = True,
) -> StageReport:
    """Under torchrun every rank runs this (one GPU each, see core.distributed) and shares the videos."""
    remove_stale_temporaries(run_dir)
    rejected: list[RejectedVideo] = []
    stats = DecodeStats()
    context = dist_utils.init_distributed(backend.torch_device())
    try:
        found = extract_features(
            run_dir, backend, progress=progress, force=force, spec=spec, rejected=rejected, decode_stats=stats,
            context=context,
        )  # fmt: skip
    finally:
        dist_utils.shutdown(context)
    processes = f", {context.world_size} processes" if context.enabled else ""
    message = f"{len(found)} videos x {found.X.shape[1]} features ({backend.features.name}{processes})"
    written = f"{found.summary()} -> {RunPaths(run_dir).features_npz} ({backend.features.name}{processes})"
    routes = stats.summary() if stats.routes else "decode routes: none (features.npz was up to date)"
    return StageReport(Path(run_dir), message, rejected, lines=[written, routes])


def classical(
    run_dir: str | os.PathLike[str],
    backend: Backend,
    config: ClassicalConfig,
    feature_spec: FeatureSpec,
    *,
    models: Sequence[str] | None = None,
    learning_curve: bool = True,
    force: bool = False,
    progress: bool = True,
) -> StageReport:
    """``feature_spec``: the settings to recompute features.npz with when it cannot be read (a stale
    file is recomputed with the settings stored in it). With K > 1 outer folds in videos.csv, every
    fold's models are trained in its sub-run and the results pooled (:mod:`workflow.folds`)."""
    rejected: list[RejectedVideo] = []
    remove_stale_temporaries(run_dir)
    folds = run_folds(run_dir)
    train = classical_folds if folds > 1 else run_classical
    results = train(
        run_dir,
        backend,
        models=list(models) if models else None,
        learning_curve=learning_curve,
        force=force,
        config=config,
        progress=progress,
        feature_spec=feature_spec,
        rejected=rejected,
    )
    lines = [
        f"{r.model:<7} {r.backend:<12} macro-F1 {r.metrics.macro_f1:.3f}  fit {r.cost.fit_seconds:.2f}s  "
        f"search {r.cost.search_seconds or 0:.1f}s  -> results/{r.model}.json"
        for r in results
    ]
    if folds > 1:
        lines.append(f"{folds} outer folds: every video tested once (macro-F1 pooled); fit and search time per fold")
    message = ", ".join(f"{r.model} F1 {r.metrics.macro_f1:.2f}" for r in results)
    return StageReport(Path(run_dir), message, rejected, lines=lines)


def cache_notice(run_dir: str | os.PathLike[str], decode: dict[str, Any] | None = None) -> str | None:
    """The line about the decoded-clip cache: its size on disk and, from a result's
    ``config["decode"]`` (see :func:`models.deep.train.run_deep`), its hit rate and limit (None
    when the cache is empty)."""
    cache_dir = RunPaths(run_dir).cache_dir
    size = ClipCache(cache_dir).cache_size_bytes()
    if size <= 0:
        return None
    decode = decode or {}
    usage = ""
    if decode.get("cache_hit_rate") is not None:
        looked_up = decode.get("cache_hits", 0) + decode.get("cache_misses", 0)
        usage = f", hit rate {100 * decode['cache_hit_rate']:.0f}% of {looked_up:.0f} video reads"
    if decode.get("cache_max_bytes"):
        usage += (
            f", limit {decode['cache_max_bytes'] / 1e9:.3g} GB ({decode.get('cache_evictions', 0)} evicted, "
            f"{decode.get('cache_not_stored', 0)} not stored)"
        )
    return (
        f"decoded-clip cache: {size / 2**20:.1f} MiB in {cache_dir}{usage} (safe to delete; rebuilt on the next pass)"
    )


def deep(
    run_dir: str | os.PathLike[str],
    backend: Backend,
    config: DeepConfig,
    *,
    learning_curve: bool = True,
    force: bool = False,
    resume: str = "no",
    progress: bool = True,
) -> StageReport:
    """``resume``: "no", "yes" or "auto" (:data:`models.deep.checkpoint.RESUME_MODES`)."""
    remove_stale_temporaries(run_dir)
    rejected: list[RejectedVideo] = []
    folds = run_folds(run_dir)
    train = deep_folds if folds > 1 else run_deep
    result = train(
        run_dir,
        backend,
        config,
        learning_curve=learning_curve,
        force=force,
        resume=resume,
        progress=progress,
        rejected=rejected,
    )
    per_fold = f" per fold, F1 pooled over {folds} outer folds" if folds > 1 else ""
    message = (
        f"{config.model}: F1 {result.metrics.macro_f1:.2f}, trained {result.cost.fit_seconds:.0f} s{per_fold} "
        f"({config.epochs} epochs, {config.frames}x{config.size}px, weights {config.weights})"
    )
    notice = cache_notice(run_dir, result.config.get("decode")) if uses_clip_cache(config, backend) else None
    pooled = f" ({folds} outer folds: every video tested once; time per fold)" if folds > 1 else ""
    summary = summarize(result) + pooled
    return StageReport(Path(run_dir), message, rejected, lines=[summary, *([notice] if notice else [])])


STALE_NOTE = "STALE.txt"
PREVIOUS_INDEX = "index.stale.html"


def check_is_run(run_dir: str | os.PathLike[str]) -> None:
    """FileNotFoundError when ``run_dir`` holds neither run.json (from `prepare`) nor results/."""
    paths = RunPaths(run_dir)
    if not (paths.run_json.is_file() or paths.results_dir.is_dir()):
        raise FileNotFoundError(
            f"{run_dir} is not a run folder (no run.json, no results/): pass the folder given to `prepare --run` "
            f"or `run --run`, e.g. runs/demo, not the dataset"
        )


def _set_previous_report_aside(report_dir: Path, run_dir: str | os.PathLike[str]) -> None:
    """Before a new analysis: the old index.html becomes index.stale.html beside a STALE.txt that
    says why, so a failed or killed analysis never leaves the old report looking current."""
    index = report_dir / "index.html"
    if not index.exists():
        return
    started = datetime.now(UTC).isoformat(timespec="seconds")
    atomic_write_text(
        report_dir / STALE_NOTE,
        f"`analyze` started at {started} and has not finished (it failed or was interrupted): the files here are "
        f"from an earlier analysis and may not match the current results ({PREVIOUS_INDEX} is the earlier "
        f"report). Rerun `python cli.py analyze --run {run_dir}`.\n",
    )
    os.replace(index, report_dir / PREVIOUS_INDEX)


def analyze(
    run_dir: str | os.PathLike[str],
    backend: Backend,
    settings: AnalysisSettings,
    *,
    interpret: bool = True,
    progress: bool = True,
    command: str | None = None,
) -> StageReport:
    check_is_run(run_dir)
    remove_stale_temporaries(run_dir)
    report_dir = RunPaths(run_dir).report_dir
    existed = report_dir.exists()
    _set_previous_report_aside(report_dir, run_dir)
    try:
        index = analyze_run(
            run_dir,
            progress=progress,
            backend=backend,
            n_resamples=settings.n_resamples,
            interpret=interpret,
            gradcam_per_class=settings.gradcam_per_class,
            occlusion_per_class=settings.occlusion_per_class,
            embeddings=settings.embeddings,
            command=command,
        )
    except BaseException:
        if not existed and report_dir.is_dir() and not any(report_dir.iterdir()):
            report_dir.rmdir()  # nothing was written: leave no empty report/ behind
        raise
    for leftover in (report_dir / STALE_NOTE, report_dir / PREVIOUS_INDEX):
        leftover.unlink(missing_ok=True)
    summary = (index.parent / "summary.txt").read_text().rstrip("\n")
    return StageReport(Path(run_dir), f"report in {index.parent}", lines=[summary, f"report: {index}"])
