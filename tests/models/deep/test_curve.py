from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from core.backend import resolve_backend
from core.distributed import DistContext
from models.deep.build import build_model
from models.deep.curve import learning_curve_points, point_path, subsample_groups
from pipelines.data.records import class_names
from tests.deep_data import CLASSES, make_run, records_and_loaders, tiny_config


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("deep_curve"))


@pytest.fixture(scope="module")
def backend():
    return resolve_backend("cpu")


def test_learning_curve_subsets_whole_groups():
    from pipelines.data.records import VideoRecord

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


def test_learning_curve_keeps_a_fraction_of_shared_group_numbers():
    from pipelines.data.records import VideoRecord

    # UCF101 names: group g03 holds videos of every class; a fraction keeps whole numbers for all classes.
    records = [
        VideoRecord(f"{c}/v_{c}_g{g:02d}", f"/x/{c}{g}.webm", c, i, f"g{g:02d}", "train", "vp9", 8, 25.0, 32, 24)
        for i, c in enumerate(("A", "B", "C"))
        for g in range(8)
    ]
    half = subsample_groups(records, 0.5, seed=1)
    groups = {r.group for r in half}
    assert len(groups) == 4
    assert sorted(r.class_name for r in half) == ["A"] * 4 + ["B"] * 4 + ["C"] * 4


def test_learning_curve_retrains_each_fraction_from_the_same_weights(run_dir, backend):
    config = tiny_config("cnn2d", learning_curve_fractions=(0.5, 1.0), learning_curve_epochs=1, size=16, batch_size=6)
    records, loaders = records_and_loaders(run_dir, config, backend)
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


class Interrupted(Exception):
    pass


def test_an_interrupted_curve_reuses_its_finished_points_until_settings_or_data_change(run_dir, backend, tmp_path):
    config = tiny_config("cnn2d", learning_curve_fractions=(0.5, 1.0), learning_curve_epochs=1, size=16, batch_size=6)
    records, loaders = records_and_loaders(run_dir, config, backend)
    names = class_names(records)
    torch.manual_seed(0)
    initial = {k: v.clone() for k, v in build_model(config, len(CLASSES)).state_dict().items()}
    points_dir = tmp_path / "curve"

    def curve(config, records, on_trained, reuse=True):
        return learning_curve_points(
            initial, records, loaders, config, backend, DistContext(), run_dir, names, progress=False,
            on_trained=on_trained, points_dir=points_dir, reuse=reuse,
        )  # fmt: skip

    def interrupt_at_full_data(fraction, model):
        if fraction == 1.0:
            raise Interrupted  # as if killed while testing the second point

    with pytest.raises(Interrupted):
        curve(config, records, interrupt_at_full_data)
    assert point_path(points_dir, 0.5, config.seed).is_file()
    assert not point_path(points_dir, 1.0, config.seed).exists()
    saved_half = point_path(points_dir, 0.5, config.seed).read_bytes()

    retrained = []
    points = curve(config, records, lambda fraction, model: retrained.append(fraction))
    assert retrained == [1.0]  # the finished point was reused, not retrained
    assert point_path(points_dir, 0.5, config.seed).read_bytes() == saved_half
    assert [p.fraction for p in points] == [0.5, 1.0] and points[0].n_train_videos < points[1].n_train_videos
    assert all(p.seeds == [config.seed] and p.epochs == 1 for p in points)

    retrained.clear()
    assert curve(config, records, lambda fraction, model: retrained.append(fraction)) == points
    assert retrained == []  # a finished curve costs no training
    assert curve(replace(config, cache=False), records, lambda fraction, model: retrained.append(fraction)) == points
    assert retrained == []  # nor does switching the clip cache off (it changes speed, not scores)

    # Other settings (the lr), other data (a test video dropped) or reuse=False retrain the point.
    half = replace(config, learning_curve_fractions=(0.5,))
    fewer_videos = [r for r in records if r.video_id != records[-1].video_id]
    for changed_config, changed_records, reuse in (
        (replace(half, lr=3e-3), records, True),
        (half, fewer_videos, True),
        (half, records, False),
    ):
        retrained.clear()
        curve(changed_config, changed_records, lambda fraction, model: retrained.append(fraction), reuse=reuse)
        assert retrained == [0.5]


def test_an_unreadable_point_is_set_aside_and_retrained(tmp_path, capsys):
    from models.deep.curve import SeedScore, load_point, point_path, save_point

    path = point_path(tmp_path, 0.5, 0)
    save_point(path, SeedScore(0.5, 0, 12, 0.8, 0.75, 1), "fp")
    assert load_point(path, "fp") == SeedScore(0.5, 0, 12, 0.8, 0.75, 1)
    assert load_point(path, "other settings") is None and path.is_file()  # kept: another training's point
    path.write_text('{"fingerprint": "fp", "sco')  # cut short by a kill or a full disk
    assert load_point(path, "fp") is None
    assert f"{path} cannot be read (" in capsys.readouterr().err
    assert not path.exists() and path.with_name(path.name + ".corrupt").read_text().endswith('"sco')
