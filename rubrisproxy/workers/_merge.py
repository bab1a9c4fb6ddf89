"""The workers' admin answers made one answer for the whole proxy: counts and gauges summed, what is the same in
every worker (names, states, weights, times) taken from the first (worker 0, the one that runs health checks)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Any

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.samples import Sample

#: Numbers that are not counts: the first worker's is the proxy's.
KEPT = frozenset({
    "weight", "state_seconds", "pid", "started_at", "uptime", "seconds", "expires_in", "age", "type", "act", "bck",
    "lastchg", "check_duration", "new_pid", "deadline",
})
#: Metric families that are not counts (a series per state or version, set to 1): the first worker's.
KEPT_METRICS = frozenset({
    "rubrisproxy_build_info", "rubrisproxy_server_up", "rubrisproxy_server_state", "process_start_time_seconds",
    "process_max_fds",
})
#: What names an element of a list, so the same element from each worker is merged into one.
IDENTITY = ("name", "endpoint", "id")


def merge_json(values: list[Any], key: str = "") -> Any:
    """Merge the workers' answers to one JSON call (dictionaries by key, lists by each element's identity)."""
    first = values[0]
    if isinstance(first, dict):
        merged: dict[str, Any] = {}
        for each in values:
            for name in each if isinstance(each, dict) else ():
                if name not in merged:
                    merged[name] = merge_json([v[name] for v in values if isinstance(v, dict) and name in v], name)
        return merged
    if isinstance(first, list):
        return _merge_list(values)
    if _number(first) and key not in KEPT and all(_number(v) for v in values):
        return sum(values)
    return first


def _merge_list(values: list[Any]) -> list[Any]:
    groups: dict[tuple[str, Any], list[Any]] = {}
    merged: list[Any] = []
    for each in values:
        for element in each if isinstance(each, list) else ():
            identity = _identity(element)
            if identity is None:
                merged.append(element)
                continue
            if identity not in groups:
                groups[identity] = []
                merged.append(identity)
            groups[identity].append(element)
    return [merge_json(groups[e]) if isinstance(e, tuple) and e in groups else e for e in merged]


def _identity(element: Any) -> tuple[str, Any] | None:
    if isinstance(element, dict):
        for name in IDENTITY:
            if name in element:
                return name, element[name]
    return None


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def merge_csv(texts: list[str]) -> str:
    """Merge the workers' ``stats.csv``: row by row (the first worker's rows), numeric cells summed."""
    tables = [list(csv.reader(io.StringIO(text))) for text in texts]
    first = tables[0]
    rows = [table for table in tables if len(table) == len(first)]
    header = [name.lstrip("# ") for name in first[0]] if first else []
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for index, row in enumerate(first):
        if index == 0:
            writer.writerow(row)
            continue
        cells = []
        for column, cell in enumerate(row):
            name = header[column] if column < len(header) else ""
            column_cells = [table[index][column] if column < len(table[index]) else "" for table in rows]
            cells.append(_sum_cells(column_cells) if name not in KEPT else cell)
        writer.writerow(cells)
    return out.getvalue()


def _sum_cells(cells: list[str]) -> str:
    try:
        numbers = [int(cell) for cell in cells]
    except ValueError:
        return cells[0]
    return str(sum(numbers))


def merge_metrics(texts: list[bytes], extra: Collector | None = None) -> bytes:
    """Merge the workers' Prometheus expositions: samples of the same name and labels summed (but for
    :data:`KEPT_METRICS`), then ``extra``'s metrics (the supervisor's own)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Merged(texts))
    if extra is not None:
        registry.register(extra)
    return generate_latest(registry)


class _Merged(Collector):
    def __init__(self, texts: list[bytes]) -> None:
        self.texts = texts

    def collect(self) -> Iterator[Any]:
        families: dict[str, Any] = {}
        values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
        for text in self.texts:
            for family in text_string_to_metric_families(text.decode()):
                if family.name not in families:
                    families[family.name] = family
                    values[family.name] = {}
                kept = family.name in KEPT_METRICS
                samples = values[family.name]
                for sample in family.samples:
                    key = (sample.name, tuple(sorted(sample.labels.items())))
                    if key not in samples:
                        samples[key] = sample.value
                    elif not kept:
                        samples[key] += sample.value
        for name, family in families.items():
            family.samples = [Sample(sample_name, dict(labels), value) for (sample_name, labels), value
                              in values[name].items()]
            yield family
