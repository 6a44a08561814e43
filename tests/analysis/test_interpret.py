from __future__ import annotations

from analysis.interpret import pick_examples
from pipelines.data.records import VideoRecord

CLASSES = ("Punch", "PullUps", "PushUps")


def _records(groups: int, per_group: int) -> list[VideoRecord]:
    return [
        VideoRecord(
            f"{c}/v_{c}_g{g:02d}_c{k:02d}",
            f"/d/{c}_{g}_{k}.avi",
            c,
            label,
            f"g{g:02d}",
            "test",
            "mjpeg",
            50,
            25.0,
            64,
            48,
        )  # fmt: skip
        for label, c in enumerate(CLASSES)
        for g in range(1, groups + 1)
        for k in range(per_group)
    ]


def test_examples_cover_every_class_and_several_groups():
    chosen = pick_examples(_records(groups=5, per_group=4), per_class=2, max_classes=8)
    assert len(chosen) == 6 and {r.label for r in chosen} == {0, 1, 2}
    for label in range(3):
        mine = [r.group for r in chosen if r.label == label]
        assert len(set(mine)) == 2  # two examples of a class come from two groups
    assert len({r.group for r in chosen}) >= 4  # classes start at different groups


def test_examples_reuse_a_group_only_when_there_are_too_few_and_respect_max_classes():
    chosen = pick_examples(_records(groups=1, per_group=3), per_class=2, max_classes=2)
    assert [r.label for r in chosen] == [0, 0, 1, 1]
