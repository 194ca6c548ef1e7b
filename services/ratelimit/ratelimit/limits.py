"""Which limit applies to a descriptor, which counter it counts in, and what the count means.

Pure logic, no I/O: the Redis store counts, the servicer asks this module what to count and
how to answer. The configuration follows the format of Envoy's reference rate limit service
(envoyproxy/ratelimit), so a platform team reads it without a new vocabulary:

    domain: paygate
    descriptors:
      - key: generic_key            # Envoy's generic_key action
        value: global
        rate_limit: {unit: second, requests_per_unit: 2000}
      - key: merchant_id            # any merchant without an entry of its own
        rate_limit: {unit: second, requests_per_unit: 100}
      - key: merchant_id
        value: m_bulk               # one merchant's own limit
        rate_limit: {unit: second, requests_per_unit: 500}

A descriptor (Envoy's list of key/value entries) walks this tree one entry per level: an entry
matches a node with the same key and value first, else the node with the key and no value. The
limit of the node the last entry lands on applies; no node, or a node without a limit, means
the descriptor is not limited. Counters are fixed windows aligned to the unit.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

Entry = tuple[str, str]
Descriptor = Sequence[Entry]


class ConfigError(ValueError):
    """The limits file is not valid; the message says where."""


class Unit(enum.Enum):
    SECOND = 1
    MINUTE = 60
    HOUR = 3600
    DAY = 86400

    @property
    def seconds(self) -> int:
        return self.value


@dataclass(frozen=True)
class RateLimit:
    requests_per_unit: int
    unit: Unit
    name: str  # the descriptor path it was configured at, for answers and logs


@dataclass(frozen=True)
class Node:
    key: str
    value: str | None
    limit: RateLimit | None = None
    unlimited: bool = False
    children: Mapping[tuple[str, str | None], Node] = field(default_factory=dict)


@dataclass(frozen=True)
class LimitConfig:
    domain: str
    children: Mapping[tuple[str, str | None], Node]

    def limit_for(self, descriptor: Descriptor) -> RateLimit | None:
        """The limit that applies to `descriptor`, or None when it is not limited."""
        level = self.children
        node: Node | None = None
        for key, value in descriptor:
            node = level.get((key, value)) or level.get((key, None))
            if node is None:
                return None
            level = node.children
        if node is None or node.unlimited:
            return None
        return node.limit


@dataclass(frozen=True)
class Window:
    """One fixed window of one limit for one descriptor: the counter to increment."""

    key: str
    ttl_seconds: int
    seconds_until_reset: int


@dataclass(frozen=True)
class Decision:
    limit: RateLimit
    over_limit: bool
    remaining: int
    seconds_until_reset: int


def window_for(domain: str, descriptor: Descriptor, limit: RateLimit, now: float) -> Window:
    """The counter of the window containing `now` (unix seconds)."""
    span = limit.unit.seconds
    start = int(now) // span * span
    entries = "|".join(f"{k}={v}" for k, v in descriptor)
    return Window(
        key=f"ratelimit:{domain}:{entries}:{limit.unit.name.lower()}:{start}",
        # The key carries its window start, so it is dead once the window ends; the TTL only
        # reclaims the memory (one extra second absorbs clock skew between replicas).
        ttl_seconds=span + 1,
        seconds_until_reset=max(1, start + span - int(now)),
    )


def decide(limit: RateLimit, count: int, window: Window) -> Decision:
    """`count` is the window's total after this request's hits were added."""
    return Decision(
        limit=limit,
        over_limit=count > limit.requests_per_unit,
        remaining=max(0, limit.requests_per_unit - count),
        seconds_until_reset=window.seconds_until_reset,
    )


def load_config(path: Path) -> LimitConfig:
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read rate limit config {path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return parse_config(raw, source=str(path))


def parse_config(raw: Any, source: str = "config") -> LimitConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping with domain and descriptors")
    domain = raw.get("domain")
    if not isinstance(domain, str) or not domain:
        raise ConfigError(f"{source}: domain must be a non-empty string")
    return LimitConfig(domain=domain, children=_parse_nodes(raw.get("descriptors"), source, ""))


def _parse_nodes(raw: Any, source: str, parent: str) -> dict[tuple[str, str | None], Node]:
    if raw is None:
        return {}
    if not isinstance(raw, list):
        raise ConfigError(f"{source}: descriptors{_at(parent)} must be a list")
    nodes: dict[tuple[str, str | None], Node] = {}
    for item in raw:
        node = _parse_node(item, source, parent)
        ident = (node.key, node.value)
        if ident in nodes:
            raise ConfigError(f"{source}: descriptor {_path(parent, node)} is defined twice")
        nodes[ident] = node
    return nodes


def _parse_node(raw: Any, source: str, parent: str) -> Node:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: each descriptor{_at(parent)} must be a mapping")
    key, value = raw.get("key"), raw.get("value")
    if not isinstance(key, str) or not key:
        raise ConfigError(f"{source}: descriptor{_at(parent)} needs a non-empty key")
    if value is not None and not isinstance(value, str | int):
        raise ConfigError(f"{source}: descriptor {key}{_at(parent)} value must be a string")
    node = Node(key=key, value=None if value is None else str(value))
    name = _path(parent, node)
    unlimited = raw.get("unlimited", False)
    if not isinstance(unlimited, bool):
        raise ConfigError(f"{source}: {name}: unlimited must be true or false")
    limit = _parse_limit(raw.get("rate_limit"), source, name)
    if unlimited and limit is not None:
        raise ConfigError(f"{source}: {name}: unlimited and rate_limit exclude each other")
    return Node(
        key=node.key,
        value=node.value,
        limit=limit,
        unlimited=unlimited,
        children=_parse_nodes(raw.get("descriptors"), source, name),
    )


def _parse_limit(raw: Any, source: str, name: str) -> RateLimit | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: {name}: rate_limit must be a mapping")
    unit_name = str(raw.get("unit", "")).upper()
    try:
        unit = Unit[unit_name]
    except KeyError:
        units = ", ".join(u.name.lower() for u in Unit)
        raise ConfigError(f"{source}: {name}: unit must be one of {units}") from None
    requests = raw.get("requests_per_unit")
    if not isinstance(requests, int) or isinstance(requests, bool) or requests < 0:
        raise ConfigError(f"{source}: {name}: requests_per_unit must be a non-negative integer")
    return RateLimit(requests_per_unit=requests, unit=unit, name=name)


def _path(parent: str, node: Node) -> str:
    own = node.key if node.value is None else f"{node.key}={node.value}"
    return f"{parent}.{own}" if parent else own


def _at(parent: str) -> str:
    return f" under {parent}" if parent else ""
