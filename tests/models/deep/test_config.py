from __future__ import annotations

import pytest

from models.deep.config import DeepConfig
from workflow.profiles import PROFILES


def test_profiles_record_their_settings():
    assert (PROFILES["gpu"].deep_config("cnn2d").frames, PROFILES["gpu"].deep_config("cnn2d").size) == (16, 224)
    cpu = PROFILES["cpu"].deep_config("cnn3d", epochs=7, lr=None)
    assert (cpu.profile, cpu.epochs, cpu.lr) == ("cpu", 7, PROFILES["cpu"].deep_config("cnn3d").lr)
    with pytest.raises(ValueError, match="unknown deep model"):
        PROFILES["cpu"].deep_config("vit")


def test_invalid_settings_are_rejected():
    with pytest.raises(ValueError, match="fractions"):
        PROFILES["tiny"].deep_config("cnn2d", learning_curve_fractions=(0.0, 1.0))
    with pytest.raises(ValueError, match="unknown optimizer"):
        DeepConfig(model="cnn2d", optimizer="lamb")


def test_label_smoothing_must_be_below_one():
    assert PROFILES["tiny"].deep_config("cnn3d", label_smoothing=0.0).label_smoothing == 0.0
    with pytest.raises(ValueError, match="label_smoothing"):
        PROFILES["tiny"].deep_config("cnn3d", label_smoothing=1.0)


def test_switching_the_clip_cache_keeps_checkpoints_resumable(tmp_path, capsys):
    from dataclasses import replace

    from models.deep.checkpoint import ResumePoint, check_resumable

    config = PROFILES["tiny"].deep_config("cnn2d")
    saved = ResumePoint({"config": config.to_dict()}, None)
    older = ResumePoint({"config": {k: v for k, v in config.to_dict().items() if k != "cache"}}, None)
    last = tmp_path / "last.pt"
    assert check_resumable(saved, replace(config, cache=False), last, "yes")
    assert check_resumable(older, config, last, "yes")  # a file from before the cache setting
    with pytest.raises(ValueError, match="label_smoothing") as error:
        check_resumable(saved, replace(config, label_smoothing=0.3), last, "yes")
    # The fix it names works whatever else was given (it used to say "--force" to users who had given it).
    assert "leave out --resume to train afresh" in str(error.value) and "--force" not in str(error.value)
    # `deep --resume` may train longer; `run` ("auto") continues only a training of these very settings.
    assert check_resumable(saved, replace(config, epochs=5), last, "yes")
    assert not check_resumable(saved, replace(config, epochs=5), last, "auto")
    assert f"{last} was written with other settings (epochs: 2 -> 5): training afresh" in capsys.readouterr().err
    assert check_resumable(saved, replace(config, cache=False, num_threads=3), last, "auto")


def test_frames_decoded_otherwise_are_neither_continued_nor_reused(tmp_path, capsys):
    """Checkpoints, results and curve points record the filter the clips' frames were shrunk with
    (a change of filter changes every training clip's pixels) and which packets are frames."""
    from models.deep.checkpoint import ResumePoint, check_resumable
    from pipelines.data.video_stream import FRAMES_DEFINITION
    from pipelines.video.decode import SHRINK_FILTER

    config = PROFILES["tiny"].deep_config("cnn2d")
    assert config.to_dict()["shrink_filter"] == SHRINK_FILTER
    assert config.to_dict()["frames_definition"] == FRAMES_DEFINITION
    other = {**config.to_dict(), "shrink_filter": "AREA"}
    before = {k: v for k, v in config.to_dict().items() if k not in ("shrink_filter", "frames_definition")}
    last = tmp_path / "last.pt"
    with pytest.raises(ValueError, match=f"shrink_filter: 'AREA' -> '{SHRINK_FILTER}'"):
        check_resumable(ResumePoint({"config": other}, None), config, last, "yes")
    assert not check_resumable(ResumePoint({"config": before}, None), config, last, "auto")
    changes = f"shrink_filter: None -> '{SHRINK_FILTER}', frames_definition: None -> {FRAMES_DEFINITION}"
    assert f"{changes}): training afresh" in capsys.readouterr().err
    assert config.changes_from(other) == [f"shrink_filter: 'AREA' -> '{SHRINK_FILTER}'"]  # a stored result: retrained
    assert DeepConfig(**{k: v for k, v in other.items() if k not in ("shrink_filter", "frames_definition")}) == config


def test_settings_saved_before_stride_fps_keep_their_frame_stride():
    """A model, result or checkpoint saved before strides were counted at ``stride_fps`` sampled every
    ``stride``-th frame of each video: loaded, it still does; trained anew, it is not reused."""
    from models.deep.build import clip_specs

    config = PROFILES["tiny"].deep_config("cnn3d")
    assert DeepConfig.from_saved({**config.to_dict(), "no_longer_a_setting": 1}) == config
    older = {k: v for k, v in config.to_dict().items() if k != "stride_fps"}
    loaded = DeepConfig.from_saved(older)
    assert loaded.stride_fps is None and clip_specs(loaded)["test"].stride_fps is None
    assert clip_specs(config)["test"].stride_fps == config.stride_fps == 25.0
    assert config.changes_from(older) == ["stride_fps: None -> 25.0"]


def test_the_2d_cnn_ignores_stride_fps_so_its_older_results_stay_current():
    """TSN segments do not depend on the window stride's frame rate: a ResNet-18 result, checkpoint or
    learning-curve point saved before stride_fps existed is still current; R3D-18's are not."""
    from dataclasses import replace

    import torch

    from models.deep.curve import curve_fingerprint
    from pipelines.data.records import VideoRecord

    records = [VideoRecord("c/v", "v.avi", "c", 0, "g", "train", "mpeg4", 20, 25.0, 64, 48)]
    state = {"w": torch.zeros(2)}

    def point_id(config):
        return curve_fingerprint(config, records, state)

    segments, window = PROFILES["tiny"].deep_config("cnn2d"), PROFILES["tiny"].deep_config("cnn3d")
    assert segments.changes_from({k: v for k, v in segments.to_dict().items() if k != "stride_fps"}) == []
    assert point_id(segments) == point_id(replace(segments, stride_fps=None))
    assert point_id(window) != point_id(replace(window, stride_fps=None))
