"""Scene bias: does a representation group test videos by action, or by actor and scene?

For each representation (the handcrafted features, each CNN's embeddings) the share of test
videos whose nearest neighbour (other than itself, Euclidean on standardised columns) has the
same group, and the share whose nearest neighbour has the same class. A representation whose
neighbours share the group more often than the class has learnt the scene more than the action.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from analysis.names import human_name
from core.runfiles import RunPaths
from core.schema import ModelResult
from pipelines.features.store import current_features


@dataclass(frozen=True)
class Representation:
    """Test rows of one representation: ``key`` names files (features, cnn2d...), ``label`` is read."""

    key: str
    label: str
    X: np.ndarray
    labels: np.ndarray
    video_ids: np.ndarray


@dataclass(frozen=True)
class NeighbourShares:
    key: str
    label: str
    n_videos: int
    n_groups: int
    same_group: float  # share of videos whose nearest neighbour is in their group
    same_class: float  # ... in their class
    chance_group: float  # what a random other video would give
    chance_class: float

    @property
    def clusters_by_group(self) -> bool:
        """Neighbours share the group more often than the class (meaningful with several groups)."""
        return self.n_groups > 1 and self.same_group > self.same_class


def nearest_neighbours(X: np.ndarray) -> np.ndarray:
    """Index of each row's nearest other row (Euclidean on z-scored columns; constant columns dropped)."""
    X = np.asarray(X, dtype=np.float64)
    if len(X) < 2:
        raise ValueError(f"{len(X)} rows: a nearest neighbour needs at least 2")
    std = X.std(axis=0)
    Z = (X[:, std > 0] - X[:, std > 0].mean(axis=0)) / std[std > 0]
    squared = np.sum(Z**2, axis=1)
    distances = squared[:, None] + squared[None, :] - 2.0 * Z @ Z.T
    np.fill_diagonal(distances, np.inf)
    return np.argmin(distances, axis=1)


def _chance_same(values: np.ndarray) -> float:
    """Probability that a uniformly drawn other video has the same value."""
    _, counts = np.unique(values, return_counts=True)
    n = counts.sum()
    return float(np.sum(counts * (counts - 1)) / (n * (n - 1)))


def neighbour_shares(representation: Representation, groups: Sequence[str]) -> NeighbourShares:
    """Same-group and same-class nearest-neighbour shares of ``representation`` (``groups`` per row)."""
    groups_a = np.asarray(groups, dtype=str)
    labels = np.asarray(representation.labels)
    if len(groups_a) != len(labels) or len(labels) != len(representation.X):
        raise ValueError(f"{representation.label}: rows, labels and groups do not align")
    neighbour = nearest_neighbours(representation.X)
    return NeighbourShares(
        representation.key,
        representation.label,
        len(labels),
        len(np.unique(groups_a)),
        float(np.mean(groups_a[neighbour] == groups_a)),
        float(np.mean(labels[neighbour] == labels)),
        _chance_same(groups_a),
        _chance_same(labels),
    )


def load_representations(
    run_dir: str | os.PathLike[str], results: Sequence[ModelResult]
) -> tuple[list[Representation], list[str]]:
    """The handcrafted features (rows of the videos the models were tested on) when made from the
    run's current index, and the embeddings of each compared CNN when they hold exactly the videos its
    result scored; notes on what is missing, unreadable or stale."""
    paths = RunPaths(run_dir)
    found: list[Representation] = []
    notes: list[str] = []
    tested = sorted({p.video_id for r in results for p in r.predictions})
    features, problem = current_features(run_dir)
    if features is not None:
        ids = np.asarray(features.video_ids, dtype=str)
        rows = np.isin(ids, tested)
        found.append(
            Representation("features", "handcrafted features", features.X[rows], features.labels[rows], ids[rows])
        )
    else:
        notes.append(f"{problem}: no scene-bias check or map of the handcrafted features.")
    for result in [r for r in results if r.family == "deep"]:
        model, name = result.model, human_name(result.model)
        path = paths.embeddings_dir / f"{model}.npz"
        if not path.exists():
            notes.append(f"embeddings/{model}.npz is missing: no scene-bias check or map of {name}.")
            continue
        try:
            with np.load(path, allow_pickle=False) as data:
                ids, X, y = np.asarray(data["video_ids"], dtype=str), data["embeddings"], data["labels"]
        except Exception as exc:  # any damage to the file: the report goes on without it
            notes.append(f"embeddings/{model}.npz cannot be read ({type(exc).__name__}): no check or map of {name}.")
            continue
        if sorted(ids.tolist()) != sorted(p.video_id for p in result.predictions):
            notes.append(f"embeddings/{model}.npz holds other videos than results/{model}.json: {name} not shown.")
            continue
        found.append(Representation(model, f"{name} embeddings", X, y, ids))
    return found, notes


def scene_bias(
    representations: Sequence[Representation], groups: Mapping[str, str] | None
) -> tuple[list[NeighbourShares], list[str]]:
    """Neighbour shares of every representation with at least 3 rows; notes for the others."""
    shares, notes = [], []
    for rep in representations:
        if len(rep.X) < 3:
            notes.append(f"{rep.label}: {len(rep.X)} test videos are too few for a nearest-neighbour check.")
            continue
        row_groups = [groups.get(v, v) if groups is not None else v for v in rep.video_ids]
        shares.append(neighbour_shares(rep, row_groups))
    return shares, notes
