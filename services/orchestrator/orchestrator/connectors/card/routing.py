"""Card gateway routing: which acquirers to try, in what order, and which to skip for now.

Routing rules come from YAML (config/card-routing.yaml); the circuit breaker keeps a failing
acquirer out of the route until a probe shows it is back.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml


class RoutingConfigError(ValueError):
    """The routing file is not usable; the message says where."""


@dataclass(frozen=True)
class Rule:
    name: str
    route: tuple[str, ...]
    brands: frozenset[str] = frozenset()
    min_amount_paisa: int = 0
    max_amount_paisa: int | None = None

    def matches(self, brand: str, amount_paisa: int) -> bool:
        if self.brands and brand not in self.brands:
            return False
        if amount_paisa < self.min_amount_paisa:
            return False
        return self.max_amount_paisa is None or amount_paisa <= self.max_amount_paisa


@dataclass(frozen=True)
class RoutingTable:
    gateways: tuple[str, ...]
    rules: tuple[Rule, ...]
    default: tuple[str, ...]

    def route(self, brand: str, amount_paisa: int) -> tuple[str, ...]:
        """Gateways to try in order for this card and amount."""
        for rule in self.rules:
            if rule.matches(brand, amount_paisa):
                return rule.route
        return self.default

    @classmethod
    def load(cls, path: Path) -> RoutingTable:
        try:
            document = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise RoutingConfigError(f"{path}: {exc}") from exc
        return cls.parse(document, source=str(path))

    @classmethod
    def parse(cls, document: Any, source: str = "routing") -> RoutingTable:
        if not isinstance(document, Mapping):
            raise RoutingConfigError(f"{source}: must be a mapping")
        gateways = _names(document.get("gateways"), f"{source}: gateways")
        known = set(gateways)

        def route(value: Any, where: str) -> tuple[str, ...]:
            names = _names(value, where)
            unknown = [n for n in names if n not in known]
            if unknown:
                raise RoutingConfigError(f"{where}: unknown gateway(s) {', '.join(unknown)}")
            return names

        rules = []
        for index, raw in enumerate(document.get("rules") or []):
            where = f"{source}: rules[{index}]"
            if not isinstance(raw, Mapping) or not isinstance(raw.get("when", {}), Mapping):
                raise RoutingConfigError(f"{where}: needs `when` (a mapping) and `route`")
            when = raw.get("when") or {}
            unknown_keys = set(when) - {"brand", "min_amount_paisa", "max_amount_paisa"}
            if unknown_keys:
                raise RoutingConfigError(f"{where}: unknown condition(s) {sorted(unknown_keys)}")
            rules.append(
                Rule(
                    name=str(raw.get("name") or f"rule-{index}"),
                    route=route(raw.get("route"), f"{where}.route"),
                    brands=frozenset(str(b).upper() for b in when.get("brand") or ()),
                    min_amount_paisa=_int(when.get("min_amount_paisa", 0), f"{where}.when"),
                    max_amount_paisa=None
                    if when.get("max_amount_paisa") is None
                    else _int(when["max_amount_paisa"], f"{where}.when"),
                )
            )
        default = route(document.get("default", gateways), f"{source}: default")
        return cls(gateways=gateways, rules=tuple(rules), default=default)


def _names(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, Sequence) or isinstance(value, str) or not value:
        raise RoutingConfigError(f"{where}: must be a non-empty list of gateway names")
    return tuple(str(v) for v in value)


def _int(value: Any, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise RoutingConfigError(f"{where}: amounts must be whole numbers of paisa")
    return value


class BreakerState(StrEnum):
    CLOSED = "closed"  # traffic flows
    OPEN = "open"  # failing: skipped until the cool-down ends
    HALF_OPEN = "half_open"  # one probe request allowed through


@dataclass
class _Gateway:
    state: BreakerState = BreakerState.CLOSED
    failures: int = 0
    opened_at: float = 0.0
    probing: bool = False


@dataclass
class CircuitBreaker:
    """Per-gateway breaker: `threshold` consecutive failures open it for `cooldown` seconds,
    after which one probe decides whether it closes again or reopens."""

    threshold: int = 3
    cooldown_seconds: float = 30.0
    clock: Callable[[], float] = time.monotonic
    _gateways: dict[str, _Gateway] = field(default_factory=dict)

    def state(self, gateway: str) -> BreakerState:
        entry = self._entry(gateway)
        if (
            entry.state == BreakerState.OPEN
            and self.clock() - entry.opened_at >= self.cooldown_seconds
        ):
            entry.state = BreakerState.HALF_OPEN
            entry.probing = False
        return entry.state

    def allow(self, gateway: str) -> bool:
        """Ask right before sending: in HALF_OPEN this hands out the single probe, so every
        allowed call must end in record_success or record_failure."""
        state = self.state(gateway)
        if state == BreakerState.CLOSED:
            return True
        entry = self._entry(gateway)
        if state == BreakerState.HALF_OPEN and not entry.probing:
            entry.probing = True
            return True
        return False

    def record_success(self, gateway: str) -> None:
        self._gateways[gateway] = _Gateway()

    def record_failure(self, gateway: str) -> None:
        entry = self._entry(gateway)
        entry.failures += 1
        if entry.state == BreakerState.HALF_OPEN or entry.failures >= self.threshold:
            entry.state = BreakerState.OPEN
            entry.opened_at = self.clock()
            entry.probing = False

    def _entry(self, gateway: str) -> _Gateway:
        return self._gateways.setdefault(gateway, _Gateway())
