from __future__ import annotations

import numpy as np
import pytest
import torch

from models import pretrained
from models.distributed import DistContext
from models.schema import load_result
from models.train_deep import (
    DeepConfig,
    build_model,
    clip_specs,
    learning_curve_points,
    load_checkpoint,
    load_trained_model,
    make_loaders,
    make_optimizer,
    prepare_model,
    run_deep,
    subsample_groups,
    train_model,
    warmup_cosine,
)
from pipelines.backend import resolve_backend
from pipelines.records import class_names, read_videos_csv
from tests.deep_data import CLASSES, make_run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("deep"))


@pytest.fixture(scope="module")
def backend():
    return resolve_backend("cpu")


SIZE = {"cnn2d": 24, "cnn3d": 16}  # smaller than the tiny profile: these tests train several times


def tiny(model: str, **overrides) -> DeepConfig:
    return DeepConfig.for_profile(model, "tiny", **overrides)


def loaders_for(run_dir, config, backend):
    records = read_videos_csv(run_dir / "videos.csv")
    return records, make_loaders(records, config, backend, DistContext(), run_dir)


def fresh_model(config: DeepConfig, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return prepare_model(build_model(config, len(CLASSES)), config, torch.device("cpu"))


def test_profiles_record_their_settings():
    assert (DeepConfig.for_profile("cnn2d", "gpu").frames, DeepConfig.for_profile("cnn2d", "gpu").size) == (16, 224)
    cpu = DeepConfig.for_profile("cnn3d", "cpu", epochs=7, lr=None)
    assert (cpu.profile, cpu.epochs, cpu.lr) == ("cpu", 7, 1e-3)
    with pytest.raises(ValueError, match="unknown deep model"):
        DeepConfig.for_profile("vit", "cpu")


def test_warmup_then_cosine_schedule():
    factor = warmup_cosine(total_steps=10, warmup_steps=2)
    assert [factor(0), factor(1)] == [0.5, 1.0]
    assert factor(2) == pytest.approx(1.0) and factor(10) == pytest.approx(0.0)
    assert all(factor(s) >= factor(s + 1) for s in range(2, 10))


@pytest.mark.parametrize("model_name", ["cnn2d", "cnn3d"])
def test_loss_decreases_on_real_clips(run_dir, backend, model_name):
    config = tiny(model_name, batch_size=4, lr=1e-3, dropout=0.0, label_smoothing=0.0, size=SIZE[model_name])
    _, loaders = loaders_for(run_dir, config, backend)
    batch = next(iter(loaders["train"]))
    size = SIZE[model_name]
    assert tuple(batch.clips.shape[1:]) == ((4, 3, size, size) if model_name == "cnn2d" else (3, 4, size, size))
    model = fresh_model(config)
    optimizer = make_optimizer(model, config)
    labels = torch.as_tensor(batch.labels)
    losses = []
    for _ in range(4):
        loss = torch.nn.functional.cross_entropy(model(batch.clips), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses


class Interrupted(Exception):
    pass


def interrupt_after_first_epoch(epoch, state):
    if epoch == 0:
        raise Interrupted


@pytest.mark.parametrize("model_name", ["cnn2d", "cnn3d"])
def test_checkpoint_round_trips_and_resume_matches_an_uninterrupted_run(run_dir, backend, tmp_path, model_name):
    # cnn3d freezes its backbone here only to keep this CPU test fast (optimizer steps over 33 M
    # parameters dominate); the resume logic is the same for every parameter.
    freeze = "all-but-head" if model_name == "cnn3d" else "none"
    config = tiny(model_name, epochs=2, patience=5, size=16, batch_size=6, freeze=freeze)
    records, loaders = loaders_for(run_dir, config, backend)
    names = class_names(records)
    device = torch.device("cpu")

    def train(checkpoint_dir, resume=False, on_epoch_end=None):
        torch.manual_seed(0)
        model = fresh_model(config)
        outcome = train_model(
            model,
            loaders["train"],
            loaders["val"],
            config,
            device,
            names,
            checkpoint_dir=checkpoint_dir,
            resume=resume,
            progress=False,
            on_epoch_end=on_epoch_end,
        )
        return model, outcome

    with pytest.raises(Interrupted):
        train(tmp_path / "interrupted", on_epoch_end=interrupt_after_first_epoch)
    saved = load_checkpoint(tmp_path / "interrupted" / "last.pt")
    assert saved["train_state"]["epoch"] == 0
    # round trip: the saved model and optimizer load back into fresh objects unchanged
    model = fresh_model(config)
    model.load_state_dict(saved["model"])
    assert all(torch.equal(model.state_dict()[k], v) for k, v in saved["model"].items())
    optimizer = make_optimizer(model, config)
    optimizer.load_state_dict(saved["optimizer"])
    steps_after_epoch_0 = len(loaders["train"])
    assert all(int(s["step"]) == steps_after_epoch_0 for s in optimizer.state_dict()["state"].values())

    epochs_seen = []
    resumed, resumed_outcome = train(
        tmp_path / "interrupted", resume=True, on_epoch_end=lambda e, s: epochs_seen.append(e)
    )
    assert epochs_seen == [1]  # continued with the second epoch, did not redo the first
    assert len(resumed_outcome.state.history) == 2
    assert resumed_outcome.state.history[0] == saved["train_state"]["history"][0]
    after = load_checkpoint(tmp_path / "interrupted" / "last.pt")
    assert all(int(s["step"]) == 2 * steps_after_epoch_0 for s in after["optimizer"]["state"].values())

    if model_name == "cnn3d":
        return  # the comparison with an uninterrupted run is the same code path; cnn2d is cheaper
    uninterrupted, outcome = train(tmp_path / "straight")
    assert outcome.state.best_epoch == resumed_outcome.state.best_epoch
    for key, value in uninterrupted.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[key], value, rtol=1e-4, atol=1e-5)


def test_learning_curve_subsets_whole_groups():
    from pipelines.records import VideoRecord

    records = [
        VideoRecord(f"{c}/g{g}_c{k}", "", c, label, f"{c}_g{g}", "train", "mjpeg", 12, 25.0, 48, 36)
        for label, c in enumerate("AB")
        for g in range(8)
        for k in range(2)
    ]
    half = subsample_groups(records, 0.5, seed=0)
    groups = {r.group for r in half}
    assert len(groups) == 8 and {g[0] for g in groups} == {"A", "B"}
    assert all(sum(r.group == g for r in half) == 2 for g in groups)  # whole groups only
    assert len(subsample_groups(records, 0.01, seed=0)) == 4  # at least one group per class


def test_learning_curve_retrains_each_fraction_from_the_same_weights(run_dir, backend):
    config = tiny("cnn2d", learning_curve_fractions=(0.5, 1.0), learning_curve_epochs=1, size=16, batch_size=6)
    records, loaders = loaders_for(run_dir, config, backend)
    torch.manual_seed(0)
    initial = {k: v.clone() for k, v in build_model(config, len(CLASSES)).state_dict().items()}
    trained = {}
    points = learning_curve_points(
        initial,
        records,
        loaders,
        config,
        backend,
        DistContext(),
        run_dir,
        class_names(records),
        progress=False,
        on_trained=lambda fraction, model: trained.update(
            {fraction: {k: v.clone() for k, v in model.state_dict().items()}}
        ),
    )
    assert [p.fraction for p in points] == [0.5, 1.0]
    assert points[0].n_train_videos < points[1].n_train_videos == 12
    assert all(p.epochs == 1 and 0 <= p.macro_f1_mean <= 1 for p in points)
    key = "head.weight"
    assert not torch.equal(trained[0.5][key], trained[1.0][key])
    assert not torch.equal(trained[0.5][key], initial[key]) and not torch.equal(trained[1.0][key], initial[key])


def test_run_deep_writes_a_valid_result_and_skips_finished_work(run_dir, backend):
    config = tiny("cnn2d", epochs=1, size=SIZE["cnn2d"], batch_size=6)
    result = run_deep(run_dir, backend, config, progress=False)
    saved = load_result(run_dir / "results" / "cnn2d.json")
    assert saved == result
    test_ids = sorted(r.video_id for r in read_videos_csv(run_dir / "videos.csv") if r.split == "test")
    assert sorted(p.video_id for p in result.predictions) == test_ids
    assert result.family == "deep" and result.backend == "torch-cpu"
    assert result.test_protocol.startswith("2 clips x 1 crop")
    assert result.config["profile"] == "tiny" and result.config["normalization"]["mean"][0] == pytest.approx(0.485)
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


def test_missing_pretrained_weights_fail_before_training(run_dir, backend, monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    config = DeepConfig.for_profile("cnn3d", "cpu")
    with pytest.raises(pretrained.WeightsUnavailableError, match="--weights none"):
        run_deep(run_dir, backend, config, force=True, progress=False)
    assert not (run_dir / "checkpoints" / "cnn3d").exists()
