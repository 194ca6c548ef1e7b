"""The fraud rules file (FRAUD_RULES_CONFIG_PATH): parsing, evaluation and hot reload.

The file has four sections (services/fraud/config/fraud-rules.yaml documents each field):
`lists` (block and allow lists), `rules` (conditions with points), `velocity` (thresholds on the
Redis windows) and `device` (device-risk thresholds). Parsing and evaluation are pure;
`RulesFile` is the one piece of I/O: it re-reads the file when its mtime changes, swaps the whole
rule set in one assignment, and keeps the old rules when the new file is bad.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import zoneinfo
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from fraud.scoring import ALLOWLIST_PREFIX, BLOCKLIST_PREFIX, Signal, Transaction
from gateway_core.logging import get_logger

log = get_logger(__name__)

IST = zoneinfo.ZoneInfo("Asia/Kolkata")
# The rules shipped with the service (what FRAUD_RULES_CONFIG_PATH points at by default).
REPO_DEFAULT_RULES = Path(__file__).resolve().parent.parent / "config" / "fraud-rules.yaml"
PAYMENT_METHODS = frozenset({"UPI", "CARD", "WALLET", "NET_BANKING"})
# List kinds and the Transaction field each one matches.
LIST_FIELDS = {
    "card_fingerprint": "card_fingerprint",
    "vpa": "vpa",
    "device_fingerprint": "device_fingerprint",
    "ip": "ip_address",
    "email": "email",
}
ENTITIES = ("user", "card", "vpa", "device", "ip")
WINDOWS = {"1m": 60, "1h": 3600, "24h": 86400}

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
_Named = TypeVar("_Named", "Rule", "VelocityLimit")


class RulesError(ValueError):
    """The rules file is not valid; the message names the place and the problem."""


@dataclass(frozen=True)
class Lists:
    """One block or allow list: exact values (case-insensitive) per kind, IPs as networks."""

    values: dict[str, frozenset[str]] = field(default_factory=dict)
    networks: tuple[IpNetwork, ...] = ()

    def hits(self, txn: Transaction) -> list[str]:
        """The kinds whose list holds this payment's value."""
        found = []
        for kind, attr in LIST_FIELDS.items():
            value = str(getattr(txn, attr)).strip().lower()
            if not value:
                continue
            if value in self.values.get(kind, frozenset()) or (
                kind == "ip" and _in_networks(value, self.networks)
            ):
                found.append(kind)
        return found


@dataclass(frozen=True)
class Rule:
    """Points when every condition that is set holds (each list condition: any of its values)."""

    name: str
    points: int
    amount_min_paisa: int | None = None
    amount_max_paisa: int | None = None
    payment_methods: frozenset[str] = frozenset()
    ip_networks: tuple[IpNetwork, ...] = ()
    merchant_categories: frozenset[str] = frozenset()
    # Hours of the day in IST, [from, to); from > to wraps past midnight.
    hour_ist_from: int | None = None
    hour_ist_to: int | None = None

    def matches(self, txn: Transaction) -> bool:
        if self.amount_min_paisa is not None and txn.amount_paisa < self.amount_min_paisa:
            return False
        if self.amount_max_paisa is not None and txn.amount_paisa > self.amount_max_paisa:
            return False
        if self.payment_methods and txn.payment_method.upper() not in self.payment_methods:
            return False
        if self.ip_networks and not _in_networks(txn.ip_address, self.ip_networks):
            return False
        if self.merchant_categories and txn.merchant_category not in self.merchant_categories:
            return False
        if self.hour_ist_from is not None and self.hour_ist_to is not None:
            hour = txn.occurred_at.astimezone(IST).hour
            start, end = self.hour_ist_from, self.hour_ist_to
            inside = start <= hour < end if start <= end else hour >= start or hour < end
            if not inside:
                return False
        return True


@dataclass(frozen=True)
class VelocityLimit:
    """A signal when an entity's count or amount in a window exceeds the maximum."""

    name: str
    entity: str
    window: str
    points: int
    max_count: int | None = None
    max_amount_paisa: int | None = None


@dataclass(frozen=True)
class DeviceLimits:
    new_device_for_user_points: int = 0
    # Remember a user's devices this long (a device unseen that long is new again).
    user_device_memory_days: int = 90
    max_users_per_device_24h: int | None = None
    many_users_points: int = 0
    max_cards_per_device_24h: int | None = None
    many_cards_points: int = 0
    max_ips_per_device_24h: int | None = None
    many_ips_points: int = 0


@dataclass(frozen=True)
class RuleSet:
    block: Lists = field(default_factory=Lists)
    allow: Lists = field(default_factory=Lists)
    rules: tuple[Rule, ...] = ()
    velocity: tuple[VelocityLimit, ...] = ()
    device: DeviceLimits = field(default_factory=DeviceLimits)

    def list_signals(self, txn: Transaction, max_score: int) -> list[Signal]:
        """Block-list hits (worth the whole score) and allow-list hits (worth nothing)."""
        signals = [
            Signal(f"{BLOCKLIST_PREFIX}{kind}", max_score, f"{kind} is on the block list")
            for kind in self.block.hits(txn)
        ]
        signals += [
            Signal(f"{ALLOWLIST_PREFIX}{kind}", 0, f"{kind} is on the allow list")
            for kind in self.allow.hits(txn)
        ]
        return signals

    def rule_signals(self, txn: Transaction) -> list[Signal]:
        return [
            Signal(f"rule:{rule.name}", rule.points, "matched rule " + rule.name)
            for rule in self.rules
            if rule.matches(txn)
        ]


def _in_networks(address: str, networks: Iterable[IpNetwork]) -> bool:
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return False
    return any(ip in net for net in networks if net.version == ip.version)


# Parsing --------------------------------------------------------------------------------------


def load_rules(path: Path) -> RuleSet:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RulesError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RulesError(f"{path}: not valid YAML: {exc}") from None
    return parse_rules(raw, str(path))


def parse_rules(raw: Any, source: str = "rules") -> RuleSet:
    top = _mapping(raw, source, {"lists", "rules", "velocity", "device"})
    lists = _mapping(top.get("lists") or {}, f"{source}: lists", {"block", "allow"})
    return RuleSet(
        block=_parse_lists(lists.get("block") or {}, f"{source}: lists.block"),
        allow=_parse_lists(lists.get("allow") or {}, f"{source}: lists.allow"),
        rules=_unique(
            [
                _parse_rule(r, f"{source}: rules[{i}]")
                for i, r in enumerate(_sequence(top.get("rules") or [], f"{source}: rules"))
            ],
            f"{source}: rules",
        ),
        velocity=_unique(
            [
                _parse_velocity(v, f"{source}: velocity[{i}]")
                for i, v in enumerate(_sequence(top.get("velocity") or [], f"{source}: velocity"))
            ],
            f"{source}: velocity",
        ),
        device=_parse_device(top.get("device") or {}, f"{source}: device"),
    )


def _parse_lists(raw: Any, where: str) -> Lists:
    spec = _mapping(raw, where, set(LIST_FIELDS))
    values: dict[str, frozenset[str]] = {}
    networks: list[IpNetwork] = []
    for kind in LIST_FIELDS:
        items = [
            _string(v, f"{where}.{kind}[{i}]")
            for i, v in enumerate(_sequence(spec.get(kind) or [], f"{where}.{kind}"))
        ]
        if kind == "ip":
            networks = [_network(v, f"{where}.ip") for v in items]
        else:
            values[kind] = frozenset(v.strip().lower() for v in items)
    return Lists(values, tuple(networks))


def _parse_rule(raw: Any, where: str) -> Rule:
    spec = _mapping(raw, where, {"name", "points", "when"})
    name = _string(spec.get("name"), f"{where}.name")
    where = f"{where} ({name})"
    when = _mapping(
        spec.get("when") or {},
        f"{where}.when",
        {
            "amount_min_paisa",
            "amount_max_paisa",
            "payment_methods",
            "ip_cidrs",
            "merchant_categories",
            "hour_ist_from",
            "hour_ist_to",
        },
    )
    if not when:
        raise RulesError(f"{where}: needs at least one condition under 'when'")
    methods = frozenset(
        _string(m, f"{where}.when.payment_methods").upper()
        for m in _sequence(when.get("payment_methods") or [], f"{where}.when.payment_methods")
    )
    unknown = methods - PAYMENT_METHODS
    if unknown:
        raise RulesError(
            f"{where}: unknown payment method(s) {sorted(unknown)}; use {sorted(PAYMENT_METHODS)}"
        )
    hour_from = _optional_int(when.get("hour_ist_from"), f"{where}.when.hour_ist_from", 0, 23)
    hour_to = _optional_int(when.get("hour_ist_to"), f"{where}.when.hour_ist_to", 0, 24)
    if (hour_from is None) != (hour_to is None):
        raise RulesError(f"{where}: hour_ist_from and hour_ist_to go together")
    amount_min = _optional_int(when.get("amount_min_paisa"), f"{where}.when.amount_min_paisa", 0)
    amount_max = _optional_int(when.get("amount_max_paisa"), f"{where}.when.amount_max_paisa", 0)
    if amount_min is not None and amount_max is not None and amount_min > amount_max:
        raise RulesError(f"{where}: amount_min_paisa exceeds amount_max_paisa")
    return Rule(
        name=name,
        points=_int(spec.get("points"), f"{where}.points", 0),
        amount_min_paisa=amount_min,
        amount_max_paisa=amount_max,
        payment_methods=methods,
        ip_networks=tuple(
            _network(_string(c, f"{where}.when.ip_cidrs"), f"{where}.when.ip_cidrs")
            for c in _sequence(when.get("ip_cidrs") or [], f"{where}.when.ip_cidrs")
        ),
        merchant_categories=frozenset(
            _string(str(c) if isinstance(c, int) else c, f"{where}.when.merchant_categories")
            for c in _sequence(
                when.get("merchant_categories") or [], f"{where}.when.merchant_categories"
            )
        ),
        hour_ist_from=hour_from,
        hour_ist_to=hour_to,
    )


def _parse_velocity(raw: Any, where: str) -> VelocityLimit:
    spec = _mapping(
        raw, where, {"name", "entity", "window", "points", "max_count", "max_amount_paisa"}
    )
    entity = _string(spec.get("entity"), f"{where}.entity")
    if entity not in ENTITIES:
        raise RulesError(f"{where}.entity: {entity!r} is not one of {list(ENTITIES)}")
    window = _string(spec.get("window"), f"{where}.window")
    if window not in WINDOWS:
        raise RulesError(f"{where}.window: {window!r} is not one of {list(WINDOWS)}")
    max_count = _optional_int(spec.get("max_count"), f"{where}.max_count", 0)
    max_amount = _optional_int(spec.get("max_amount_paisa"), f"{where}.max_amount_paisa", 0)
    if (max_count is None) == (max_amount is None):
        raise RulesError(f"{where}: set exactly one of max_count and max_amount_paisa")
    default_name = f"velocity_{entity}_{window}" + ("_amount" if max_amount is not None else "")
    name = spec.get("name", default_name)
    return VelocityLimit(
        name=_string(name, f"{where}.name"),
        entity=entity,
        window=window,
        points=_int(spec.get("points"), f"{where}.points", 0),
        max_count=max_count,
        max_amount_paisa=max_amount,
    )


def _parse_device(raw: Any, where: str) -> DeviceLimits:
    spec = _mapping(
        raw,
        where,
        {
            "new_device_for_user_points",
            "user_device_memory_days",
            "many_users",
            "many_cards",
            "many_ips",
        },
    )

    def threshold(key: str) -> tuple[int | None, int]:
        sub = _mapping(spec.get(key) or {}, f"{where}.{key}", {"max_24h", "points"})
        if not sub:
            return None, 0
        return (
            _int(sub.get("max_24h"), f"{where}.{key}.max_24h", 1),
            _int(sub.get("points"), f"{where}.{key}.points", 0),
        )

    users, users_points = threshold("many_users")
    cards, cards_points = threshold("many_cards")
    ips, ips_points = threshold("many_ips")
    return DeviceLimits(
        new_device_for_user_points=_int(
            spec.get("new_device_for_user_points", 0), f"{where}.new_device_for_user_points", 0
        ),
        user_device_memory_days=_int(
            spec.get("user_device_memory_days", 90), f"{where}.user_device_memory_days", 1
        ),
        max_users_per_device_24h=users,
        many_users_points=users_points,
        max_cards_per_device_24h=cards,
        many_cards_points=cards_points,
        max_ips_per_device_24h=ips,
        many_ips_points=ips_points,
    )


def _unique(items: list[_Named], where: str) -> tuple[_Named, ...]:
    seen: set[str] = set()
    for item in items:
        if item.name in seen:
            raise RulesError(f"{where}: name {item.name!r} is used twice")
        seen.add(item.name)
    return tuple(items)


def _mapping(raw: Any, where: str, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise RulesError(f"{where}: expected a mapping, got {type(raw).__name__}")
    unknown = set(map(str, raw)) - allowed
    if unknown:
        raise RulesError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
    return raw


def _sequence(raw: Any, where: str) -> list[Any]:
    if not isinstance(raw, list):
        raise RulesError(f"{where}: expected a list, got {type(raw).__name__}")
    return raw


def _string(raw: Any, where: str) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise RulesError(f"{where}: expected a non-empty string, got {raw!r}")
    return raw.strip()


def _int(raw: Any, where: str, minimum: int, maximum: int | None = None) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise RulesError(f"{where}: expected an integer, got {raw!r}")
    if raw < minimum or (maximum is not None and raw > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
        raise RulesError(f"{where}: {raw} must be {bound}")
    return raw


def _optional_int(raw: Any, where: str, minimum: int, maximum: int | None = None) -> int | None:
    return None if raw is None else _int(raw, where, minimum, maximum)


def _network(raw: str, where: str) -> IpNetwork:
    try:
        return ipaddress.ip_network(raw, strict=False)
    except ValueError:
        raise RulesError(f"{where}: {raw!r} is not an IP address or CIDR block") from None


# Hot reload -----------------------------------------------------------------------------------


class RulesFile:
    """The rules in force, re-read from `path` whenever the file changes.

    `current` is replaced in one assignment, so a request sees either the old or the new rule set
    and never a mix. A file that fails to load leaves the old rules in force and sets
    `last_error` (cleared by the next good load).
    """

    def __init__(self, path: Path, on_reload: Callable[[bool], None] | None = None) -> None:
        self.path = path
        self._on_reload = on_reload
        self._stamp = _stamp(path)
        # A bad file at start-up is fatal: there are no old rules to keep.
        self.current: RuleSet = load_rules(path)
        self.last_error: str | None = None

    def poll(self) -> bool:
        """Reload if the file changed since the last look; True when new rules took effect."""
        stamp = _stamp(self.path)
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            rules = load_rules(self.path)
        except RulesError as exc:
            self.last_error = str(exc)
            log.error("fraud rules refused, previous rules stay in force", error=str(exc))
            if self._on_reload:
                self._on_reload(False)
            return False
        self.current, self.last_error = rules, None
        log.info(
            "fraud rules reloaded",
            path=str(self.path),
            rules=len(rules.rules),
            velocity_limits=len(rules.velocity),
        )
        if self._on_reload:
            self._on_reload(True)
        return True

    async def watch(self, interval_seconds: float) -> None:
        """Poll forever (a ServiceApp background task)."""
        while True:
            await asyncio.sleep(interval_seconds)
            self.poll()


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size
