from __future__ import annotations

import numpy as np
import pytest

from analysis.scene_bias import Representation, nearest_neighbours, neighbour_shares


def _rep(X: np.ndarray, labels: np.ndarray) -> Representation:
    return Representation("x", "test representation", X, labels, np.array([f"v{i}" for i in range(len(X))]))


def test_nearest_neighbour_excludes_the_video_itself():
    X = np.array([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [5.2, 5.0]])
    assert nearest_neighbours(X).tolist() == [1, 0, 3, 2]


def test_a_scene_biased_representation_clusters_by_group():
    rng = np.random.default_rng(0)
    groups = np.repeat([f"g{g}" for g in range(6)], 6)
    labels = np.tile(np.arange(3), 12)
    scene = rng.normal(size=(6, 8)) * 10
    X = scene[np.repeat(np.arange(6), 6)] + rng.normal(size=(36, 8)) * 0.1  # each group a tight cloud
    shares = neighbour_shares(_rep(X, labels), groups)
    assert shares.same_group == 1.0 and shares.same_class < 0.5 and shares.clusters_by_group
    assert shares.chance_group == pytest.approx(5 / 35) and shares.chance_class == pytest.approx(11 / 35)


def test_an_action_representation_clusters_by_class():
    rng = np.random.default_rng(1)
    groups = np.repeat([f"g{g}" for g in range(6)], 6)
    labels = np.tile(np.arange(3), 12)
    X = np.eye(3)[labels] * 10 + rng.normal(size=(36, 3)) * 0.1
    shares = neighbour_shares(_rep(X, labels), groups)
    assert shares.same_class == 1.0 and not shares.clusters_by_group


def test_one_group_is_never_called_scene_bias():
    labels = np.array([0, 1, 2, 0, 1, 2])
    shares = neighbour_shares(_rep(np.arange(12.0).reshape(6, 2), labels), ["g"] * 6)
    assert shares.same_group == 1.0 and shares.n_groups == 1 and not shares.clusters_by_group
