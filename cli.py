"""actionbench command line: thin click commands, each calling one library function.

Run ``python cli.py --help`` for the commands and ``python cli.py COMMAND --help`` for examples.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from pipelines.backend import DEVICE_CHOICES, DEVICE_ENV_VAR


class Context:
    """What every command may need: the requested device. The backend is resolved lazily, once."""

    def __init__(self, device: str) -> None:
        self.device = device
        self._backend = None

    @property
    def backend(self):  # type: ignore[no-untyped-def]
        if self._backend is None:
            from pipelines.backend import resolve_backend

            try:
                self._backend = resolve_backend(self.device)
            except (ValueError, RuntimeError) as exc:
                raise click.UsageError(str(exc)) from exc
        return self._backend


pass_context = click.make_pass_decorator(Context)


def csv_list(value: str | None) -> list[str] | None:
    if value is None:
        return None
    items = [item.strip() for item in value.split(",") if item.strip()]
    return items or None


class _Main(click.Group):
    """The command group; a full disk ends any command with one clear line instead of a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        from pipelines.runfiles import DiskFullError

        try:
            return super().invoke(ctx)
        except DiskFullError as exc:
            raise click.ClickException(exc.strerror or str(exc)) from exc


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--device",
    type=click.Choice(DEVICE_CHOICES),
    default=None,
    envvar=DEVICE_ENV_VAR,
    show_envvar=True,
    help="Where to run: auto (GPU where usable), cpu, or gpu (fail if none). Default: auto.",
)
@click.pass_context
def main(ctx: click.Context, device: str | None) -> None:
    """Compare classical and deep video action classifiers on identical, leak-free splits.

    \b
    Quick start:
      python cli.py run                 # demo dataset, every model, HTML report
      python cli.py doctor              # what runs where, and why
    """
    ctx.obj = Context(device or "auto")


@main.command()
@pass_context
def doctor(context: Context) -> None:
    """Print library versions, GPU usability and the backend of every stage.

    \b
    Examples:
      python cli.py doctor
      python cli.py --device cpu doctor
    """
    from pipelines.backend import library_versions

    backend = context.backend
    click.echo("Libraries:")
    for name, version in library_versions().items():
        click.echo(f"  {name:<13} {version or 'not installed'}")
    click.echo(f"\nRequested device: {backend.requested}")
    usable = f"yes, {backend.gpu_name}" if backend.cuda.usable else "no"
    click.echo(f"CUDA GPU usable:  {usable} ({backend.cuda.reason})")
    click.echo("\nStages:")
    for stage, choice in backend.stages().items():
        click.echo(f"  {stage:<10} {choice.name:<13} [{choice.device}] {choice.reason}")


def _model_list(value: str | None) -> list[str] | None:
    from models.classical import MODEL_NAMES

    names = csv_list(value)
    unknown = [name for name in names or [] if name not in MODEL_NAMES]
    if unknown:
        choices = ",".join(MODEL_NAMES)
        raise click.BadParameter(f"unknown model(s) {', '.join(unknown)}; choose from {choices}", param_hint="--models")
    return names


def _echo_rejected(count: int, run_dir: Path) -> None:
    from pipelines.runfiles import rejected_notice

    notice = rejected_notice(count, run_dir)
    if notice:
        click.echo(notice)


def cache_notice(run_dir: Path) -> str | None:
    """The end-of-command line about the decoded-clip cache's size on disk (None when empty)."""
    from pipelines.clip_cache import ClipCache
    from pipelines.runfiles import RunPaths

    cache_dir = RunPaths(run_dir).cache_dir
    size = ClipCache(cache_dir).cache_size_bytes()
    if size <= 0:
        return None
    return f"decoded-clip cache: {size / 2**20:.1f} MiB in {cache_dir} (safe to delete; rebuilt on the next pass)"


_RUN_WITH_FEATURES = click.Path(file_okay=False, path_type=Path)


@main.command()
@click.option("--run", "run_dir", required=True, type=_RUN_WITH_FEATURES, help="Run directory with features.npz.")
@click.option("--models", default=None, help="Comma-separated subset of svm,rf,knn,logreg,gb. Default: all five.")
@click.option("--learning-curve", is_flag=True, help="Also retrain on 10..100% of the train groups (3 seeds).")
@click.option("--force", is_flag=True, help="Redo models whose results already exist.")
@pass_context
def classical(context: Context, run_dir: Path, models: str | None, learning_curve: bool, force: bool) -> None:
    """Tune, fit and evaluate the classical models; write results/<model>.json.

    \b
    Examples:
      python cli.py classical --run runs/demo
      python cli.py classical --run runs/demo --models svm,gb --learning-curve
      python cli.py --device cpu classical --run runs/demo --force
    """
    from models.train_classical import run_classical

    names = _model_list(models)
    try:
        results = run_classical(
            run_dir, context.backend, models=names, learning_curve=learning_curve, force=force
        )
    except (ValueError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from exc
    for result in results:
        click.echo(
            f"{result.model:<7} {result.backend:<12} macro-F1 {result.metrics.macro_f1:.3f}  "
            f"fit {result.cost.fit_seconds:.2f}s  search {result.cost.search_seconds or 0:.1f}s  "
            f"-> results/{result.model}.json"
        )


@main.group()
def bench() -> None:
    """Benchmarks that write JSON."""


@bench.command("classical")
@click.option("--run", "run_dir", required=True, type=_RUN_WITH_FEATURES, help="Run directory with features.npz.")
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="JSON path. Default: RUN_DIR/bench/classical.json.",
)
@click.option("--models", default=None, help="Comma-separated subset of svm,rf,knn,logreg,gb. Default: all five.")
@pass_context
def bench_classical_command(context: Context, run_dir: Path, out: Path | None, models: str | None) -> None:
    """Fit time and macro-F1: our classical models vs the notebook study's scikit-learn setup.

    \b
    Examples:
      python cli.py bench classical --run runs/demo
      python cli.py bench classical --run runs/demo --out bench_classical.json
    """
    from models.bench_classical import bench_classical

    names = _model_list(models)
    try:
        report = bench_classical(run_dir, context.backend, out=out, models=names)
    except (ValueError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(
        f"fit all {len(report['models'])}: ours {report['ours_fit_seconds_total']:.2f}s vs notebook "
        f"{report['notebook_fit_seconds_total']:.2f}s ({report['speedup']:.1f}x); mean macro-F1 "
        f"{report['ours_mean_macro_f1']:.3f} vs {report['notebook_mean_macro_f1']:.3f}"
    )
    if report.get("gpu_speedup_over_cpu"):
        click.echo(
            f"GPU vs CPU libraries ({','.join(report['ours_cpu_models'])}): "
            f"{report['ours_gpu_fit_seconds_total']:.2f}s vs {report['ours_cpu_fit_seconds_total']:.2f}s "
            f"({report['gpu_speedup_over_cpu']:.1f}x); mean macro-F1 "
            f"{report['ours_gpu_mean_macro_f1']:.3f} vs {report['ours_cpu_mean_macro_f1']:.3f}"
        )
    click.echo(f"wrote {out or Path(run_dir) / 'bench' / 'classical.json'}")


@main.command()
@click.option(
    "--run", "--run-dir", "run_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
    help="Run directory (from `prepare`). Under torchrun write --run-dir (torchrun takes --run for its --run-path).",
)
@click.option("--model", "model_name", required=True, type=click.Choice(["cnn2d", "cnn3d"]), help="Which deep model.")
@click.option(
    "--profile", type=click.Choice(["tiny", "cpu", "gpu"]), default=None,
    help="Settings preset. Default: gpu on CUDA, cpu otherwise.",
)
@click.option("--epochs", type=click.IntRange(1), default=None)
@click.option("--batch-size", type=click.IntRange(1), default=None)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None)
@click.option("--optimizer", type=click.Choice(["adamw", "sgd"]), default=None)
@click.option(
    "--weights", default=None,
    help="IMAGENET1K_V1 (cnn2d) / KINETICS400_V1 (cnn3d) from the torch hub cache, none, or a state_dict file.",
)
@click.option(
    "--freeze", type=click.Choice(["none", "stem", "all-but-head"]), default=None,
    help="cnn3d: layers kept frozen (default none: fine-tune).",
)
@click.option("--pooling", type=click.Choice(["avg", "max", "attention"]), default=None, help="cnn2d: time pooling.")
@click.option("--frames", type=click.IntRange(1), default=None)
@click.option("--size", type=click.IntRange(8), default=None, help="Crop size in pixels.")
@click.option("--amp/--no-amp", default=None, help="Mixed precision (bf16, else fp16 + scaler). Default: on with CUDA.")
@click.option("--channels-last/--no-channels-last", default=None, help="channels_last(_3d). Default: on with CUDA.")
@click.option("--compile", "compile_", is_flag=True, default=None, help="torch.compile the model.")
@click.option("--test-clips", type=click.IntRange(1), default=None, help="K in the 'K clips x 1 crop' test protocol.")
@click.option("--grad-accum", type=click.IntRange(1), default=None, help="Micro-batches per step.")
@click.option(
    "--label-smoothing", type=click.FloatRange(0, 1, max_open=True), default=None,
    help="Cross-entropy label smoothing in [0, 1). Default: 0.1.",
)
@click.option(
    "--cache", "cache", type=click.Choice(["on", "off"]), default=None,
    help="Decoded-clip cache under RUN_DIR/cache (default on); off decodes every epoch from the source.",
)
@click.option("--patience", type=click.IntRange(1), default=None, help="Early stopping: epochs without a better F1.")
@click.option("--seed", type=int, default=None)
@click.option("--learning-curve", is_flag=True, help="Also RETRAIN on fractions of the training groups.")
@click.option("--resume", is_flag=True, help="Continue from RUN_DIR/checkpoints/MODEL/last.pt.")
@click.option("--force", is_flag=True, help="Retrain even if RUN_DIR/results/MODEL.json exists.")
@click.option("--deterministic", is_flag=True, default=None, help="torch.use_deterministic_algorithms(True).")
@pass_context
def deep(
    context: Context,
    run_dir: Path,
    model_name: str,
    profile: str | None,
    learning_curve: bool,
    resume: bool,
    force: bool,
    compile_: bool | None,
    cache: str | None,
    **options: object,
) -> None:
    """Train, test and measure a deep model (ResNet-18 per frame or R3D-18).

    Writes RUN_DIR/results/MODEL.json, models/MODEL.pt, embeddings/MODEL.npz and checkpoints/MODEL/.
    Multi-GPU: launch with torchrun; only rank 0 writes.

    \b
    Examples:
      python cli.py deep --run runs/demo --model cnn3d
      python cli.py deep --run runs/demo --model cnn2d --profile cpu --weights none --learning-curve
      python cli.py deep --run runs/demo --model cnn3d --resume
      torchrun --nproc_per_node 2 cli.py deep --run-dir runs/ucf --model cnn3d --profile gpu
    """
    import os

    from models.deep_config import DeepConfig
    from models.train_deep import run_deep, summarize

    backend = context.backend
    profile = profile or ("gpu" if backend.on_gpu else "cpu")
    try:
        use_cache = None if cache is None else cache == "on"
        config = DeepConfig.for_profile(model_name, profile, compile=compile_, cache=use_cache, **options)
        rejected: list[object] = []
        result = run_deep(
            run_dir, backend, config, learning_curve=learning_curve, force=force, resume=resume, rejected=rejected
        )
    except (ValueError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from exc
    if int(os.environ.get("RANK", "0")) == 0:
        click.echo(summarize(result))
        _echo_rejected(len(rejected), run_dir)
        if config.cache and (notice := cache_notice(run_dir)):
            click.echo(notice)


@bench.command("deep")
@click.option("--model", "model_name", required=True, type=click.Choice(["cnn2d", "cnn3d"]))
@click.option(
    "--run", "run_dir", default=None, type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="Also measure with the real loader on this run's videos.",
)
@click.option(
    "--out", default=None, type=click.Path(dir_okay=False, path_type=Path),
    help="JSON output. Default: RUN_DIR/bench/deep_MODEL.json with --run, else stdout only.",
)
@click.option(
    "--profile", type=click.Choice(["tiny", "cpu", "gpu"]), default=None, help="Default: gpu on CUDA, cpu otherwise."
)
@click.option("--batch-size", type=click.IntRange(1), default=None)
@click.option("--frames", type=click.IntRange(1), default=None)
@click.option("--size", type=click.IntRange(8), default=None)
@click.option("--amp/--no-amp", default=None)
@click.option("--channels-last/--no-channels-last", default=None)
@click.option("--steps", type=click.IntRange(1), default=10, show_default=True, help="Timed steps after warm-up.")
@pass_context
def bench_deep_command(
    context: Context, model_name: str, run_dir: Path | None, out: Path | None, steps: int, **options: object
) -> None:
    """Training and inference clips/s of a deep model: synthetic input, and with the real loader.

    \b
    Examples:
      python cli.py bench deep --model cnn3d
      python cli.py bench deep --model cnn2d --run runs/demo --profile tiny
    """
    from models.bench_deep import bench_deep, summarize
    from pipelines.runfiles import to_json

    try:
        report = bench_deep(model_name, context.backend, run_dir=run_dir, out=out, steps=steps, **options)
    except (ValueError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(summarize(report))
    if out is None and run_dir is None:
        click.echo(to_json(report), nl=False)


@bench.command("loader")
@click.argument("data_root", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--frames", type=click.IntRange(1), default=16, show_default=True, help="Frames per clip.")
@click.option("--size", type=click.IntRange(8), default=112, show_default=True,
              help="Crop size: 112 = R3D-18 clips (BCTHW, Kinetics mean/std), else ResNet-18 clips (BTCHW, ImageNet).")
@click.option("--mode", type=click.Choice(["train", "eval"]), default="eval", show_default=True)
@click.option("--cache", type=click.Choice(["on", "off"]), default="on", show_default=True,
              help="Also time the decoded-clip cache (cold = first pass writing it, warm = reading it).")
@click.option("--clips", type=click.IntRange(1), default=None, help="Use N videos, evenly spread (default: all).")
@click.option("--batch-size", type=click.IntRange(1), default=8, show_default=True)
@click.option("--threads", type=click.IntRange(1), default=2, show_default=True, help="Decode and DALI threads.")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="JSON file or folder. Default: ./bench/loader.json.")
@pass_context
def bench_loader_command(context: Context, data_root: Path, frames: int, size: int, mode: str, cache: str,
                         clips: int | None, batch_size: int, threads: int, out: Path | None) -> None:
    """Clips/s of the project loader (cache off, cold, warm) vs a notebook-style OpenCV+PIL loader.

    \b
    Examples:
      python cli.py bench loader data/demo
      python cli.py bench loader data/demo --mode train --size 224 --frames 8 --clips 48
      python cli.py --device cpu bench loader data/demo --cache off --out bench/
    """
    from pipelines.bench_loader import bench_loader

    try:
        result = bench_loader(data_root, context.backend, frames=frames, size=size, mode=mode, cache=cache == "on",
                              clips=clips, batch_size=batch_size, num_threads=threads, out=out)
    except (ValueError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(result.table())


def _parse_size(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, int]:
    try:
        width, height = (int(part) for part in value.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not WIDTHxHEIGHT, e.g. 160x120") from None
    return width, height


def _parse_seconds(ctx: click.Context, param: click.Parameter, value: str) -> tuple[float, float]:
    try:
        parts = [float(part) for part in value.split("-")]
    except ValueError:
        raise click.BadParameter(f"{value!r} is not SECONDS or MIN-MAX, e.g. 2-4") from None
    if len(parts) not in (1, 2):
        raise click.BadParameter(f"{value!r} is not SECONDS or MIN-MAX, e.g. 2-4")
    return parts[0], parts[-1]


@main.command("demo-data")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--classes", default="PullUps,Punch,PushUps", show_default=True, help="Comma-separated demo classes.")
@click.option("--groups", type=click.IntRange(1, 99), default=25, show_default=True,
              help="Groups (actor + scene) per class.")
@click.option("--clips-per-group", type=click.IntRange(1, 99), default=4, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same frames.")
@click.option("--codec", type=click.Choice(["vp9", "mjpeg", "mpeg4", "h264"]), default="vp9", show_default=True,
              help="vp9 (.webm, DALI decodes it on the CPU), mjpeg/mpeg4 (.avi), h264 (.mp4).")
@click.option("--size", default="160x120", show_default=True, callback=_parse_size,
              help="Frame size WIDTHxHEIGHT (even).")
@click.option("--fps", type=click.FloatRange(min=1, max=240), default=25, show_default=True)
@click.option("--seconds", default="2-4", show_default=True, callback=_parse_seconds,
              help="Clip length, MIN-MAX seconds.")
@click.option("--difficulty", type=click.Choice(["easy", "normal", "hard"]), default="normal", show_default=True,
              help="How strongly shake, noise, occluders and ambiguous clips disturb the actions.")
def demo_data(out: Path, classes: str, groups: int, clips_per_group: int, seed: int, codec: str,
              size: tuple[int, int], fps: float, seconds: tuple[float, float], difficulty: str) -> None:
    """Render the demo dataset into OUT in UCF101 layout (OUT/Class/v_Class_gGG_cCC.webm).

    Each group shares an actor and a scene; clips vary position, scale, speed, mirror, shake,
    noise and occluders. Clips already in OUT are kept, so an interrupted run resumes.

    \b
    Examples:
      python cli.py demo-data data/demo
      python cli.py demo-data data/demo-small --groups 6 --clips-per-group 2 --size 96x72
      python cli.py demo-data data/demo-avi --codec mjpeg --difficulty hard --seed 1
    """
    from pipelines.demo import DemoConfig, generate_demo_dataset

    try:
        config = DemoConfig(
            classes=tuple(csv_list(classes) or ()), groups=groups, clips_per_group=clips_per_group, seed=seed,
            codec=codec, size=size, fps=fps, seconds=seconds, difficulty=difficulty,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    try:
        paths = generate_demo_dataset(out, config)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{len(paths)} clips ({len(config.classes)} classes x {groups} groups x {clips_per_group}) in {out}")


@main.command("features")
@click.option("--run", "run_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Run directory with videos.csv (from `prepare`).")
@click.option("--force", is_flag=True, help="Recompute even when features.npz is up to date.")
@pass_context
def features_command(context: Context, run_dir: Path, force: bool) -> None:
    """Compute handcrafted motion/appearance/colour/temporal features into RUN_DIR/features.npz.

    Rerunning with the same videos.csv and settings is a no-op; undecodable videos are listed
    in RUN_DIR/rejected.csv and left out.

    \b
    Examples:
      python cli.py features --run runs/demo
      python cli.py --device cpu features --run runs/demo --force
    """
    from pipelines.feature_store import extract_features

    rejected: list[object] = []
    try:
        features = extract_features(run_dir, context.backend, force=force, rejected=rejected)
    except (ValueError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{features.summary()} -> {Path(run_dir) / 'features.npz'}")
    _echo_rejected(len(rejected), run_dir)


@bench.command("features")
@click.argument("data_root", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--videos", type=click.IntRange(1), default=None, help="Use N videos, evenly spread (default: all).")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="JSON file or folder. Default: ./bench/features.json.")
@pass_context
def bench_features_command(context: Context, data_root: Path, videos: int | None, out: Path | None) -> None:
    """Videos/s of decoding alone and of decoding + feature kernel, the kernel's share (and NumPy
    vs CuPy on a GPU).

    \b
    Examples:
      python cli.py bench features data/demo
      python cli.py --device cpu bench features data/demo --videos 48 --out bench/
    """
    from pipelines.bench_features import bench_features

    try:
        result = bench_features(data_root, context.backend, videos=videos, out=out)
    except (ValueError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(result.table())


@main.command()
@click.option("--run", "run_dir", required=True, type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="Run directory with results/*.json.")
@click.option("--resamples", type=click.IntRange(100), default=2000, show_default=True,
              help="Bootstrap resamples of the test videos.")
@click.option("--no-interpret", is_flag=True, help="Skip permutation importance, Grad-CAM and occlusion.")
@pass_context
def analyze(context: Context, run_dir: Path, resamples: int, no_interpret: bool) -> None:
    """Write RUN_DIR/report/ (index.html, figures, CSV/Markdown tables) from the result files.

    Reads only results/*.json, features.npz, embeddings/ and the saved models, so results made on
    other machines can be analysed here.

    \b
    Examples:
      python cli.py analyze --run runs/demo
      python cli.py --device cpu analyze --run runs/ucf --no-interpret
    """
    from analysis.report import analyze_run

    try:
        index = analyze_run(run_dir, backend=context.backend, n_resamples=resamples, interpret=not no_interpret)
    except (ValueError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo((index.parent / "summary.txt").read_text(), nl=False)
    click.echo(f"report: {index}")


def _default_run_dir(data_root: Path | None) -> Path:
    return Path("runs") / ("demo" if data_root is None else "latest")


@main.command("run")
@click.argument("data_root", required=False, type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--run", "run_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Run directory. Default: runs/demo without DATA_ROOT, runs/latest with it.")
@click.option("--profile", type=click.Choice(["tiny", "cpu", "gpu"]), default=None,
              help="Settings preset. Default: gpu on a usable CUDA GPU, cpu otherwise.")
@click.option("--skip-deep", is_flag=True, help="Only the classical models.")
@click.option("--classes", default=None, help="Comma-separated class names to use (default: all).")
@pass_context
def run_command(context: Context, data_root: Path | None, run_dir: Path | None, profile: str | None, skip_deep: bool,
                classes: str | None) -> None:
    """The whole comparison: (demo data), prepare, features, classical, deep, report.

    Without DATA_ROOT the demo dataset is generated into RUN_DIR/demo_data. Every stage resumes:
    rerun the same command after an interruption and finished work is kept.

    \b
    Examples:
      python cli.py run                                  # demo dataset, runs/demo
      python cli.py run --profile tiny --run runs/tiny   # a smoke test in seconds
      python cli.py run data/UCF101 --run runs/ucf --classes PullUps,Punch,PushUps
      python cli.py --device cpu run --skip-deep
    """
    from pipelines.workflow import run_comparison

    try:
        run_comparison(data_root, run_dir or _default_run_dir(data_root), profile=profile, backend=context.backend,
                       skip_deep=skip_deep, classes=csv_list(classes))
    except (ValueError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from exc
    except KeyboardInterrupt:
        click.echo("\ninterrupted: finished stages are kept; rerun the same command to continue.", err=True)
        sys.exit(130)


def _parse_split(ctx: click.Context, param: click.Parameter, value: str) -> str:
    from pipelines.splits import parse_split_spec

    try:
        return str(parse_split_spec(value))
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@main.command()
@click.argument("data_root", type=click.Path(path_type=Path))
@click.option("--run", "run_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Run directory to write videos.csv, rejected.csv and run.json into.")
@click.option("--classes", default=None, help="Comma-separated class folders to use. Default: all.")
@click.option("--split", default="group", show_default=True, callback=_parse_split,
              help="group: stratified train/val/test by group; official:N: UCF101 trainlistNN/testlistNN.txt.")
@click.option("--val", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.15, show_default=True,
              help="Validation fraction of each class's groups (official:N: of its train groups).")
@click.option("--test", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.2, show_default=True,
              help="Test fraction of each class's groups (--split group only).")
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same split.")
@click.pass_context
def prepare(ctx: click.Context, data_root: Path, run_dir: Path, classes: str | None, split: str, val: float,
            test: float, seed: int) -> None:
    """Index DATA_ROOT (ROOT/ClassName/*.avi|mp4|webm|mkv), check every video, split by group.

    Whole UCF101 groups (v_Class_gGG_cCC) go to one split; every class is in every split.
    Unusable videos are listed with the reason in RUN_DIR/rejected.csv. A rerun with the same
    inputs does nothing.

    \b
    Examples:
      python cli.py prepare data/demo --run runs/demo
      python cli.py prepare data/UCF-101 --run runs/ucf5 --classes Punch,PullUps,PushUps,Bowling,Diving
      python cli.py prepare data/UCF-101 --run runs/ucf-official1 --split official:1 --val 0.1
    """
    from pipelines.prepare import prepare_run

    if split.startswith("official") and ctx.get_parameter_source("test") == click.core.ParameterSource.COMMANDLINE:
        raise click.BadParameter("--test applies to --split group only; official:N takes the test list",
                                 param_hint="--test")
    if val + test >= 1 and split == "group":
        raise click.BadParameter(f"--val {val} + --test {test} leave no training data; keep their sum below 1",
                                 param_hint="--val/--test")
    try:
        summary = prepare_run(data_root, run_dir, classes=csv_list(classes), split=split, val=val, test=test, seed=seed)
    except (ValueError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from exc
    if not summary.up_to_date:
        click.echo(summary.table())
    click.echo(f"{summary} -> {summary.videos_csv}")


if __name__ == "__main__":
    sys.exit(main())
