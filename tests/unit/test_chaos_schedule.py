"""The chaos run's plan comes from its seed alone: the same seed, the same faults in the same
order with the same holds, and the same journeys; one fault at a time, each within bounds."""

from __future__ import annotations

import itertools

from chaos.schedule import CATALOGUE, Journey, Timing, plan_faults, plan_journeys


def test_the_same_seed_plans_the_same_run_and_another_seed_another() -> None:
    assert plan_faults(7, 300) == plan_faults(7, 300)
    assert plan_journeys(7, 500) == plan_journeys(7, 500)
    assert [p.fault for p in plan_faults(7, 300)] != [p.fault for p in plan_faults(8, 300)]
    assert plan_journeys(7, 50) != plan_journeys(8, 50)


def test_every_fault_of_the_catalogue_fits_in_the_ci_run() -> None:
    timing = Timing()
    needed = timing.lead_in + len(CATALOGUE) * timing.slot_max
    for seed in range(20):
        planned = plan_faults(seed, needed)
        assert {p.fault for p in planned[: len(CATALOGUE)]} == set(CATALOGUE), seed


def test_faults_come_one_at_a_time_within_their_bounds_and_the_duration() -> None:
    timing = Timing()
    planned = plan_faults(3, 900, timing)
    assert len(planned) > len(CATALOGUE)  # a long run goes round the catalogue again
    for earlier, later in itertools.pairwise(planned):
        gap = timing.restart + timing.recover
        assert later.start >= earlier.start + earlier.hold + gap - 0.1
    for fault in planned:
        assert timing.hold_min <= fault.hold <= timing.hold_max
        assert fault.start + fault.hold <= 900
    assert planned[0].start == timing.lead_in


def test_a_short_run_plans_only_what_fits() -> None:
    assert plan_faults(1, Timing().lead_in) == []
    assert len(plan_faults(1, 40)) < len(CATALOGUE)


def test_the_journey_mix_covers_every_method_with_amounts_and_refunds_in_range() -> None:
    plans = plan_journeys(11, 400)
    assert {p.journey for p in plans} == set(Journey)
    assert [p.index for p in plans] == list(range(400))
    for plan in plans:
        assert 100 <= plan.amount_paisa <= 4_000_000
        assert 0 <= plan.refund_paisa <= plan.amount_paisa
    assert any(p.refund_paisa for p in plans)
    assert any(not p.refund_paisa for p in plans)
