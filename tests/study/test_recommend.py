"""The safe recommendation (docs/design.md, Confirmation and back-off) on hand-made trial records: no Optuna, no training."""

from __future__ import annotations

import math

import pytest

from stabsearch.study.record import TrialRecord
from stabsearch.study.recommend import NothingToRecommend, major_spikes, probe_failed, recommend, rescue, survived

BASE = {"optimizer": "adam", "eps": 1e-8, "beta1": 0.9, "beta2": 0.999, "weight_decay": 0.0,
        "schedule": "constant", "warmup": 0.0}


def record(number: int, lr: float, *, verdict: str = "stable", score: float = -2.0, kind: str = "search",
           of: int | None = None, seed: int = 0, steps: int = 1000, spikes: tuple[dict, ...] = (),
           probe: bool = False, backoff: bool = False, rescue: bool = False, **params: float) -> TrialRecord:
    unstable = verdict in ("spiky", "diverged", "plateau")
    return TrialRecord(
        number=number, state="PRUNED" if unstable else "COMPLETE", verdict=verdict, score=score,
        final_loss=10**score, spikes=len(spikes), late_spikes=0, params={**BASE, "lr": lr, **params}, kind=kind,
        seed=seed, steps=steps, steps_run=steps, of=of, probe=probe, backoff=backoff, rescue=rescue, spike_events=spikes,
    )


def spike(step: int, size: float, recovered: bool = True) -> dict:
    return {"step": step, "peak_step": step + 5, "size": size, "before": 1e-3, "peak": 1e-3 * 10**size,
            "recovered": recovered, "recover_steps": 40 if recovered else None}


def confirmations(of: int, lr: float, first: int, spikes_on_first: tuple[dict, ...] = (), score: float = -2.0,
                  **kw) -> list[TrialRecord]:
    return [record(first + i, lr, kind="confirm", of=of, seed=1000 + i, steps=2000, score=score,
                   spikes=spikes_on_first if i == 0 else (), **kw) for i in range(3)]


def test_a_recovered_tenfold_jump_once_training_is_under_way_fails_confirmation():
    late_jump = record(1, 1e-2, kind="confirm", steps=2000, spikes=(spike(600, 1.4),))
    assert major_spikes(late_jump) == 1 and not survived([late_jump])
    early = record(2, 1e-2, kind="confirm", steps=2000, spikes=(spike(150, 2.0),))  # the first tenth: a transient
    small = record(3, 1e-2, kind="confirm", steps=2000, spikes=(spike(900, 0.6),))  # 4x: listed, not disqualifying
    assert survived([early, small])
    in_warmup = record(4, 1e-2, kind="confirm", steps=2000, spikes=(spike(300, 1.5),), warmup=0.2)
    assert major_spikes(in_warmup) == 0


def test_the_recommendation_skips_a_better_candidate_whose_loss_jumped_on_one_seed():
    search = [record(0, 3e-2, score=-3.0), record(1, 1e-2, score=-2.5), record(2, 1e-4, score=-0.5)]
    jumpy = confirmations(0, 3e-2, 10, spikes_on_first=(spike(800, 2.0),), score=-3.0)
    steady = confirmations(1, 1e-2, 20, score=-2.4)
    rec = recommend(search + jumpy + steady, "s")
    assert rec.evidence["trial"] == 1 and rec.evidence["spikes"] == 0 and rec.evidence["candidates_confirmed"] == 2
    # The candidate that failed is evidence of the edge: 3e-2 is unsafe, so 1e-2 backs off to 1e-2 / 3.
    assert rec.evidence["nearest_unstable_lr"] == pytest.approx(3e-2)
    assert rec.config.lr == pytest.approx(1e-2 / 3) and rec.evidence["backed_off_from"] == pytest.approx(1e-2)


def test_when_every_candidate_fails_the_most_promising_is_rescued_a_third_lower():
    search = [record(0, 3e-2, score=-3.0), record(1, 1e-2, score=-2.5)]
    worse = confirmations(0, 3e-2, 10, spikes_on_first=(spike(800, 2.0),), score=-1.0)
    better = confirmations(1, 1e-2, 20, spikes_on_first=(spike(900, 1.5),), score=-2.0)
    found = rescue(search + worse + better, 3.0)
    assert found is not None and found.source.number == 1 and found.config.lr == pytest.approx(1e-2 / 3)
    rescued = confirmations(1, 1e-2 / 3, 30, score=-2.2, rescue=True)
    assert rescue(search + worse + better + rescued, 3.0) is None  # a survivor: no more rescue
    rec = recommend(search + worse + better + rescued, "s")
    assert rec.evidence["rescued_from"] == pytest.approx(1e-2) and rec.evidence["trial"] == 1
    assert rec.evidence["nearest_unstable_lr"] == pytest.approx(1e-2)
    assert rec.config.lr == pytest.approx(1e-2 / 9)  # 3x below the bracket [1e-2 / 3 passed, 1e-2 failed]


def test_backs_off_three_times_below_the_lowest_learning_rate_that_failed():
    search = [record(0, 1e-2, score=-3.0), record(1, 2e-2, verdict="diverged", score=1.0),
              record(2, 0.5, verdict="diverged", score=1.0, eps=1e-3)]  # eps two decades away: not the same cliff
    runs = confirmations(0, 1e-2, 10, score=-2.9)
    rec = recommend(search + runs, "s")
    assert rec.evidence["nearest_unstable_lr"] == pytest.approx(2e-2)
    assert rec.config.lr == pytest.approx(1e-2 / 3) and rec.evidence["at_cliff"] is True
    assert rec.evidence["backed_off_from"] == pytest.approx(1e-2)
    assert rec.evidence["margin_decades"] == pytest.approx(math.log10(2e-2 / (1e-2 / 3)), abs=1e-3)


def test_a_passed_edge_probe_proves_margin_and_a_failed_one_is_the_edge():
    search = [record(0, 1e-2, score=-3.0)]
    runs = confirmations(0, 1e-2, 10, score=-2.9)
    passed = confirmations(0, 1.73e-2, 20, score=-2.8, probe=True)
    failed = confirmations(0, 3e-2, 30, spikes_on_first=(spike(700, 1.2),), score=-2.8, probe=True)
    rec = recommend(search + runs + passed + failed, "s")
    assert rec.evidence["edge_probes"] == {"0.0173": "passed", "0.03": "failed"}
    assert rec.config.lr == pytest.approx(1.73e-2 / 3)  # 3x below the bottom of the pass/fail bracket


def test_no_candidate_survives_means_nothing_to_recommend():
    search = [record(0, 3e-2, score=-3.0)]
    jumpy = confirmations(0, 3e-2, 10, spikes_on_first=(spike(800, 2.0),))
    with pytest.raises(NothingToRecommend, match="none of the 1 best configurations survived confirmation"):
        recommend(search + jumpy, "s")


def test_a_study_whose_trials_all_diverged_says_so():
    search = [record(i, 10.0 ** -i, verdict="diverged", score=1.0) for i in range(3)]
    with pytest.raises(NothingToRecommend, match=r"none of its 3 trials trained stably \(3 diverged\)"):
        recommend(search, "s")


def test_a_slow_trial_is_no_edge_evidence():
    # Learning too slowly is no cliff: neither a slow search trial nor a slow edge probe brackets the edge.
    search = [record(0, 1e-2, score=-3.0), record(1, 3e-2, verdict="slow", score=-0.4),
              record(2, 1e-1, verdict="plateau", score=0.3)]
    rec = recommend(search, "s")
    assert rec.evidence["trial"] == 0 and rec.evidence["nearest_unstable_lr"] == pytest.approx(1e-1)
    assert rec.config.lr == pytest.approx(1e-2 / 3) and rec.evidence["unstable_trials"] == 1
    runs = confirmations(0, 1e-2, 10, score=-2.9)
    slow_probe = confirmations(0, 3e-2, 20, verdict="slow", score=-2.6, probe=True)
    assert not probe_failed(slow_probe, reference=-2.9)
    rec = recommend(search + runs + slow_probe, "s")
    assert rec.evidence["edge_probes"] == {"0.03": "passed"}
    assert rec.evidence["nearest_unstable_lr"] == pytest.approx(1e-1)
    assert rec.config.lr == pytest.approx(3e-2 / 3)  # 3x below the passed probe; a failed one would give 1e-2 / 3
    # A confirmation run that learned slowly on a new seed did not go unstable either.
    assert survived(confirmations(0, 1e-2, 30, verdict="slow", score=-1.0))


def test_a_slow_trial_is_no_candidate_ahead_of_a_stable_one():
    search = [record(0, 1e-5, verdict="slow", score=-4.0), record(1, 1e-2, score=-3.0)]
    rec = recommend(search, "s")
    assert rec.evidence["trial"] == 1 and rec.evidence["stable_trials"] == 1
    with pytest.raises(NothingToRecommend, match=r"none of its 2 trials trained stably \(2 slow\)"):
        recommend([record(0, 1e-6, verdict="slow", score=-0.1), record(1, 1e-5, verdict="slow", score=-0.2)], "s")


def test_a_probe_belongs_to_the_candidate_whose_settings_it_shares():
    # A population probes every candidate. Candidate 0 is chosen; candidate 1 (eps two decades away) failed its
    # probe at 2e-2 and passed one at 1.5e-2: neither is evidence about candidate 0's edge.
    search = [record(0, 1e-2, score=-3.0), record(1, 5e-3, score=-2.8, eps=1e-6)]
    chosen = confirmations(0, 1e-2, 10, score=-2.9)
    other = confirmations(1, 5e-3, 20, score=-2.7, eps=1e-6)
    other_failed = confirmations(1, 2e-2, 30, spikes_on_first=(spike(700, 1.2),), probe=True, eps=1e-6)
    other_passed = confirmations(1, 1.5e-2, 40, score=-2.7, probe=True, eps=1e-6)
    rec = recommend(search + chosen + other + other_failed + other_passed, "s")
    assert rec.evidence["trial"] == 0 and rec.evidence["edge_probes"] == {}
    assert rec.evidence["nearest_unstable_lr"] is None and rec.config.lr == pytest.approx(1e-2)
    # At similar eps and beta2 a failed probe of another candidate marks the cliff, as its search trial would;
    # its passed probe still proves nothing about this candidate.
    near_failed = confirmations(1, 2e-2, 30, spikes_on_first=(spike(700, 1.2),), probe=True, eps=2e-8)
    near_passed = confirmations(1, 1.5e-2, 40, score=-2.7, probe=True, eps=2e-8)
    rec = recommend(search + chosen + other + near_failed + near_passed, "s")
    assert rec.evidence["nearest_unstable_lr"] == pytest.approx(2e-2) and rec.evidence["edge_probes"] == {}
    assert rec.config.lr == pytest.approx(1e-2 / 3)  # 3x below its own 1e-2; the other's pass would give 1.5e-2 / 3


def test_candidates_tied_at_the_floor_go_to_the_lower_learning_rate():
    # Worst scores 2e-4 decades apart are the same result; the higher learning rate is nearer the cliff.
    search = [record(0, 3e-2, score=-3.0139), record(1, 4e-3, score=-3.0138)]
    deep = confirmations(0, 3e-2, 10, score=-3.0139)
    calm = confirmations(1, 4e-3, 20, score=-3.0137)
    rec = recommend(search + deep + calm, "s")
    assert rec.evidence["trial"] == 1 and rec.config.lr == pytest.approx(4e-3)
    assert recommend(search, "s").evidence["trial"] == 1  # unconfirmed: the best stable search trial, the same way
    # a tenth of a decade is no tie
    assert recommend(search + deep + confirmations(1, 4e-3, 20, score=-2.9), "s").evidence["trial"] == 0
