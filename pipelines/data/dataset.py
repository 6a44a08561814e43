"""Find the videos of a UCF101-layout folder (``ROOT/ClassName/video.avi``) and their groups.

UCF101 names its clips ``v_<Class>_g<GG>_c<CC>``: clips of one group share an actor and a scene,
so a group must never be split between train and test. Other names have no group, so each
file is its own group. Every problem the user can fix is raised here, before any decoding.
Video files that are not read (a dangling symbolic link, a video in a nested folder or directly
under ROOT) are listed by :func:`misplaced_videos` with the reason, never skipped silently.
"""

from __future__ import annotations

import difflib
import os
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# The containers the scan reads (FFmpeg demuxes them all; pre-flight rejects a file it cannot decode,
# with the reason). Files with other extensions are not videos to the scan and are not listed.
VIDEO_EXTENSIONS = (
    *(".avi", ".mp4", ".m4v", ".mov", ".mkv", ".webm"),
    *(".mpg", ".mpeg", ".vob"),  # MPEG program streams (DVDs, older camcorders)
    *(".ts", ".mts", ".m2ts"),  # MPEG transport streams (broadcast captures, AVCHD camcorders)
    *(".wmv", ".asf", ".flv", ".3gp", ".ogv"),
)

# A copy's suffix after the clip number (" (1)", "-copy", ".part2") keeps the group: a name of its own
# would make the copy a group of one and let its actor and scene into another split.
_UCF_NAME = re.compile(r"^v_(?P<name>.+?)_g(?P<group>\d+)_c(?P<clip>\d+)(?:[ ._\-(].*)?$", re.IGNORECASE)
_DEMO_HINT = "generate a demo dataset with `python cli.py demo-data data/demo`"


class DatasetError(ValueError):
    """A problem with the input folder or the requested classes that the user can fix."""


class DataRootNotFoundError(FileNotFoundError):
    """DATA_ROOT does not exist or is not a folder."""


class EmptyDataRootError(DatasetError):
    """DATA_ROOT holds no ``ClassName/*.{avi,mp4,webm,mkv}`` videos."""


class UnknownClassError(DatasetError):
    """A requested class has no folder of videos under DATA_ROOT."""


@dataclass(frozen=True)
class SkippedFile:
    """A video-named file that the scan does not read, and why (what to change)."""

    path: Path
    reason: str


@dataclass(frozen=True)
class VideoFile:
    """One video found on disk, before any decoding."""

    path: Path  # absolute
    class_name: str
    group: str
    video_id: str  # "Class/stem" (relative path without extension)

    @property
    def named_group(self) -> bool:
        """Whether the UCF101 name gives the group (``gGG``, see :func:`group_of`); otherwise the file
        is a group of its own."""
        return "/" not in self.group


def is_video_file(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_EXTENSIONS and not path.name.startswith(".")


def group_of(class_name: str, stem: str) -> str:
    """``gGG`` for UCF101 names (``v_Class_gGG_cCC``), else ``Class/stem`` (one group per file).

    A UCF101 group number is one split unit across ALL classes: the official lists hold out
    groups 1-7 (split 1) of every class together, and the demo renders one actor and scene per
    group number in every class. Splitting the groups of each class separately would put the
    actor of ``Punch_g02`` in training and ``PullUps_g02`` in test, and a model that learnt
    "this scene is Punch" would then be systematically wrong on held-out videos.
    """
    match = _UCF_NAME.match(stem)
    if match:
        return f"g{int(match.group('group')):02d}"
    # Qualified by the class so that equal stems in two classes stay two groups.
    return f"{class_name}/{stem}"


def _video_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and is_video_file(p))


DANGLING_LINK = "dangling symbolic link"
NESTED_FOLDER = "video in a nested folder"
NOT_IN_CLASS_FOLDER = "video outside a class folder"


def _dangling_links(folder: Path) -> list[SkippedFile]:
    skipped = []
    for path in sorted(folder.iterdir()):
        if is_video_file(path) and path.is_symlink() and not path.exists():
            target = os.readlink(path)
            reason = f"{DANGLING_LINK}: its target {target} does not exist; fix or remove the link"
            skipped.append(SkippedFile(path, reason))
    return skipped


def _nested_videos(class_dir: Path, root: Path) -> list[SkippedFile]:
    """Videos below ROOT/Class/<subfolder>/ (hidden folders are not searched)."""
    skipped = []
    for folder, subfolders, names in os.walk(class_dir):
        subfolders[:] = sorted(name for name in subfolders if not name.startswith("."))
        if Path(folder) == class_dir:
            continue
        for name in sorted(names):
            path = Path(folder) / name
            if is_video_file(path):
                where = path.relative_to(root)
                reason = (
                    f"{NESTED_FOLDER} ({where}): only ROOT/ClassName/<video> is read; move it into "
                    f"{root / where.parts[0]}/ or make its folder a class folder under {root}"
                )
                skipped.append(SkippedFile(path, reason))
    return skipped


def misplaced_videos(root: str | os.PathLike[str], classes: Sequence[str] | None = None) -> list[SkippedFile]:
    """Video-named files under ``root`` that :func:`scan_dataset` does not read, with the reason:
    dangling symbolic links in the selected class folders, videos in their subfolders, and (when
    all classes are used) videos directly under ``root`` or in folders below non-class folders."""
    root = Path(root).resolve()
    selected = select_classes(list_classes(root), classes, root)
    skipped: list[SkippedFile] = []
    folders = [root / name for name in selected]
    if not classes:
        skipped += [
            SkippedFile(p, f"{NOT_IN_CLASS_FOLDER}: videos must be in ROOT/ClassName/; move it into a class folder")
            for p in _video_files(root)
        ] + _dangling_links(root)
        folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    for folder in folders:
        skipped += _dangling_links(folder) + _nested_videos(folder, root)
    return skipped


def _check_root(root: Path) -> None:
    if not root.exists():
        raise DataRootNotFoundError(
            f"data root {root} does not exist; pass a folder laid out as ROOT/ClassName/video.avi, or {_DEMO_HINT}"
        )
    if not root.is_dir():
        raise DataRootNotFoundError(
            f"data root {root} is a file, not a folder; pass the folder that holds the class folders"
        )


def list_classes(root: str | os.PathLike[str]) -> list[str]:
    """Sorted names of the class folders under ``root`` that hold at least one video."""
    root = Path(root)
    _check_root(root)
    classes = sorted(
        entry.name
        for entry in root.iterdir()
        if entry.is_dir() and not entry.name.startswith(".") and _video_files(entry)
    )
    if not classes:
        loose = _video_files(root)
        if loose:
            raise EmptyDataRootError(
                f"{root} holds videos directly ({loose[0].name}, ...) but no class folders; pass its parent "
                f"folder, or move the videos into ROOT/ClassName/ folders"
            )
        raise EmptyDataRootError(
            f"no videos in {root}: expected ROOT/ClassName/*{{{','.join(VIDEO_EXTENSIONS)}}} (UCF101 layout); "
            f"check the path, or {_DEMO_HINT}"
        )
    return classes


def select_classes(
    known: Sequence[str], requested: Sequence[str] | None, root: str | os.PathLike[str] = ""
) -> list[str]:
    """The requested classes in sorted order (all ``known`` ones when ``requested`` is None).

    Raises :class:`UnknownClassError` naming the unknown classes and the known ones.
    """
    if not requested:
        return sorted(known)
    unknown = [name for name in dict.fromkeys(requested) if name not in known]
    if unknown:
        hints = []
        for name in unknown:
            close = [k for k in known if k.lower() == name.lower()] or difflib.get_close_matches(name, known, n=1)
            hints.append(f"{name!r} (did you mean {close[0]}?)" if close else repr(name))
        raise UnknownClassError(
            f"unknown class(es) {', '.join(hints)} in {root}; known classes: {', '.join(sorted(known))}"
        )
    return sorted(dict.fromkeys(requested))


def scan_dataset(root: str | os.PathLike[str], classes: Sequence[str] | None = None) -> list[VideoFile]:
    """Every video of the selected classes under ``root``, sorted by class then file name.

    Extensions are matched case-insensitively. Raises a :class:`DatasetError` or
    :class:`DataRootNotFoundError` (with the path and the fix) before anything is decoded.
    """
    root = Path(root).resolve()
    selected = select_classes(list_classes(root), classes, root)
    files: list[VideoFile] = []
    for class_name in selected:
        paths = _video_files(root / class_name)
        stems = Counter(p.stem for p in paths)
        for path in paths:
            # Two files differing only by extension keep their extension in the id, so ids stay unique.
            stem = path.stem if stems[path.stem] == 1 else path.name
            group = group_of(class_name, path.stem)
            files.append(VideoFile(path=path, class_name=class_name, group=group, video_id=f"{class_name}/{stem}"))
    return files
