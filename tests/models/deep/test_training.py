from __future__ import annotations

import pytest
import torch

from core.backend import resolve_backend
from models.deep.build import build_model
from models.deep.checkpoint import load_checkpoint
from models.deep.config import DeepConfig
from models.deep.runtime import prepare_model
from models.deep.training import make_optimizer, train_model, warmup_cosine
from pipelines.data.records import class_names
from tests.deep_data import CLASSES, TEST_SIZE, make_run, records_and_loaders, tiny_config


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("deep_training"))


@pytest.fixture(scope="module")
def backend():
    return resolve_backend("cpu")


def fresh_model(config: DeepConfig, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return prepare_model(build_model(config, len(CLASSES)), config, torch.device("cpu"))


def test_warmup_then_cosine_schedule():
    factor = warmup_cosine(total_steps=10, warmup_steps=2)
    assert [factor(0), factor(1)] == [0.5, 1.0]
    assert factor(2) == pytest.approx(1.0) and factor(10) == pytest.approx(0.0)
    assert all(factor(s) >= factor(s + 1) for s in range(2, 10))


@pytest.mark.parametrize("model_name", ["cnn2d", "cnn3d"])
def test_loss_decreases_on_real_clips(run_dir, backend, model_name):
    config = tiny_config(
        model_name, batch_size=4, lr=1e-3, dropout=0.0, label_smoothing=0.0, size=TEST_SIZE[model_name]
    )
    _, loaders = records_and_loaders(run_dir, config, backend)
    batch = next(iter(loaders["train"]))
    size = TEST_SIZE[model_name]
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
    config = tiny_config(model_name, epochs=2, patience=5, size=16, batch_size=6, freeze=freeze)
    records, loaders = records_and_loaders(run_dir, config, backend)
    names = class_names(records)
    device = torch.device("cpu")

    def train(checkpoint_dir, resume="no", on_epoch_end=None):
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
        tmp_path / "interrupted", resume="yes", on_epoch_end=lambda e, s: epochs_seen.append(e)
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


class RunsCode:
    """Pickled as a call of Path.touch: loading it with weights_only=False would create ``marker``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        from pathlib import Path

        return (Path.touch, (Path(self.marker),))


@pytest.mark.parametrize("damage", ["truncated last.pt", "empty best.pt", "last.pt that runs code"])
def test_an_unusable_checkpoint_is_set_aside_and_training_starts_afresh(run_dir, backend, tmp_path, capsys, damage):
    config = tiny_config("cnn2d", epochs=2, patience=5, size=16, batch_size=6)
    records, loaders = records_and_loaders(run_dir, config, backend)
    checkpoints = tmp_path / "checkpoints"

    def train(resume, on_epoch_end=None):
        return train_model(
            fresh_model(config), loaders["train"], loaders["val"], config, torch.device("cpu"), class_names(records),
            checkpoint_dir=checkpoints, resume=resume, progress=False, on_epoch_end=on_epoch_end,
        )  # fmt: skip

    with pytest.raises(Interrupted):
        train("no", on_epoch_end=interrupt_after_first_epoch)
    marker = tmp_path / "code-ran"
    if damage == "truncated last.pt":
        damaged = checkpoints / "last.pt"
        damaged.write_bytes(damaged.read_bytes()[:1000])
    elif damage == "empty best.pt":
        damaged = checkpoints / "best.pt"
        damaged.write_bytes(b"")
    else:  # a run folder from someone else: its checkpoint must not run code on --resume
        damaged = checkpoints / "last.pt"
        saved = load_checkpoint(damaged)
        torch.save({**saved, "rng": RunsCode(marker)}, damaged)
    content = damaged.read_bytes()
    capsys.readouterr()
    epochs_seen = []
    outcome = train("yes", on_epoch_end=lambda epoch, state: epochs_seen.append(epoch))
    assert epochs_seen == [0, 1] and len(outcome.state.history) == 2  # afresh, not from epoch 2
    err = capsys.readouterr().err
    assert f"{damaged} cannot be read (" in err and f"kept as {damaged.name}.corrupt; training afresh" in err
    assert (checkpoints / f"{damaged.name}.corrupt").read_bytes() == content
    assert not marker.exists()
    assert load_checkpoint(checkpoints / "last.pt")["train_state"]["epoch"] == 1


@pytest.mark.parametrize("model_name", ["cnn2d", "cnn3d"])
def test_a_last_training_batch_of_one_clip_is_dropped(tmp_path, backend, model_name):
    """12 training videos in batches of 11: the second batch holds one clip. BatchNorm cannot train
    on it (R3D-18 at 16 px, ResNet-18 at one frame per clip: one value per channel) and used to stop
    training with "Expected more than 1 value per channel when training"."""
    from models.deep.train import run_deep
    from models.deep.training import training_batches

    run = make_run(tmp_path)
    frames = 1 if model_name == "cnn2d" else 4
    config = tiny_config(model_name, epochs=1, size=16, frames=frames, batch_size=11, freeze="none")
    _, loaders = records_and_loaders(run, config, backend)
    assert [len(batch.labels) for batch in loaders["train"]] == [11, 1]
    assert training_batches(loaders["train"]) == 1
    result = run_deep(run, backend, config, progress=False)
    assert result.config["epochs_run"] == 1 and result.metrics.n_videos == 6
