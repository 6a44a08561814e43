from __future__ import annotations

import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch

from core.backend import resolve_backend
from core.runfiles import read_json
from core.schema import load_result, save_result
from models.deep.build import clip_specs
from models.deep.curve import CURVE_DIR
from models.deep.train import has_current_result, load_trained_model, run_deep
from models.networks import pretrained
from pipelines.data.records import index_fingerprint, read_videos_csv, write_videos_csv
from tests.deep_data import CLASSES, TEST_SIZE, make_run, tiny_config
from workflow.profiles import PROFILES


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("deep"))


@pytest.fixture(scope="module")
def backend():
    return resolve_backend("cpu")


def test_run_deep_writes_a_valid_result_and_skips_finished_work(run_dir, backend):
    config = tiny_config("cnn2d", epochs=1, size=TEST_SIZE["cnn2d"], batch_size=6)
    result = run_deep(run_dir, backend, config, progress=False)
    saved = load_result(run_dir / "results" / "cnn2d.json")
    assert saved == result
    test_ids = sorted(r.video_id for r in read_videos_csv(run_dir / "videos.csv") if r.split == "test")
    assert sorted(p.video_id for p in result.predictions) == test_ids
    assert result.family == "deep" and result.backend == "torch-cpu"
    assert result.test_protocol.startswith("2 clips x 1 crop")
    assert result.config["profile"] == "tiny" and result.config["normalization"]["mean"][0] == pytest.approx(0.485)
    # CPU decoding: the clip cache is on by default; its first pass decodes with PyAV, later reads hit it.
    assert result.config["cache"] is True
    decode = result.config["decode"]  # one place for how clips were decoded
    assert set(decode["routes"]) == {"pyav", "cache"} and decode["fallbacks"] == {}
    assert decode["clips_decoded"] > 0 and decode["sequential_fallbacks"] == 0
    # This run has no keyframes.npz: each video is indexed on first use, once (loaders sharing an
    # index count only their own scans).
    assert 0 < decode["keyframe_scans"] <= len(read_videos_csv(run_dir / "videos.csv"))
    cost = result.cost
    assert cost.parameters == 11_178_051 and cost.flops_per_clip > 1e7
    assert len(cost.epoch_seconds) == 1 and cost.fit_seconds > 0
    assert 0 < cost.inference_seconds_per_video_model <= cost.inference_seconds_per_video_end_to_end
    assert cost.model_bytes == (run_dir / "models" / "cnn2d.pt").stat().st_size
    assert cost.peak_memory_fit_bytes is not None and cost.memory_kind.startswith("process_rss")
    embeddings = np.load(run_dir / "embeddings" / "cnn2d.npz")
    assert sorted(embeddings["video_ids"].tolist()) == test_ids and embeddings["embeddings"].shape == (6, 512)
    assert (run_dir / "checkpoints" / "cnn2d" / "best.pt").is_file()

    model, meta = load_trained_model(run_dir / "models" / "cnn2d.pt")
    assert meta["class_names"] == list(CLASSES) and meta["input_layout"] == "BTCHW"
    spec = clip_specs(config)["test"]
    assert tuple(meta["mean"]) == pytest.approx(spec.mean)

    mtime = (run_dir / "results" / "cnn2d.json").stat().st_mtime_ns
    assert run_deep(run_dir, backend, config, progress=False) == saved
    assert (run_dir / "results" / "cnn2d.json").stat().st_mtime_ns == mtime


def test_a_re_prepared_index_retrains_instead_of_reusing_a_stale_result(tmp_path, backend):
    run_dir = make_run(tmp_path)
    config = tiny_config("cnn2d", epochs=1, size=16, batch_size=6)
    first = run_deep(run_dir, backend, config, progress=False)
    assert has_current_result(run_dir, config)
    # Another split of the same videos (as a re-run of `prepare` would write): one val video moves to train.
    records = read_videos_csv(run_dir / "videos.csv")
    moved = next(i for i, r in enumerate(records) if r.split == "val")
    records[moved] = replace(records[moved], split="train")
    write_videos_csv(run_dir / "videos.csv", records)
    assert not has_current_result(run_dir, config)
    second = run_deep(run_dir, backend, config, progress=False, resume="yes")
    assert second.index_fingerprint != first.index_fingerprint
    assert second.index_fingerprint == index_fingerprint(records)
    assert read_json(run_dir / "checkpoints" / "cnn2d" / "data.json")["data_fingerprint"] == index_fingerprint(records)
    assert load_result(run_dir / "results" / "cnn2d.json") == second


def test_a_learning_curve_asked_for_later_is_added_point_by_point(run_dir, backend):
    config = tiny_config("cnn2d", epochs=1, size=16, batch_size=6, learning_curve_fractions=(1.0,))
    result_path = run_dir / "results" / "cnn2d.json"
    first = run_deep(run_dir, backend, config, progress=False)  # trains the model only if no test before ran
    with_curve = run_deep(run_dir, backend, config, learning_curve=True, progress=False)
    assert with_curve.predictions == first.predictions  # the model was not retrained
    assert [p.fraction for p in with_curve.learning_curve] == [1.0] and load_result(result_path) == with_curve
    point_file = run_dir / "checkpoints" / "cnn2d" / CURVE_DIR / "fraction1_seed0.json"
    saved_point = read_json(point_file)
    assert saved_point["score"]["macro_f1"] == with_curve.learning_curve[0].macro_f1_mean

    # As if killed before the curve was complete: the result has no curve, one point is on disk.
    without_curve = load_result(result_path)
    without_curve.learning_curve = None
    save_result(without_curve, result_path)
    wider = tiny_config("cnn2d", epochs=1, size=16, batch_size=6, learning_curve_fractions=(0.5, 1.0))
    resumed = run_deep(run_dir, backend, wider, learning_curve=True, progress=False)
    assert [p.fraction for p in resumed.learning_curve] == [0.5, 1.0]
    assert resumed.learning_curve[1] == with_curve.learning_curve[0]  # reused, not retrained
    assert read_json(point_file) == saved_point
    assert (run_dir / "checkpoints" / "cnn2d" / CURVE_DIR / "fraction0.5_seed0.json").is_file()


def test_missing_pretrained_weights_fail_before_training(run_dir, backend, monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    config = PROFILES["cpu"].deep_config("cnn3d")
    with pytest.raises(pretrained.WeightsUnavailableError, match="--weights none"):
        run_deep(run_dir, backend, config, force=True, progress=False)
    assert not (run_dir / "checkpoints" / "cnn3d").exists()


def test_cli_deep_with_cache_off_and_label_smoothing_reports_rejected_videos(tmp_path):
    from click.testing import CliRunner

    from cli import main

    run_dir = make_run(tmp_path)
    records = read_videos_csv(run_dir / "videos.csv")
    for split in ("train", "test"):
        broken = tmp_path / "data" / f"broken_{split}.avi"
        broken.write_bytes(b"not a video" * 50)
        template = next(r for r in records if r.split == split)
        records.append(replace(template, video_id=f"Left/broken_{split}", path=str(broken), group=f"broken_{split}"))
    write_videos_csv(run_dir / "videos.csv", records)
    args = ["--device", "cpu", "deep", "--run", str(run_dir), "--model", "cnn2d", "--profile", "tiny"]
    args += ["--epochs", "1", "--size", "16", "--batch-size", "6", "--cache", "off", "--label-smoothing", "0.2"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert f"2 video(s) rejected this run (see {run_dir / 'rejected.csv'})" in result.output
    saved = load_result(run_dir / "results" / "cnn2d.json")
    assert saved.config["cache"] is False and saved.config["label_smoothing"] == pytest.approx(0.2)
    # Without the cache every clip is decoded by DALI's CPU decoder (MJPEG); the broken files are
    # isolated and rejected, not counted as decoded.
    assert list(saved.config["decode"]["routes"]) == ["dali-cpu"] and saved.config["decode"]["fallbacks"] == {}
    assert not any((run_dir / "cache").rglob("*.*"))  # nothing decoded into the clip cache
    assert "decoded-clip cache" not in result.output
    assert "Left/broken_test" not in {p.video_id for p in saved.predictions}

    again = CliRunner().invoke(main, args)  # finished: nothing decoded, nothing rejected this time
    assert again.exit_code == 0 and "rejected this run" not in again.output
    # Only the learning curve is missing: its retraining loaders meet broken_train again, and count it.
    curve = CliRunner().invoke(main, [*args, "--learning-curve"])
    assert curve.exit_code == 0, curve.output
    assert f"2 video(s) rejected this run (see {run_dir / 'rejected.csv'})" in curve.output
    assert load_result(run_dir / "results" / "cnn2d.json").learning_curve
    bad = CliRunner().invoke(main, [*args[:-2], "--label-smoothing", "1"])
    assert bad.exit_code == 2 and "label-smoothing" in bad.output
    cached = CliRunner().invoke(main, [*args[:-4], "--cache", "on", "--force"])
    assert cached.exit_code == 0, cached.output
    size = sum(path.stat().st_size for path in (run_dir / "cache").rglob("*") if path.is_file())
    assert size > 0 and f"decoded-clip cache: {size / 2**20:.1f} MiB in {run_dir / 'cache'}" in cached.output
    decode = load_result(run_dir / "results" / "cnn2d.json").config["decode"]
    assert decode["cache_misses"] > 0 and f"hit rate {100 * decode['cache_hit_rate']:.0f}%" in cached.output
    # A limit far below what the run decodes: the run finishes with the cache under it, keeping the
    # entries it uses and leaving out what does not fit (see ClipCache._make_room), and says so.
    limit = size // 3
    shutil.rmtree(run_dir / "cache")
    bounded = CliRunner().invoke(main, [*args[:-4], "--cache", "on", "--cache-max-gb", str(limit / 1e9), "--force"])
    assert bounded.exit_code == 0, bounded.output
    decode = load_result(run_dir / "results" / "cnn2d.json").config["decode"]
    assert decode["cache_not_stored"] > 0 and decode["cache_max_bytes"] == limit
    assert sum(path.stat().st_size for path in (run_dir / "cache").rglob("*") if path.is_file()) <= limit
    assert f"{decode['cache_evictions']} evicted, {decode['cache_not_stored']} not stored)" in bounded.output


def _deep_args(run_dir, *more):
    return ["--device", "cpu", "deep", "--run", str(run_dir), "--model", "cnn2d", "--profile", "tiny",
            "--epochs", "1", "--size", "16", "--batch-size", "6", *more]  # fmt: skip


def test_an_unreadable_result_is_set_aside_and_retrained(tmp_path):
    """`: > R/results/cnn2d.json` used to fail every rerun with `Expecting value: line 1 column 1`."""
    from click.testing import CliRunner

    from cli import main

    run_dir = make_run(tmp_path)
    path = run_dir / "results" / "cnn2d.json"
    assert CliRunner().invoke(main, _deep_args(run_dir)).exit_code == 0
    path.write_text("")
    again = CliRunner().invoke(main, _deep_args(run_dir))
    assert again.exit_code == 0, again.output
    assert f"{path} cannot be read (" in again.output and "kept as cnn2d.json.corrupt; retraining cnn2d" in again.output
    assert (path.parent / "cnn2d.json.corrupt").read_text() == ""
    assert load_result(path).index_fingerprint == index_fingerprint(read_videos_csv(run_dir / "videos.csv"))


def test_changed_settings_retrain_and_speed_only_settings_keep_the_result(tmp_path):
    """`deep --pooling max` over an avg-pooling result used to reprint the old result."""
    from click.testing import CliRunner

    from cli import main

    run_dir = make_run(tmp_path)
    path = run_dir / "results" / "cnn2d.json"
    assert CliRunner().invoke(main, _deep_args(run_dir)).exit_code == 0
    assert load_result(path).config["pooling"] == "avg"
    stamp = path.stat().st_mtime_ns
    same = CliRunner().invoke(main, _deep_args(run_dir, "--cache", "off"))  # speed only: kept
    assert same.exit_code == 0 and "retraining" not in same.output and path.stat().st_mtime_ns == stamp
    limited = CliRunner().invoke(main, _deep_args(run_dir, "--cache", "on", "--cache-max-gb", "0.5"))  # speed only
    assert limited.exit_code == 0 and "retraining" not in limited.output and path.stat().st_mtime_ns == stamp
    changed = CliRunner().invoke(main, _deep_args(run_dir, "--pooling", "max"))
    assert changed.exit_code == 0, changed.output
    assert f"{path} was trained with other settings (pooling: 'avg' -> 'max'): retraining cnn2d" in changed.output
    assert load_result(path).config["pooling"] == "max"


def test_weights_that_are_not_a_checkpoint_of_the_model_are_one_line_errors(tmp_path):
    from click.testing import CliRunner

    from cli import main
    from models.deep.checkpoint import save_checkpoint
    from models.networks.cnn3d import build_cnn3d

    run_dir = make_run(tmp_path)
    garbage, empty, other = tmp_path / "garbage.pth", tmp_path / "empty.pth", tmp_path / "cnn3d.pt"
    garbage.write_bytes(b"not a checkpoint at all" * 20)
    empty.write_bytes(b"")
    save_checkpoint(other, {"model": build_cnn3d(3, weights="none").state_dict(), "architecture": "cnn3d"})
    for path, expected in [
        (garbage, "is not a readable PyTorch checkpoint"),
        (empty, "is not a readable PyTorch checkpoint"),
        (other, "does not hold cnn2d (ResNet-18) weights"),
    ]:
        result = CliRunner().invoke(main, _deep_args(run_dir, "--weights", str(path)))
        assert result.exit_code == 1, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"Error: {path} {expected}"), result.output
        assert "Traceback" not in result.output and "Aborted" not in result.output
    assert not (run_dir / "checkpoints").exists()  # stopped before any training
