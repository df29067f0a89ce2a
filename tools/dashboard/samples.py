"""What the scrapes saw: every sample per series, with Prometheus' staleness markers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: A series' labels (``__name__`` included), sorted: the key of every sample.
Labels = tuple[tuple[str, str], ...]
#: A point of a series: (time, value).
Point = tuple[float, float]
#: Prometheus' staleness lookback: an instant selector sees a sample at most this old.
LOOKBACK_SECONDS = 300.0


def labels_of(name: str, labels: Mapping[str, str]) -> Labels:
    return tuple(sorted({**labels, "__name__": name}.items()))


def without_name(labels: Labels) -> Labels:
    return tuple(kv for kv in labels if kv[0] != "__name__")


def name_of(labels: Labels) -> str:
    return dict(labels).get("__name__", "")


class Samples:
    """Every scraped sample, per series, in time order; ``None`` is a staleness marker."""

    def __init__(self) -> None:
        self.series: dict[Labels, list[tuple[float, float | None]]] = {}
        self.times: list[float] = []

    def add_scrape(self, at: float, scraped: Mapping[Labels, float], instance: str) -> None:
        """One target's scrape at ``at``: its samples, and a stale marker for each series of
        that target (``instance``) that the scrape no longer has."""
        for key, value in scraped.items():
            self.series.setdefault(key, []).append((at, value))
        for key, points in self.series.items():
            mine = dict(key).get("instance") == instance
            if mine and key not in scraped and points[-1][1] is not None:
                points.append((at, None))
        if not self.times or self.times[-1] != at:
            self.times.append(at)

    def names(self) -> set[str]:
        return {name_of(k) for k in self.series}

    def to_json(self) -> dict[str, Any]:
        return {
            "times": self.times,
            "series": [{"labels": dict(k), "points": v} for k, v in self.series.items()],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Samples:
        out = cls()
        out.times = [float(t) for t in data["times"]]
        for item in data["series"]:
            key = tuple(sorted((str(k), str(v)) for k, v in item["labels"].items()))
            out.series[key] = [
                (float(t), None if v is None else float(v)) for t, v in item["points"]
            ]
        return out


def parse_exposition(text: str, *, job: str, instance: str) -> dict[Labels, float]:
    """A Prometheus text exposition as samples, with the ``job``/``instance`` labels a
    Prometheus server adds. Parsed by ``prometheus_client.parser`` (the ``metrics`` extra)."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[Labels, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[labels_of(s.name, {**s.labels, "job": job, "instance": instance})] = float(s.value)
    return out


def exposed_names(text: str) -> set[str]:
    """Every sample name an exposition can carry, from its families' declared types (so a
    labelled family with no child yet still counts): a counter ``x`` gives ``x_total``, a
    histogram ``x`` gives ``x_bucket``, ``x_sum`` and ``x_count``."""
    from prometheus_client.parser import text_string_to_metric_families

    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "summary": ("", "_sum", "_count", "_created"),
        "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
        "info": ("_info",),
    }
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.update(family.name + s for s in suffixes.get(family.type, ("",)))
        names.update(s.name for s in family.samples)
    return names
