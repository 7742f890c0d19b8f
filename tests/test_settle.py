"""The request rules of algorithms.request as a pure function: what settle() makes of a
request's tentative outcomes (the stores' behaviour suites check the same rules end to end)."""

from __future__ import annotations

import dataclasses

from ratelimitd.algorithms import Hit, Outcome, keeps_charge, probes, settle
from tests.stores import limit

PLAIN = limit("fixed_window", 5)
OVERDRAFT = dataclasses.replace(PLAIN, overdraft=3)
# What each hit's counter reads at cost 0 before the request, by hit index.
UNTOUCHED = [Outcome(True, 40 + i, 1000 + i) for i in range(4)]


def test_an_admitted_request_gets_its_tentative_outcomes() -> None:
    hits = [Hit("a", PLAIN, 1), Hit("b", OVERDRAFT, 2)]
    tentative = [Outcome(True, 4, 10), Outcome(True, 3, 20)]
    outcomes, rejected = settle(hits, tentative, _never)
    assert (outcomes, rejected) == (tentative, False)


def test_a_rejected_shadow_hit_rejects_nothing() -> None:
    hits = [Hit("a", PLAIN, 1), Hit("b", PLAIN, 9, shadow=True)]
    tentative = [Outcome(True, 4, 10), Outcome(False, 5, 30)]
    assert settle(hits, tentative, _never) == (tentative, False)


def test_a_rejected_request_reports_untouched_counters_and_keeps_overdraft_charges() -> None:
    hits = [
        Hit("a", PLAIN, 1),  # admitted on its own: the untouched counter, its reset
        Hit("b", PLAIN, 9),  # the rejection: the untouched remaining, its own retry time
        Hit("c", OVERDRAFT, 2),  # charged whatever happens: its tentative outcome
        Hit("d", OVERDRAFT, 9),  # charged past its limit: its tentative outcome
    ]
    tentative = [Outcome(True, 4, 10), Outcome(False, 5, 30), Outcome(True, 2, 40)]
    tentative.append(Outcome(False, 0, 50))
    outcomes, rejected = settle(hits, tentative, UNTOUCHED.__getitem__)
    assert rejected
    assert outcomes == [Outcome(True, 40, 1000), Outcome(False, 41, 30), *tentative[2:]]
    # Settled outcomes settle to themselves (the cluster store settles parts a slot settled).
    assert settle(hits, outcomes, UNTOUCHED.__getitem__) == (outcomes, True)


def test_only_overdraft_charges_survive_a_rejection() -> None:
    assert keeps_charge(Hit("a", PLAIN, 1), rejected=False)
    assert keeps_charge(Hit("a", OVERDRAFT, 1), rejected=True)
    assert not keeps_charge(Hit("a", PLAIN, 1), rejected=True)


def test_probes_read_at_no_cost_and_never_reject() -> None:
    hits = [Hit("a", PLAIN, 3), Hit("b", OVERDRAFT, 0, shadow=True)]
    assert probes(hits) == [Hit("a", PLAIN, 0, True), Hit("b", OVERDRAFT, 0, True)]


def _never(i: int) -> Outcome:
    raise AssertionError(f"an admitted request read hit {i}'s untouched counter")
