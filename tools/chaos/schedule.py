"""What the chaos run will do, decided up front from the seed: the faults in order with their
timing, and the mix of journeys. Pure and synchronous, so the same seed prints (and runs) the
same plan; only the real system's timing differs from one run to the next.

One fault at a time: each is injected at `start`, held for `hold` seconds, then healed, and the
next one waits until the stack has had `recover` seconds to find its feet again.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import StrEnum


class Action(StrEnum):
    KILL_SERVICE = "kill -9"  # SIGKILL a gRPC service, start it again at heal
    KILL_INFRA = "kill -9 + restart"  # SIGKILL PostgreSQL, Valkey, the broker or Envoy
    FREEZE = "hang"  # SIGSTOP (accepts connections, answers nothing), SIGCONT at heal


@dataclass(frozen=True)
class Fault:
    name: str  # what the schedule prints
    target: str  # the stack's name for the part
    action: Action


# Every fault of the catalogue. The sandbox is the outside world: killing it is every provider
# forgetting what it did (its books start empty), hanging it is every provider going silent.
CATALOGUE: tuple[Fault, ...] = (
    Fault("orchestrator killed", "orchestrator", Action.KILL_SERVICE),
    Fault("fraud killed", "fraud", Action.KILL_SERVICE),
    Fault("vault killed", "tokenization-vault", Action.KILL_SERVICE),
    Fault("webhook killed", "webhook", Action.KILL_SERVICE),
    Fault("reconciliation killed", "reconciliation", Action.KILL_SERVICE),
    Fault("sandbox killed", "sandbox", Action.KILL_SERVICE),
    Fault("ratelimit killed", "ratelimit", Action.KILL_SERVICE),
    Fault("PostgreSQL restarted", "postgres", Action.KILL_INFRA),
    Fault("broker restarted", "kafka", Action.KILL_INFRA),
    Fault("Valkey stopped", "redis", Action.KILL_INFRA),
    Fault("providers hang", "sandbox", Action.FREEZE),
    Fault("Envoy restarted", "envoy", Action.KILL_INFRA),
)
BY_NAME = {fault.name: fault for fault in CATALOGUE}


@dataclass(frozen=True)
class PlannedFault:
    fault: Fault
    start: float  # seconds from the start of the load
    hold: float  # seconds it stays injected


@dataclass(frozen=True)
class Timing:
    """Bounds the seed draws each fault's timing from, in seconds."""

    lead_in: float = 8.0  # load before the first fault
    hold_min: float = 3.0
    hold_max: float = 8.0
    restart: float = 4.0  # what a heal takes (a service's start-up), planned for
    recover: float = 5.0  # after a heal, before the next fault

    @property
    def slot_max(self) -> float:
        return self.hold_max + self.restart + self.recover


def plan_faults(
    seed: int, duration: float, timing: Timing = Timing(), catalogue: tuple[Fault, ...] = CATALOGUE
) -> list[PlannedFault]:
    """The faults that fit in `duration` seconds of load: the whole catalogue in a seeded
    order, then again in another order, and so on. Holds are drawn between the bounds. The
    runner keeps the recovery gap after each actual heal, so a slow restart pushes the next
    fault back, and the load goes on until the last planned fault has healed."""
    rng = random.Random(seed)  # noqa: S311 - reproducible, not secret
    planned: list[PlannedFault] = []
    at = timing.lead_in
    while True:
        order = list(catalogue)
        rng.shuffle(order)
        for fault in order:
            hold = round(rng.uniform(timing.hold_min, timing.hold_max), 1)
            if at + hold > duration:
                return planned
            planned.append(PlannedFault(fault, round(at, 1), hold))
            at += hold + timing.restart + timing.recover


class Journey(StrEnum):
    UPI = "UPI collect"
    CARD = "card, frictionless 3-D Secure"
    CARD_CHALLENGE = "card, 3-D Secure challenge"
    CARD_MANUAL = "card, manual capture"
    WALLET = "wallet"
    NET_BANKING = "net banking"


# Relative weights of the journey mix (each journey may end in a refund: REFUND_SHARE).
MIX: dict[Journey, int] = {
    Journey.UPI: 3,
    Journey.CARD: 2,
    Journey.CARD_CHALLENGE: 1,
    Journey.CARD_MANUAL: 1,
    Journey.WALLET: 2,
    Journey.NET_BANKING: 1,
}
REFUND_SHARE = 0.3
AMOUNT_RANGE = (100, 4_000_000)  # paisa: ₹1 to ₹40,000 (below the fraud review band)


@dataclass(frozen=True)
class JourneyPlan:
    index: int
    journey: Journey
    amount_paisa: int
    refund_paisa: int  # 0: no refund; else the amount to refund (partial or full)


def plan_journeys(seed: int, count: int) -> list[JourneyPlan]:
    """The first `count` journeys of the seed's load: which method, amount, refund."""
    rng = random.Random(f"journeys:{seed}")  # noqa: S311 - reproducible
    kinds = list(MIX)
    weights = [MIX[k] for k in kinds]
    plans = []
    for index in range(count):
        journey = rng.choices(kinds, weights)[0]
        amount = rng.randint(*AMOUNT_RANGE)
        refund = 0
        if rng.random() < REFUND_SHARE:
            refund = amount if rng.random() < 0.5 else rng.randint(1, amount)
        plans.append(JourneyPlan(index, journey, amount, refund))
    return plans
