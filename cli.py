"""actionbench command line: thin click commands, each calling one library function.

Run ``python cli.py --help`` for the commands and ``python cli.py COMMAND --help`` for examples.
Known errors become one line in one place (:class:`_Main`); library modules are imported inside the
commands so that ``--help`` answers without loading PyTorch or DALI.
"""

from __future__ import annotations

import errno
import os
import shlex
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import click

from core.backend import DEVICE_CHOICES, DEVICE_ENV_VAR, Backend
from workflow.profiles import PROFILE_NAMES, profiles_help

DEEP_MODELS = ("cnn2d", "cnn3d")
CLASSICAL_MODELS = ("svm", "rf", "knn", "logreg", "gb")
INTERRUPTED = "interrupted: finished work is kept; rerun the same command to continue (`deep`: add --resume)."


def _version() -> str:
    try:
        return version("actionbench")
    except PackageNotFoundError:
        return "unknown (not installed; run make install)"


class Context:
    """What every command may need: the requested device, whether to show progress, and the command
    line (recorded in reports). The backend is resolved lazily, once."""

    def __init__(self, device: str, progress: bool = True, command: str | None = None) -> None:
        self.device = device
        self.progress = progress
        self.command = command
        self._backend: Backend | None = None

    @property
    def backend(self) -> Backend:
        if self._backend is None:
            from core.backend import resolve_backend

            try:
                self._backend = resolve_backend(self.device)
            except (ValueError, RuntimeError) as exc:
                raise click.UsageError(str(exc)) from exc
        return self._backend


pass_context = click.make_pass_decorator(Context)


def one_line(exc: BaseException) -> str:
    """A known error as the one line the user reads: its message, naming the file where there is one."""
    if isinstance(exc, OSError) and exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM) and exc.filename:
        path = str(exc.filename)
        if exc.errno != errno.EROFS and os.path.exists(path) and not os.access(path, os.R_OK):
            return f"cannot read {path}: {exc.strerror}; fix its permissions"
        return f"cannot write {path}: {exc.strerror}; choose a writable --run folder or fix its permissions"
    if isinstance(exc, OSError) and exc.filename and str(exc.filename) not in str(exc):
        return f"{exc.filename}: {exc.strerror or exc}"
    return str(exc) or type(exc).__name__


class _Main(click.Group):
    """The command group; the one place where known errors become a one-line message.

    ValueError (bad settings or data, with the fix in the message), OSError (missing, unreadable or
    unwritable files, a full disk) end the command with ``Error: <one line>`` and exit status 1;
    Ctrl-C ends it with exit status 130 and a line saying that finished work is kept.
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            click.echo(f"\n{INTERRUPTED}", err=True)
            sys.exit(130)
        except (ValueError, OSError) as exc:
            raise click.ClickException(one_line(exc)) from exc


def csv_list(value: str | None) -> list[str] | None:
    if value is None:
        return None
    items = [item.strip() for item in value.split(",") if item.strip()]
    return items or None


def _model_list(ctx: click.Context, param: click.Parameter, value: str | None) -> list[str] | None:
    names = csv_list(value)
    unknown = [name for name in names or [] if name not in CLASSICAL_MODELS]
    if unknown:
        raise click.BadParameter(f"unknown model(s) {', '.join(unknown)}; choose from {','.join(CLASSICAL_MODELS)}")
    return names


def _profile(context: Context, name: str | None):  # type: ignore[no-untyped-def]
    from workflow.profiles import get_profile

    return get_profile(name, context.backend)


profile_option = click.option(
    "--profile", type=click.Choice(PROFILE_NAMES), default=None, help="Settings preset; see Profiles below."
)
PROFILES_EPILOG = profiles_help()
run_option = click.option(
    "--run",
    "--run-dir",
    "run_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Run directory (from `prepare`). Under torchrun write --run-dir (torchrun takes --run for its --run-path).",
)


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option(
    "--device",
    type=click.Choice(DEVICE_CHOICES),
    default=None,
    envvar=DEVICE_ENV_VAR,
    show_envvar=True,
    help="Where to run: auto (GPU where usable), cpu, or gpu (fail if none). Default: auto.",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress: print only results, warnings and errors.")
@click.version_option(_version(), "--version", prog_name="actionbench", message="%(prog)s %(version)s")
@click.pass_context
def main(ctx: click.Context, device: str | None, quiet: bool) -> None:
    """Compare classical and deep video action classifiers on identical, leak-free splits.

    \b
    Quick start:
      python cli.py run                 # demo dataset, every model, HTML report
      python cli.py doctor              # what runs where, and why
    """
    ctx.obj = Context(device or "auto", progress=not quiet, command=shlex.join(["python", *sys.argv]))


@main.command()
@pass_context
def doctor(context: Context) -> None:
    """Print library versions, GPU usability, the backend of every stage, which codecs and frame sizes
    decode on the GPU (each probed with a tiny clip where NVDEC is usable) and whether the CNNs' default
    pretrained weights are in the torch hub cache.

    \b
    Examples:
      python cli.py doctor
      python cli.py --device cpu doctor
    """
    from core.backend import doctor_report, probe_nvdec_codecs
    from workflow.doctor import weights_report

    backend = context.backend
    nvdec = probe_nvdec_codecs(backend.cuda_device or 0) if backend.decode.name == "dali-gpu" else None
    click.echo(doctor_report(backend, nvdec))
    click.echo("")
    click.echo(weights_report())


def _parse_size(value: str) -> tuple[int, int]:
    try:
        width, height = (int(part) for part in value.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not WIDTHxHEIGHT, e.g. 160x120") from None
    return width, height


def _parse_seconds(value: str) -> tuple[float, float]:
    try:
        parts = [float(part) for part in value.split("-")]
    except ValueError:
        raise click.BadParameter(f"{value!r} is not SECONDS or MIN-MAX, e.g. 2-4") from None
    if len(parts) not in (1, 2):
        raise click.BadParameter(f"{value!r} is not SECONDS or MIN-MAX, e.g. 2-4")
    return parts[0], parts[-1]


def _parse_split(ctx: click.Context, param: click.Parameter, value: str) -> str:
    from pipelines.data.splits import parse_split_spec

    try:
        return str(parse_split_spec(value))
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@main.command("demo-data")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--classes", default="PullUps,Punch,PushUps", show_default=True, help="Comma-separated demo classes.")
@click.option(
    "--groups", type=click.IntRange(1, 99), default=25, show_default=True, help="Groups (actor + scene) per class."
)
@click.option("--clips-per-group", type=click.IntRange(1, 99), default=4, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same frames.")
@click.option(
    "--codec",
    type=click.Choice(["vp9", "mjpeg", "mpeg4", "h264"]),
    default="vp9",
    show_default=True,
    help="vp9 (.webm, DALI decodes it on the CPU), mjpeg/mpeg4 (.avi), h264 (.mp4).",
)
@click.option(
    "--size",
    default="160x120",
    show_default=True,
    callback=lambda c, p, v: _parse_size(v),
    help="Frame size WIDTHxHEIGHT (even).",
)
@click.option("--fps", type=click.FloatRange(min=1, max=240), default=25, show_default=True)
@click.option(
    "--seconds",
    default="2-4",
    show_default=True,
    callback=lambda c, p, v: _parse_seconds(v),
    help="Clip length, SECONDS or MIN-MAX seconds.",
)
@click.option(
    "--difficulty",
    type=click.Choice(["easy", "normal", "hard"]),
    default="normal",
    show_default=True,
    help="How strongly shake, noise, occluders and ambiguous clips disturb the actions.",
)
@pass_context
def demo_data(context: Context, out: Path, classes: str, **options: Any) -> None:
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
        config = DemoConfig(classes=tuple(csv_list(classes) or ()), **options)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    paths = generate_demo_dataset(out, config, progress=context.progress)
    click.echo(
        f"{len(paths)} clips ({len(config.classes)} classes x {config.groups} groups x "
        f"{config.clips_per_group}) in {out}"
    )


@main.command()
@click.argument("data_root", type=click.Path(path_type=Path))
@click.option(
    "--run",
    "run_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Run directory to write videos.csv, rejected.csv and run.json into.",
)
@click.option("--classes", default=None, help="Comma-separated class folders to use. Default: all.")
@click.option(
    "--split",
    default="group",
    show_default=True,
    callback=_parse_split,
    help="group: stratified train/val/test by group; official:N: UCF101 trainlistNN/testlistNN.txt; "
    "official:all: the three official test lists as outer folds.",
)
@click.option(
    "--folds",
    type=click.IntRange(1),
    default=None,
    help="K > 1: group K-fold outer cross-validation, every video tested once (each fold's groups are "
    "the test set once; val is carved from the rest). Default 1: one split (official:all: 3).",
)
@click.option(
    "--val",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=0.15,
    show_default=True,
    help="Validation fraction of each class's groups (official:N, --folds: of its train groups).",
)
@click.option(
    "--test",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=None,
    help="Test fraction of each class's groups (--split group with one fold only; default 0.2).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same split.")
@pass_context
def prepare(
    context: Context,
    data_root: Path,
    run_dir: Path,
    classes: str | None,
    split: str,
    folds: int | None,
    val: float,
    test: float | None,
    seed: int,
) -> None:
    """Index DATA_ROOT (ROOT/ClassName/*.avi|mp4|webm|mkv), check every video, split by group.

    Whole UCF101 groups (v_Class_gGG_cCC) go to one split; every class is in every split.
    Unusable videos are listed with the reason in RUN_DIR/rejected.csv. A rerun with the same
    inputs does nothing.

    \b
    Examples:
      python cli.py prepare data/demo --run runs/demo
      python cli.py prepare data/demo --run runs/demo-5fold --folds 5
      python cli.py prepare data/UCF-101 --run runs/ucf5 --classes Punch,PullUps,PushUps,Bowling,Diving
      python cli.py prepare data/UCF-101 --run runs/ucf-official1 --split official:1 --val 0.1
      python cli.py prepare data/UCF-101 --run runs/ucf-official --split official:all
    """
    from workflow import stages

    if split.startswith("official") and test is not None:
        raise click.BadParameter(
            "--test applies to --split group only; official:N takes the test list", param_hint="--test"
        )
    if (folds or 1) > 1 and test is not None:
        raise click.BadParameter(
            f"--test applies to one split only; with --folds {folds} each fold is the test set once",
            param_hint="--test",
        )
    test = 0.2 if test is None else test
    if val + test >= 1 and split == "group" and (folds or 1) == 1:
        raise click.BadParameter(
            f"--val {val} + --test {test} leave no training data; keep their sum below 1", param_hint="--val/--test"
        )
    report = stages.prepare(data_root, run_dir, classes=csv_list(classes), split=split, val=val, test=test, seed=seed,
                            folds=folds, progress=context.progress)  # fmt: skip
    click.echo(report.text())


@main.command("features", epilog=PROFILES_EPILOG)
@run_option
@profile_option
@click.option("--force", is_flag=True, help="Recompute even when features.npz is up to date.")
@pass_context
def features_command(context: Context, run_dir: Path, profile: str | None, force: bool) -> None:
    """Compute handcrafted motion/appearance/colour/temporal features into RUN_DIR/features.npz.

    Rerunning with the same videos.csv and settings is a no-op; undecodable videos are listed
    in RUN_DIR/rejected.csv and left out.

    Under torchrun each process (one GPU each) takes a share of the videos; rank 0 writes the file.

    \b
    Examples:
      python cli.py features --run runs/demo
      python cli.py --device cpu features --run runs/demo --force
      torchrun --nproc_per_node 2 cli.py features --run-dir runs/ucf
    """
    import os

    from workflow import stages

    spec = _profile(context, profile).features
    report = stages.features(run_dir, context.backend, spec, force=force, progress=context.progress)
    if int(os.environ.get("RANK", "0")) == 0:
        click.echo(report.text())


@main.command(epilog=PROFILES_EPILOG)
@run_option
@profile_option
@click.option(
    "--models",
    default=None,
    callback=_model_list,
    help="Comma-separated subset of svm,rf,knn,logreg,gb. Default: all five.",
)
@click.option("--learning-curve", is_flag=True, help="Also retrain on fractions of the train groups (several seeds).")
@click.option("--force", is_flag=True, help="Redo models whose results already exist.")
@pass_context
def classical(
    context: Context, run_dir: Path, profile: str | None, models: list[str] | None, learning_curve: bool, force: bool
) -> None:
    """Tune, fit and evaluate the classical models; write results/<model>.json.

    \b
    Examples:
      python cli.py classical --run runs/demo
      python cli.py classical --run runs/demo --models svm,gb --learning-curve
      python cli.py --device cpu classical --run runs/demo --force
    """
    from workflow import stages

    settings = _profile(context, profile)
    report = stages.classical(run_dir, context.backend, settings.classical, settings.features, models=models,
                              learning_curve=learning_curve, force=force, progress=context.progress)  # fmt: skip
    click.echo(report.text())


@main.command(epilog=PROFILES_EPILOG)
@run_option
@click.option("--model", "model_name", required=True, type=click.Choice(DEEP_MODELS), help="Which deep model.")
@profile_option
@click.option("--epochs", type=click.IntRange(1), default=None)
@click.option("--batch-size", type=click.IntRange(1), default=None)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None)
@click.option("--optimizer", type=click.Choice(["adamw", "sgd"]), default=None)
@click.option(
    "--weights",
    default=None,
    help="IMAGENET1K_V1 (cnn2d) / KINETICS400_V1 (cnn3d) from the torch hub cache, none, or a state_dict file.",
)
@click.option(
    "--freeze",
    type=click.Choice(["none", "stem", "all-but-head"]),
    default=None,
    help="cnn3d: layers kept frozen (default none: fine-tune).",
)
@click.option("--pooling", type=click.Choice(["avg", "max", "attention"]), default=None, help="cnn2d: time pooling.")
@click.option("--frames", type=click.IntRange(1), default=None)
@click.option("--size", type=click.IntRange(8), default=None, help="Crop size in pixels.")
@click.option("--amp/--no-amp", default=None, help="Mixed precision (bf16, else fp16 + scaler). Default: on with CUDA.")
@click.option("--channels-last/--no-channels-last", default=None, help="channels_last(_3d). Default: on with CUDA.")
@click.option("--compile", "compile", is_flag=True, default=None, help="torch.compile the model.")
@click.option("--test-clips", type=click.IntRange(1), default=None, help="K in the 'K clips x 1 crop' test protocol.")
@click.option("--grad-accum", type=click.IntRange(1), default=None, help="Micro-batches per step.")
@click.option(
    "--label-smoothing",
    type=click.FloatRange(0, 1, max_open=True),
    default=None,
    help="Cross-entropy label smoothing in [0, 1). Default: 0.1.",
)
@click.option(
    "--cache",
    type=click.Choice(["on", "off"]),
    default=None,
    help="Decoded-clip cache under RUN_DIR/cache (default: on with CPU decoding, off where NVDEC decodes; "
    "see doctor); off decodes every epoch from the source.",
)
@click.option(
    "--cache-max-gb",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Size limit of the cache in GB: least recently used videos that this run does not use make room; "
    "what does not fit is decoded every time (default: 25% of the disk space free for it).",
)
@click.option("--patience", type=click.IntRange(1), default=None, help="Early stopping: epochs without a better F1.")
@click.option("--seed", type=int, default=None)
@click.option("--deterministic", is_flag=True, default=None, help="torch.use_deterministic_algorithms(True).")
@click.option("--learning-curve", is_flag=True, help="Also RETRAIN on fractions of the training groups.")
@click.option(
    "--resume",
    is_flag=True,
    help="Continue from RUN_DIR/checkpoints/MODEL/last.pt (also one written by `run` with the same profile).",
)
@click.option("--force", is_flag=True, help="Retrain even if RUN_DIR/results/MODEL.json exists.")
@pass_context
def deep(
    context: Context,
    run_dir: Path,
    model_name: str,
    profile: str | None,
    cache: str | None,
    learning_curve: bool,
    resume: bool,
    force: bool,
    **overrides: Any,
) -> None:
    """Train, test and measure a deep model (ResNet-18 per frame or R3D-18).

    Trains what `run --profile P` trains for the same P; options override single settings.
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

    from workflow import stages

    use_cache = None if cache is None else cache == "on"
    config = _profile(context, profile).deep_config(model_name, cache=use_cache, **overrides)
    report = stages.deep(run_dir, context.backend, config, learning_curve=learning_curve, force=force,
                         resume="yes" if resume else "no", progress=context.progress)  # fmt: skip
    if int(os.environ.get("RANK", "0")) == 0:
        click.echo(report.text())


@main.command(epilog=PROFILES_EPILOG)
@click.option(
    "--run",
    "run_dir",
    required=True,
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="Run directory with results/*.json.",
)
@profile_option
@click.option(
    "--resamples",
    type=click.IntRange(100),
    default=None,
    help="Bootstrap resamples (default: the profile's, 2000 on cpu/gpu).",
)
@click.option("--no-interpret", is_flag=True, help="Skip permutation importance, Grad-CAM and occlusion.")
@pass_context
def analyze(context: Context, run_dir: Path, profile: str | None, resamples: int | None, no_interpret: bool) -> None:
    """Write RUN_DIR/report/ (index.html, figures, CSV/Markdown tables) from the result files.

    Reads only results/*.json, features.npz, embeddings/ and the saved models, so results made on
    other machines can be analysed here.

    \b
    Examples:
      python cli.py analyze --run runs/demo
      python cli.py --device cpu analyze --run runs/ucf --no-interpret
    """
    from dataclasses import replace

    from workflow import stages

    settings = _profile(context, profile).analysis
    if resamples is not None:
        settings = replace(settings, n_resamples=resamples)
    report = stages.analyze(
        run_dir,
        context.backend,
        settings,
        interpret=not no_interpret,
        progress=context.progress,
        command=context.command,
    )
    click.echo(report.text())


@main.command("run", epilog=PROFILES_EPILOG)
@click.argument("data_root", required=False, type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option(
    "--run",
    "run_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Run directory. Default: runs/demo without DATA_ROOT, runs/latest with it.",
)
@profile_option
@click.option("--skip-deep", is_flag=True, help="Only the classical models.")
@click.option("--classes", default=None, help="Comma-separated class names to use (default: all).")
@click.option(
    "--seed",
    type=int,
    default=None,
    help="Seed of the train/val/test split, as `prepare --seed` (default: the profile's, 0).",
)
@click.option(
    "--folds",
    type=click.IntRange(1),
    default=None,
    help="K outer folds by group: every video tested once, every model trained K times (default: the "
    "profile's, see Profiles below; 1 = one train/val/test split).",
)
@pass_context
def run_command(
    context: Context,
    data_root: Path | None,
    run_dir: Path | None,
    profile: str | None,
    skip_deep: bool,
    classes: str | None,
    seed: int | None,
    folds: int | None,
) -> None:
    """The whole comparison: (demo data), prepare, features, classical, deep, report.

    Without DATA_ROOT the demo dataset is generated into RUN_DIR/demo_data. Every stage resumes:
    rerun the same command after an interruption and finished work is kept (an interrupted CNN
    continues from its last finished epoch).

    \b
    Examples:
      python cli.py run                                  # demo dataset, runs/demo
      python cli.py run --profile tiny --run runs/tiny   # a smoke test in seconds
      python cli.py run --profile tiny --folds 3 --run runs/tiny3   # every video tested once
      python cli.py run data/UCF101 --run runs/ucf --classes PullUps,Punch,PushUps
      python cli.py run data/mine --run runs/mine-seed1 --seed 1   # another split of the same videos
      python cli.py --device cpu run --skip-deep
      python cli.py --quiet run > run.log      # no progress: the summary, warnings and errors only
    """
    from workflow.run import default_run_dir, run_comparison

    run_comparison(data_root, run_dir or default_run_dir(data_root), profile=profile, backend=context.backend,
                   skip_deep=skip_deep, classes=csv_list(classes), seed=seed, folds=folds, progress=context.progress,
                   command=context.command)  # fmt: skip


MODEL_OR_BEST = ("best", *CLASSICAL_MODELS, *DEEP_MODELS)


@main.command()
@run_option
@click.argument("videos", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--model",
    "model_name",
    type=click.Choice(MODEL_OR_BEST),
    default="best",
    show_default=True,
    help="A model of the run; best: the one the report ranks first on test macro-F1.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("predictions.csv"),
    show_default=True,
    help="CSV file, one row per video.",
)
@click.option(
    "--top-k",
    type=click.IntRange(1),
    default=3,
    show_default=True,
    help="Also write the K best classes and their scores (at most the number of classes).",
)
@click.option(
    "--batch-size",
    type=click.IntRange(1),
    default=None,
    help="Videos per feature batch / clips per CNN batch. Default: the run's.",
)
@pass_context
def predict(
    context: Context,
    run_dir: Path,
    videos: tuple[Path, ...],
    model_name: str,
    out: Path,
    top_k: int,
    batch_size: int | None,
) -> None:
    """Classify VIDEOS (files or folders) with a trained model of RUN_DIR.

    Each video takes the path it took in the comparison: the pre-flight check, the same decoding,
    the model's feature settings or clip protocol, on the CPU or the GPU. The CSV has the columns
    path, predicted_class, score_<Class> for every class, top<i>_class/top<i>_score, seconds and
    error: a file that cannot be read gets a row with the reason in error, never dropped. The exit
    status is 1 when no video could be classified.

    \b
    Examples:
      python cli.py predict --run runs/demo new_clips/
      python cli.py predict --run runs/demo --model cnn3d clip1.mp4 clip2.avi --out clips.csv
      python cli.py --device cpu predict --run runs/ucf --model svm --top-k 5 data/incoming
    """
    from workflow.predict import expand_inputs, load_model, predict_to_csv

    files = expand_inputs(videos)  # a mistyped path stops here, before any model is loaded
    predictor = load_model(run_dir, model_name, backend=context.backend, batch_size=batch_size)
    click.echo(
        f"model: {predictor.name} ({predictor.choice.reason}); {predictor.family}, "
        f"{len(predictor.class_names)} classes; device {context.backend.device_description()}"
    )
    report = predict_to_csv(predictor, files, out, top_k=top_k)
    click.echo(report.text())
    report.check_any_classified()


@main.command("export")
@run_option
@click.option("--model", "model_name", required=True, type=click.Choice([*CLASSICAL_MODELS, *DEEP_MODELS]))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["onnx", "torchscript", "skops"]),
    default=None,
    help="CNNs: onnx (default) or torchscript (deprecated by PyTorch); classical models: skops.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder for the model file and its JSON. Default: RUN_DIR/export.",
)
@click.option(
    "--check-clips",
    type=click.IntRange(1),
    default=8,
    show_default=True,
    help="CNNs: test clips on which the export must match PyTorch (class probabilities within 1e-3).",
)
@pass_context
def export_command(
    context: Context, run_dir: Path, model_name: str, fmt: str | None, out_dir: Path | None, check_clips: int
) -> None:
    """Write a trained model of RUN_DIR in a deployable format, checked against the run's model.

    CNNs: ONNX (run it with onnxruntime, TensorRT, ...) or TorchScript, with MODEL.onnx.json beside it
    (clip protocol, class names, normalisation); nothing is written if the export's scores differ from
    PyTorch's on the test clips. Classical models: skops (no code runs when it is loaded), with the
    feature settings and class names beside it.

    \b
    Examples:
      python cli.py export --run runs/demo --model cnn3d --format onnx
      python cli.py export --run runs/demo --model cnn2d --format torchscript --out deploy/
      python cli.py export --run runs/demo --model rf
    """
    from workflow.export import export_model

    report = export_model(run_dir, model_name, context.backend, fmt=fmt, out_dir=out_dir, check_clips=check_clips)
    click.echo(report.text())


@main.group()
def bench() -> None:
    """Benchmarks that write JSON."""


@bench.command("loader")
@click.argument("data_root", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--frames", type=click.IntRange(1), default=16, show_default=True, help="Frames per clip.")
@click.option(
    "--size",
    type=click.IntRange(8),
    default=112,
    show_default=True,
    help="Crop size: 112 = R3D-18 clips (BCTHW, Kinetics mean/std), else ResNet-18 clips (BTCHW, ImageNet).",
)
@click.option("--mode", type=click.Choice(["train", "eval"]), default="eval", show_default=True)
@click.option(
    "--cache",
    type=click.Choice(["on", "off"]),
    default="on",
    show_default=True,
    help="Also time the decoded-clip cache (cold = first pass writing it, warm = reading it).",
)
@click.option("--clips", type=click.IntRange(1), default=None, help="Use N videos, evenly spread (default: all).")
@click.option("--batch-size", type=click.IntRange(1), default=8, show_default=True)
@click.option(
    "--threads",
    "num_threads",
    type=click.IntRange(1),
    default=2,
    show_default=True,
    help="DALI threads; PyAV decodes on one more.",
)
@click.option(
    "--out", type=click.Path(path_type=Path), default=None, help="JSON file or folder. Default: ./bench/loader.json."
)
@click.option(
    "--peers",
    default=None,
    help="Also time these libraries, each in a DataLoader with 2 workers: "
    "torchcodec,decord (pip install -e '.[peers]').",
)
@click.option(
    "--cache-max-gb",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Size limit of the benchmark's cache (default: 25% of the free disk).",
)
@click.option(
    "--repeat",
    type=click.IntRange(1),
    default=3,
    show_default=True,
    help="Rounds: every loader is timed this many times, alternating, and its median pass reported.",
)
@pass_context
def bench_loader_command(
    context: Context, data_root: Path, cache: str, peers: str | None, cache_max_gb: float | None, **options: Any
) -> None:
    """Clips/s of the project loader (cache off, cold, warm) vs a notebook-style OpenCV+PIL loader
    and, with --peers, torchcodec and decord; frames decoded per clip.

    \b
    Examples:
      python cli.py bench loader data/demo --peers torchcodec,decord
      python cli.py bench loader data/demo --mode train --size 224 --frames 8 --clips 48
      python cli.py --device cpu bench loader data/demo --cache off --out bench/
    \b
    Long videos (clip cost vs video length): render 30-s and 3-s H.264 sets, bench both:
      python cli.py demo-data data/h264-30s --codec h264 --size 320x240 --groups 4 --clips-per-group 2 --seconds 30-30
      python cli.py demo-data data/h264-3s --codec h264 --size 320x240 --groups 4 --clips-per-group 2 --seconds 3-3
      python cli.py bench loader data/h264-30s --cache off --peers torchcodec,decord --out bench/h264-30s.json
    """
    from workflow.bench.loader import bench_loader

    max_bytes = None if cache_max_gb is None else int(cache_max_gb * 1e9)
    result = bench_loader(data_root, context.backend, cache=cache == "on", peers=csv_list(peers) or (),
                          cache_max_bytes=max_bytes, **options)  # fmt: skip
    click.echo(result.table())


@bench.command("features")
@click.argument("data_root", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--videos", type=click.IntRange(1), default=None, help="Use N videos, evenly spread (default: all).")
@click.option(
    "--out", type=click.Path(path_type=Path), default=None, help="JSON file or folder. Default: ./bench/features.json."
)
@pass_context
def bench_features_command(context: Context, data_root: Path, videos: int | None, out: Path | None) -> None:
    """Videos/s of decoding alone and of decoding + feature kernel, the kernel's share (and NumPy
    vs CuPy on a GPU).

    \b
    Examples:
      python cli.py bench features data/demo
      python cli.py --device cpu bench features data/demo --videos 48 --out bench/
    """
    from workflow.bench.features import bench_features

    click.echo(bench_features(data_root, context.backend, videos=videos, out=out).table())


@bench.command("classical")
@click.option(
    "--run",
    "run_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Run directory with features.npz.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="JSON path. Default: RUN_DIR/bench/classical.json.",
)
@click.option(
    "--models",
    default=None,
    callback=_model_list,
    help="Comma-separated subset of svm,rf,knn,logreg,gb. Default: all five.",
)
@pass_context
def bench_classical_command(context: Context, run_dir: Path, out: Path | None, models: list[str] | None) -> None:
    """Fit time and macro-F1: our classical models vs the notebook study's scikit-learn setup.

    \b
    Examples:
      python cli.py bench classical --run runs/demo
      python cli.py bench classical --run runs/demo --out bench_classical.json
    """
    from workflow.bench.classical import bench_classical, default_out, summarize

    report = bench_classical(run_dir, context.backend, out=out, models=models)
    click.echo(summarize(report, default_out(run_dir, out)))


@bench.command("predict")
@click.option(
    "--run",
    "run_dir",
    required=True,
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="Run directory with trained models.",
)
@click.option("--models", default=None, help="Comma-separated models. Default: every model with a saved file.")
@click.option("--passes", type=click.IntRange(1), default=2, show_default=True, help="Timed passes per model.")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="JSON path. Default: RUN_DIR/bench/predict.json.",
)
@pass_context
def bench_predict_command(context: Context, run_dir: Path, models: str | None, passes: int, out: Path | None) -> None:
    """Videos/s of `predict` for each model on the run's test videos, end to end.

    \b
    Examples:
      python cli.py bench predict --run runs/demo
      python cli.py --device cpu bench predict --run runs/demo --models rf,cnn3d --passes 3
    """
    from workflow.bench.predict import bench_predict, default_out

    names = csv_list(models)
    unknown = [name for name in names or [] if name not in MODEL_OR_BEST[1:]]
    if unknown:
        raise click.BadParameter(f"unknown model(s) {', '.join(unknown)}", param_hint="--models")
    bench_predict(run_dir, context.backend, models=names, passes=passes, out=out)
    click.echo(f"-> {default_out(run_dir, out)}")


@bench.command("deep", epilog=PROFILES_EPILOG)
@click.option("--model", "model_name", required=True, type=click.Choice(DEEP_MODELS))
@click.option(
    "--run",
    "run_dir",
    default=None,
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="Also measure with the real loader on this run's videos.",
)
@click.option(
    "--out",
    default=None,
    type=click.Path(dir_okay=False, path_type=Path),
    help="JSON output. Default: RUN_DIR/bench/deep_MODEL.json with --run, else stdout only.",
)
@profile_option
@click.option("--batch-size", type=click.IntRange(1), default=None)
@click.option("--frames", type=click.IntRange(1), default=None)
@click.option("--size", type=click.IntRange(8), default=None)
@click.option("--amp/--no-amp", default=None)
@click.option("--channels-last/--no-channels-last", default=None)
@click.option("--steps", type=click.IntRange(1), default=10, show_default=True, help="Timed steps after warm-up.")
@pass_context
def bench_deep_command(context: Context, model_name: str, **options: Any) -> None:
    """Training and inference clips/s of a deep model: synthetic input, and with the real loader.

    \b
    Examples:
      python cli.py bench deep --model cnn3d
      python cli.py bench deep --model cnn2d --run runs/demo --profile tiny
    """
    from core.runfiles import to_json
    from workflow.bench.deep import bench_deep, summarize

    report = bench_deep(model_name, context.backend, **options)
    click.echo(summarize(report))
    if options["out"] is None and options["run_dir"] is None:
        click.echo(to_json(report), nl=False)


if __name__ == "__main__":
    sys.exit(main())
