"""Which decoder each clip went through, and which decoders failed on which codec.

A clip reaches the DALI pipelines by one of four decode routes:

* ``"nvdec"``: the file's bytes decoded by DALI on the GPU (``fn.decoders.video``, ``device="mixed"``);
* ``"dali-cpu"``: the file's bytes decoded by DALI on the CPU (libavcodec: VP8, VP9, MJPEG);
* ``"pyav"``: frames decoded by PyAV on the CPU (other codecs, files NVDEC cannot take, fallbacks;
  also the pass that fills the decoded-clip cache);
* ``"cache"``: frames read from the decoded-clip cache (no decoding).

:class:`DecodeStats` counts clips per route and the clips that had to leave their route
(``fallbacks``: ``"nvdec->pyav (decode failed)"``, ``"nvdec->dali-cpu (outside NVDEC frame
sizes)"``, ...); the counts go into the result files (``config.decode.routes`` and
``config.decode.fallbacks``, beside the PyAV route's and the cache's counters of
:func:`add_decode_counts`) and the ``features`` stage's output. :class:`RouteHealth` remembers a
DALI route that fails on a codec, so a broken route is tried once per codec, not once per batch.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

ROUTES = ("nvdec", "dali-cpu", "pyav", "cache")
DALI_ROUTES = ("nvdec", "dali-cpu")
ANY_CODEC = "*"


@dataclass
class DecodeStats:
    """Clips per decode route, clips that left their route (and why), and failed DALI runs."""

    routes: Counter[str] = field(default_factory=Counter)
    fallbacks: Counter[str] = field(default_factory=Counter)
    failed_runs: Counter[str] = field(default_factory=Counter)  # DALI runs that raised, per route
    broken: dict[str, str] = field(default_factory=dict)  # "route:codec" -> the error that broke it

    def add(self, other: DecodeStats) -> None:
        self.routes.update(other.routes)
        self.fallbacks.update(other.fallbacks)
        self.failed_runs.update(other.failed_runs)
        for key, reason in other.broken.items():
            self.broken.setdefault(key, reason)

    @classmethod
    def merged(cls, parts: Iterable[DecodeStats]) -> DecodeStats:
        total = cls()
        for part in parts:
            total.add(part)
        return total

    def to_dict(self) -> dict[str, dict[str, int] | dict[str, str]]:
        """JSON-ready: ``routes`` (route -> clips) first, then the rest (empty ones left out)."""
        data: dict[str, dict[str, int] | dict[str, str]] = {"routes": dict(sorted(self.routes.items()))}
        for name in ("fallbacks", "failed_runs", "broken"):
            value = getattr(self, name)
            if value:
                data[name] = dict(sorted(value.items()))
        return data

    def summary(self) -> str:
        """One line: "decode routes: nvdec 240, pyav 12 (fallbacks: nvdec->pyav (decode failed) 2)"."""
        routes = ", ".join(f"{route} {count}" for route, count in sorted(self.routes.items())) or "none"
        text = f"decode routes (clips): {routes}"
        if self.fallbacks:
            text += " (fallbacks: " + ", ".join(f"{k} {v}" for k, v in sorted(self.fallbacks.items())) + ")"
        return text


@dataclass
class RouteHealth:
    """Which DALI routes failed on which codec, remembered for the life of a loader.

    A route is marked broken for a codec when a single file of that codec fails on it, PyAV
    decodes the same file (so the file is fine), and the route never decoded that codec before
    (the loader does not report files with more than one video stream, which may fail on their own);
    a route whose pipeline cannot even be built is broken for every codec. A file that fails
    everywhere is the file's fault and breaks nothing.
    """

    stats: DecodeStats
    worked: set[tuple[str, str]] = field(default_factory=set)

    def usable(self, route: str, codec: str) -> bool:
        return f"{route}:{codec}" not in self.stats.broken and f"{route}:{ANY_CODEC}" not in self.stats.broken

    def succeeded(self, route: str, codecs: Iterable[str]) -> None:
        self.worked.update((route, codec) for codec in codecs)

    def file_failed(self, route: str, codec: str, reason: str) -> bool:
        """Record a single file that failed on ``route`` and that PyAV decoded; True when this
        marks the route broken for ``codec`` (it never decoded that codec before)."""
        if (route, codec) in self.worked or not self.usable(route, codec):
            return False
        self.stats.broken[f"{route}:{codec}"] = reason
        return True

    def pipeline_failed(self, route: str, reason: str) -> None:
        self.stats.broken[f"{route}:{ANY_CODEC}"] = reason


def add_decode_counts(counts: Iterable[dict[str, float]]) -> dict[str, float | None]:
    """Several loaders' :meth:`~pipelines.video.loader.ClipLoader.decode_counts` (the PyAV route's
    and the cache's counters) added up, with frames decoded per clip and the cache's hit rate (None
    when no clip was decoded / no video looked up) recomputed from the totals."""
    total: dict[str, float | None] = {}
    for item in counts:
        for key, value in item.items():
            if key != "frames_decoded_per_clip":
                total[key] = (total.get(key) or 0) + value
    frames, clips = total.get("frames_decoded") or 0, total.get("clips_decoded") or 0
    total["frames_decoded_per_clip"] = round(frames / clips, 2) if clips else None
    hits, misses = total.get("cache_hits") or 0, total.get("cache_misses") or 0
    total["cache_hit_rate"] = round(hits / (hits + misses), 4) if hits + misses else None
    return total


def first_line(error: BaseException, limit: int = 300) -> str:
    """The gist of a (multi-line, DALI-traceback) error message, on one line."""
    text = " ".join(str(error).split())
    return text[:limit] or type(error).__name__
