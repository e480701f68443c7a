"""The stability rules (divergence, plateau, spikes, the score, the verdict) on small hand-made curves."""

from __future__ import annotations

import doctest
import json
import math

import numpy as np
import pytest

from stabsearch.analysis import curve, divergence, objective, options, plateau, spikes, verdict
from stabsearch.analysis.curve import final_loss, first_loss, log_noise
from stabsearch.analysis.divergence import divergence_noise, divergence_step, reference_loss
from stabsearch.analysis.objective import capped_score, score
from stabsearch.analysis.options import StabilityOptions
from stabsearch.analysis.plateau import is_plateau, log_trend, still_falling
from stabsearch.analysis.spikes import Spike, find_relapses, find_spikes
from stabsearch.analysis.verdict import Analysis, analyze

L0 = 2.3


def decay(n: int = 2000, *, sigma: float = 0.0, seed: int = 0, tau: float = 200.0) -> np.ndarray:
    """A training curve from 2.3 down to 0.05, with optional lognormal noise."""
    t = np.arange(n)
    curve = L0 * np.exp(-t / tau) + 0.05
    if sigma:
        curve = curve * np.random.default_rng(seed).lognormal(0.0, sigma, n)
    return curve


def with_spike(curve: np.ndarray, at: int, factor: float, length: int = 1) -> np.ndarray:
    """Multiply ``length`` values from ``at`` by a factor decaying geometrically to 1."""
    out = curve.copy()
    k = np.arange(length)
    out[at : at + length] *= factor ** (1 - k / length)
    return out


# --------------------------------------------------------------------------- no false alarms


def test_heavy_multiplicative_noise_is_not_a_spike():
    curve = decay(3000, sigma=0.3, tau=100)
    result = analyze(curve)
    assert result.spikes == ()
    assert result.verdict == "stable"
    for seed in range(1, 20):
        assert find_spikes(decay(3000, sigma=0.3, seed=seed, tau=100), initial=L0) == []


def test_wiggles_near_zero_are_not_spikes_thanks_to_the_absolute_floor():
    rng = np.random.default_rng(0)
    converge = np.geomspace(L0, 1e-10, 200)
    t = np.arange(3000)
    drift = 10.0 ** (-10.5 + 1.3 * np.sin(t / 300)) * rng.lognormal(0.0, 0.05, t.size)
    jumps = t[(t % 250 == 0) & (drift < 3e-11)]
    drift[jumps] = 1e-9  # 30x to 1000x jumps, but tiny in absolute terms
    curve = np.concatenate([converge, drift])
    assert 1e-12 < curve[200:].min() and curve[200:].max() <= 1e-9 and jumps.size >= 3
    result = analyze(curve)
    assert result.spikes == ()
    assert result.verdict == "stable"
    # The relative rule alone would fire: the absolute floor is what stops it.
    assert find_spikes(curve, initial=L0, options=StabilityOptions(abs_rise=0.0))


def test_constant_curve_has_no_spikes_and_a_plain_score():
    curve = np.full(500, 0.7)
    result = analyze(curve)
    assert result.spikes == ()
    assert (result.verdict, result.cause) == ("plateau", "no_progress")  # it never trained
    assert result.final_loss == result.best_loss == result.initial_loss == 0.7
    assert result.score == pytest.approx(math.log10(0.7 + 1e-3 * 0.7))


# --------------------------------------------------------------------------- spikes


def test_late_spike_that_recovers():
    curve = with_spike(decay(2000, sigma=0.05), at=1500, factor=100.0, length=10)
    result = analyze(curve)
    assert result.verdict == "spiky"
    assert result.late_spikes == 1 and result.unrecovered == 0
    (spike,) = result.spikes
    assert spike.step == 1500 and spike.peak_step == 1500
    assert spike.size == pytest.approx(2.0, abs=0.1)  # log10(100)
    assert spike.recovered is True
    assert spike.recover_steps == 10
    assert spike.before == pytest.approx(0.05, rel=0.1)


def test_reported_steps_come_from_the_steps_array():
    curve = with_spike(decay(2000, sigma=0.05), at=1500, factor=100.0, length=10)
    result = analyze(curve, steps=np.arange(2000) * 10)
    (spike,) = result.spikes
    assert (spike.step, spike.peak_step, spike.recover_steps) == (15000, 15000, 100)
    assert result.late_spikes == 1


def test_late_spike_that_never_recovers():
    curve = decay(2000, sigma=0.05)
    curve[1500:] *= 10.0  # jumps to 0.5 and stays there (still below L0: not divergence)
    result = analyze(curve)
    assert result.diverged_at is None
    assert result.verdict == "spiky"
    (spike,) = result.spikes
    assert spike.step == 1500
    assert spike.recovered is False and spike.recover_steps is None
    assert result.unrecovered == 1


def test_a_lucky_minibatch_on_a_raised_plateau_is_not_a_recovery():
    curve = decay(2000, sigma=0.02)
    curve[1500:] *= 10.0
    curve[1700] = 0.05  # one value back at the old level
    (spike,) = find_spikes(curve, initial=L0)
    assert spike.recovered is False


def test_flags_closer_than_the_window_merge_into_one_event():
    curve = decay(2000, sigma=0.05)
    curve[1500] *= 50.0
    curve[1530] *= 100.0
    (spike,) = find_spikes(curve, initial=L0)
    assert spike.step == 1500
    assert spike.peak_step == 1530  # the peak is the largest value of the event
    assert spike.recovered is True and spike.recover_steps == 1
    # 300 steps apart they are two events.
    curve = decay(2000, sigma=0.05)
    curve[1500] *= 50.0
    curve[1800] *= 100.0
    assert [s.step for s in find_spikes(curve, initial=L0)] == [1500, 1800]


def test_early_recovered_spike_is_listed_but_does_not_make_the_run_spiky():
    curve = with_spike(decay(2000, sigma=0.05), at=600, factor=30.0, length=3)
    result = analyze(curve)
    assert [s.step for s in result.spikes] == [600]
    assert result.late_spikes == 0
    assert result.verdict == "stable"


def test_a_loss_bump_that_builds_over_tens_of_steps_is_a_relapse():
    # Adam's bump on a memorised training loss: the level climbs 100x over 120 steps, holds, and comes back.
    # Each value sits inside its trailing window's trend, so the z-score rule sees nothing; the level rule does.
    curve = decay(3000, sigma=0.4, tau=150) * 0.02  # down to ~1e-3, heavy mini-batch noise
    bump = np.ones(3000)
    bump[2000:2120] = np.geomspace(1.0, 100.0, 120)
    bump[2120:2200] = 100.0
    bump[2200:2320] = np.geomspace(100.0, 1.0, 120)
    curve = curve * bump
    assert find_spikes(curve, initial=curve[0]) == []
    (relapse,) = find_relapses(curve, initial=curve[0])
    assert 2000 < relapse.step < 2120 and relapse.size > 1.0 and relapse.recovered
    result = analyze(curve)
    assert result.verdict == "spiky" and result.late_spikes == 1


def test_a_slow_creep_and_a_bump_below_the_floor_are_not_relapses():
    creep = decay(3000) * np.where(np.arange(3000) >= 1500, 12.0 ** ((np.arange(3000) - 1500) / 1500), 1.0)
    assert find_relapses(creep, initial=creep[0]) == []  # 12x over 1500 steps: the late-rise term weighs it
    tiny = np.concatenate([np.geomspace(2.3, 1e-9, 500), np.full(100, 1e-6), np.full(400, 1e-9)])
    assert find_relapses(tiny, initial=2.3) == []  # 1000x, but from 1e-9 to 1e-6: under 1e-3 of L0


def test_a_relapse_covered_by_a_spike_is_one_event():
    curve = decay(2000, sigma=0.05)
    curve[1500:] *= 10.0
    assert len(find_relapses(curve, initial=curve[0])) == 1
    assert [s.step for s in analyze(curve).spikes] == [1500]


def test_spike_at_the_very_last_value():
    curve = decay(1000, sigma=0.05)
    curve[-1] *= 100.0
    result = analyze(curve)
    (spike,) = result.spikes
    assert spike.step == 999 and spike.peak_step == 999
    assert spike.recovered is False and spike.recover_steps is None
    assert result.verdict == "spiky"


def test_curve_shorter_than_the_window_uses_the_history_it_has():
    curve = decay(60, sigma=0.05, tau=300)
    curve[45] *= 50.0
    (spike,) = analyze(curve).spikes
    assert spike.step == 45
    # Too little history to judge anything: no spikes at all.
    short = np.array([2.3, 2.2, 2.0, 50.0, 1.9, 1.8])
    assert find_spikes(short, initial=2.3) == []


def test_non_finite_values_are_divergence_not_spikes():
    curve = decay(1000, sigma=0.05)
    curve[800] = np.inf
    assert find_spikes(curve, initial=L0) == []
    result = analyze(curve)
    assert result.diverged_at == 800 and result.spikes == ()


def test_zero_and_negative_losses_do_not_break_the_analysis():
    curve = np.concatenate([np.geomspace(1.0, 1e-6, 100), np.zeros(200), -np.full(50, 1e-9)])
    result = analyze(curve)
    assert result.verdict == "stable"
    assert math.isfinite(result.score)


def test_a_blow_up_after_a_fast_fall_of_many_decades_is_found():
    # The trailing window falls 4 decades: its log-MAD is the trend, not the noise. The scale is the MAD of
    # step-to-step changes, which a steady fall leaves at ~0.
    curve = np.geomspace(1.0, 1e-10, 400)
    curve[300:305] = 1e-2
    result = analyze(curve)
    (spike,) = result.spikes
    assert spike.step == 300 and spike.recovered is True
    assert result.verdict == "spiky"


def test_a_single_heavy_tailed_outlier_is_not_a_spike_but_a_lasting_one_is():
    curve = decay(3000, sigma=0.15, seed=3)
    lone = curve.copy()
    lone[2000] *= 10.0  # one mini-batch 10x off (z ~ 11), back at the next step: Student-t noise does this
    assert find_spikes(lone, initial=L0) == []
    assert analyze(lone).verdict == "stable"
    relaxing = with_spike(curve, at=2000, factor=10.0, length=3)  # 10x, 4.6x, 2.2x: it lasts
    assert [s.step for s in find_spikes(relaxing, initial=L0)] == [2000]
    assert analyze(relaxing).verdict == "spiky"
    # One step far too big for mini-batch noise still counts on its own (z above z_single).
    huge = curve.copy()
    huge[2000] *= 1e3
    assert [s.step for s in find_spikes(huge, initial=L0)] == [2000]
    # Without the persistence rule the lone outlier would be flagged.
    assert find_spikes(lone, initial=L0, options=StabilityOptions(z_single=6.0))


def test_student_t_noise_makes_no_spikes():
    rng = np.random.default_rng(104)
    t = np.arange(3000)
    curve = (2.25 * np.exp(-t / 250) + 0.05) * np.exp(0.15 * rng.standard_t(3, t.size))
    assert analyze(curve).spikes == ()


def test_a_spike_rising_into_the_divergence_is_its_onset_not_a_spike():
    curve = decay(2000, sigma=0.05)
    curve[1500:1520] = curve[1499] * 10.0 ** np.arange(1, 21)  # 10x per step until it overflows
    curve[1520:] = np.inf
    result = analyze(curve)
    assert result.verdict == "diverged" and result.diverged_at is not None and 1500 <= result.diverged_at <= 1502
    assert result.spikes == ()


def test_find_spikes_on_100k_values_completes():
    curve = with_spike(decay(100_000, sigma=0.2, tau=5000), at=80_000, factor=100.0, length=20)
    spikes = find_spikes(curve, initial=L0)
    assert [s.step for s in spikes] == [80_000]


# --------------------------------------------------------------------------- divergence


def test_nan_at_step_k_is_divergence_at_k():
    curve = decay(1000)
    curve[437] = np.nan
    result = analyze(curve)
    assert result.verdict == "diverged"
    assert result.diverged_at == 437
    assert result.score == capped_score(result.initial_loss)
    assert math.isfinite(result.final_loss)  # the loss before it blew up


def test_five_values_above_the_initial_loss_diverge_four_do_not():
    curve = decay(2000)
    curve[500:505] = 3 * L0
    assert divergence_step(curve, initial=L0) == 500
    assert analyze(curve).diverged_at == 500
    curve = decay(2000)
    curve[500:504] = 3 * L0
    assert divergence_step(curve, initial=L0) is None
    result = analyze(curve)
    assert result.diverged_at is None
    assert result.verdict == "stable"  # an early spike that recovered


def test_values_above_the_initial_loss_during_warmup_are_not_divergence():
    curve = decay(2000)
    curve[10:60] = 3 * L0  # the loss rises while the learning rate warms up
    assert analyze(curve, warmup=100).diverged_at is None
    assert analyze(curve).diverged_at == 10
    # warmup is in the unit of `steps`.
    assert analyze(curve, steps=np.arange(2000) * 10, warmup=1000).diverged_at is None
    assert analyze(curve, steps=np.arange(2000) * 10, warmup=500).diverged_at == 500


def test_an_explosion_during_warmup_is_divergence_at_once():
    curve = decay(2000)
    curve[30:] = 12 * L0  # blown up while the learning rate still warms up: no reason to wait for its end
    assert analyze(curve, warmup=500).diverged_at == 30
    curve[30:] = 8 * L0  # high, but a warmup may do that: judged once the warmup is over
    assert analyze(curve, warmup=500).diverged_at == 500


def test_noise_around_the_starting_loss_is_not_divergence():
    rng = np.random.default_rng(0)
    curve = L0 * rng.lognormal(0.0, 0.03, 3000)  # a learning rate too small to move the loss
    assert analyze(curve).diverged_at is None
    # The bare rule (no noise margin) would call it diverged.
    assert divergence_step(curve, initial=reference_loss(curve), factor=1.0) is not None


def test_divergence_threshold_is_at_least_the_chance_loss():
    curve = np.concatenate([np.full(100, 1.0), np.full(50, 1.5)])
    assert divergence_step(curve, initial=1.0) == 100
    assert divergence_step(curve, initial=1.0, chance_loss=math.log(6)) is None


def test_heavy_noise_at_the_start_is_not_divergence():
    noisy_start = np.array([1.8, 1.25, 2.74, 2.85, 2.07, 2.53, 3.77, 3.09, 2.77, 2.75] + [1.0] * 990)
    result = analyze(noisy_start)
    assert result.diverged_at is None and result.verdict == "stable"
    # The bare threshold (1.2 * L0, no noise margin) reads values 5-9 as divergence.
    assert divergence_step(noisy_start, initial=reference_loss(noisy_start)) == 5
    for seed in range(20):
        assert analyze(decay(1500, sigma=0.4, seed=seed, tau=300)).diverged_at is None


def test_noisy_runs_that_do_diverge_are_still_caught():
    curve = decay(2000, sigma=0.3, seed=1)
    curve[1200:] = 4 * L0 * np.random.default_rng(2).lognormal(0.0, 0.3, 800)  # back above the start, and staying
    assert 1200 <= analyze(curve).diverged_at <= 1210
    # An explosion in the first values diverges at once, before the noise is known (20 values).
    explodes = np.array([2.3, 2.2, 2.1] + [230.0] * 5)
    assert analyze(explodes).diverged_at == 3
    # A plain rise to 3x the start within the first 20 values is judged once the noise is known.
    rises = decay(200)
    rises[10:60] = 3 * L0
    assert analyze(rises).diverged_at == 10
    assert analyze(rises[:15]).diverged_at is None  # too early to judge (short of an explosion)


def test_log_noise_is_the_step_to_step_noise_and_ignores_trends():
    rng = np.random.default_rng(0)
    noise = rng.lognormal(0.0, 0.3, 2000)
    assert log_noise(noise) == pytest.approx(0.3, rel=0.1)
    assert log_noise(noise * np.geomspace(1.0, 1e-8, 2000)) == pytest.approx(log_noise(noise), rel=1e-6)
    assert log_noise(decay(1000)) < 1e-3
    assert log_noise([1.0, float("nan"), 1.0]) == 0.0


def test_divergence_checks_on_tails_agree_with_the_whole_curve():
    """What the trainer does (divergence_step on each new block plus the last run - 1 values, from the start
    while the first window is coming in, with divergence_noise from the first window only) finds what
    analyze finds on the whole curve."""
    rng = np.random.default_rng(5)
    opts = StabilityOptions()
    diverged = 0
    for trial in range(20):
        curve = decay(300, sigma=float(rng.choice([0.0, 0.1, 0.4])), seed=trial)
        if trial % 2:
            at = int(rng.integers(5, 280))
            curve[at:] *= float(rng.uniform(1.5, 40.0))
        whole = analyze(curve).diverged_at
        diverged += whole is not None
        noise = divergence_noise(curve, window=opts.window)
        head = curve[: opts.window]  # all the trainer needs for the noise
        assert np.array_equal(divergence_noise(head, window=opts.window, start=37, stop=250), noise[37:250])
        for block in (1, 16, 64):
            found, initial = None, math.inf
            for start in range(0, curve.size, block):
                stop = min(start + block, curve.size)
                if start < opts.head <= stop:
                    initial = reference_loss(curve[:stop], opts.head, opts.start_cap)
                lo = 0 if start <= opts.window else start - (opts.diverge_run - 1)
                step = divergence_step(curve[lo:stop], initial=initial, noise=noise[lo:stop], sigmas=opts.diverge_sigmas)
                if step is not None:
                    found = lo + step
                    break
            assert found == whole, (trial, block)
    assert 3 <= diverged <= 17


def test_divergence_noise_is_checked():
    with pytest.raises(ValueError, match="one number per loss"):
        divergence_step([1.0, 2.0, 3.0], initial=1.0, noise=[0.1, 0.2])
    with pytest.raises(ValueError, match="noise must be >= 0"):
        divergence_step([1.0, 2.0, 3.0], initial=1.0, noise=-0.1)
    with pytest.raises(ValueError, match="needs the first 10 values"):
        divergence_noise([1.0] * 5, window=10, stop=20)


def test_all_nan_curve():
    result = analyze([math.nan] * 50)
    assert result.verdict == "diverged"
    assert result.diverged_at == 0
    assert math.isnan(result.initial_loss) and math.isnan(result.final_loss)
    assert result.score == pytest.approx(math.log10(1.0 + 1e-3) + 1.0)  # L0 taken as 1.0
    assert json.dumps(result.to_dict(), allow_nan=False)


def test_non_finite_held_out_loss_means_diverged():
    result = analyze(decay(1000), final=math.inf)
    assert result.verdict == "diverged" and result.diverged_at == 999
    assert math.isfinite(result.score)


# --------------------------------------------------------------------------- plateau


def test_stuck_at_chance_is_a_plateau():
    rng = np.random.default_rng(0)
    chance = math.log(6)
    curve = np.concatenate([np.linspace(1.95, chance, 100), chance * rng.lognormal(0.0, 0.003, 900)])
    result = analyze(curve, chance_loss=chance)
    assert result.plateau and result.verdict == "plateau"
    assert is_plateau(curve, chance_loss=chance)
    assert analyze(curve).verdict == "stable"  # without a chance loss nothing to compare with
    assert not is_plateau(decay(1000), chance_loss=chance)


def test_dead_layer_makes_a_plateau_but_divergence_comes_first():
    assert analyze(decay(1000), dead_layer=True).verdict == "plateau"
    curve = decay(1000)
    curve[-1] = np.nan
    assert analyze(curve, dead_layer=True).verdict == "diverged"


# --------------------------------------------------------------------------- did it train: start, progress, chance, slow


def exploded(level: float, start: float, burst: list[float], n: int = 1000, sigma: float = 0.01, seed: int = 0) -> np.ndarray:
    """``start`` (the loss before the first update), the ``burst``, then ``level`` with lognormal noise."""
    rest = level * np.random.default_rng(seed).lognormal(0.0, sigma, n - 1 - len(burst))
    return np.r_[start, burst, rest]


def test_the_start_is_the_first_loss_even_when_the_next_values_explode():
    curve = exploded(27.8, 4.47, [49.0, 30.0, 28.4, 27.9])  # a GPT-2 at lr 0.62
    result = analyze(curve)
    assert result.initial_loss == first_loss(curve) == 4.47
    assert result.reference_loss == reference_loss(curve) == pytest.approx(2 * 4.47)  # capped at 2x the first
    assert (result.verdict, result.diverged_at) == ("diverged", 1)  # 6x its start, and staying there
    # A cap of 10x the first (the median of the exploded values, 28.4) hides that divergence.
    lifted = analyze(curve, options=StabilityOptions(start_cap=10.0))
    assert lifted.reference_loss == pytest.approx(28.4) and lifted.diverged_at is None
    assert (lifted.verdict, lifted.cause) == ("plateau", "rebound")  # still not stable: it never trained
    assert result.score == capped_score(4.47)  # the capped score is measured from the first loss too
    assert math.isnan(first_loss([math.nan, math.inf])) and first_loss([math.nan, 2.0, 1.0]) == 2.0


def test_a_run_that_ends_no_lower_than_it_started_did_not_train():
    rng = np.random.default_rng(1)
    flat = 2.3 * rng.lognormal(0.0, 0.01, 1000)
    flat[0] = 2.3
    assert (analyze(flat).verdict, analyze(flat).cause) == ("plateau", "no_progress")
    rising = np.linspace(2.3, 2.6, 1000) * rng.lognormal(0.0, 0.01, 1000)  # up 13%, under the divergence margin
    assert analyze(rising).diverged_at is None and analyze(rising).cause == "no_progress"
    # An explosion that falls back to the start: a classifier at lr 1 (2.32 -> 4324 -> 2.29-2.41).
    burst = exploded(2.34, 2.32, [4324.0, 2000.0, 700.0, 49.0, 3.6], sigma=0.012)
    result = analyze(burst)
    assert (result.verdict, result.cause, result.diverged_at) == ("plateau", "rebound", None)
    assert result.initial_loss == 2.32 and result.progress < 0.05
    # ... even when it ends a little (under 5%) below its start and is still creeping down.
    creeping = burst.copy()
    creeping[6:] *= np.linspace(1.0, 0.97, creeping.size - 6)
    assert analyze(creeping).cause == "rebound"
    # A run that explodes early and then trains far below its start is an early transient, not a collapse.
    recovered = np.r_[2.32, 400.0, 50.0, 2.3 * np.exp(-np.arange(997) / 200) + 0.05]
    assert analyze(recovered).verdict == "stable"


def test_the_chance_test_is_one_sided():
    chance = math.log(6)
    above = exploded(1.885, 1.86, [12.9, 4.2])  # collapsed: 1.85-1.92, 3-7% above ln 6
    assert is_plateau(above, chance_loss=chance)
    result = analyze(above, chance_loss=chance)
    assert (result.verdict, result.cause) == ("plateau", "chance")
    # The old two-sided band (within 2% of ln K over the last quarter) misses it.
    assert not np.all(np.abs(above[-250:] - chance) <= 0.02 * chance)
    # Without the chance loss, the no-progress rule still catches it: it ends above its start.
    assert (analyze(above).verdict, analyze(above).cause) == ("plateau", "no_progress")
    # A run that learns goes meaningfully below ln K and stays there ...
    learns = np.r_[np.linspace(1.86, 1.6, 200), 1.6 * np.random.default_rng(2).lognormal(0.0, 0.01, 800)]
    assert not is_plateau(learns, chance_loss=chance) and analyze(learns, chance_loss=chance).verdict == "stable"
    # ... and one still falling towards ln K from above is learning, not stuck.
    falling = np.linspace(2.6, 1.9, 1000) * np.random.default_rng(3).lognormal(0.0, 0.005, 1000)
    assert not is_plateau(falling, chance_loss=chance)


def test_slow_is_not_plateau_and_is_not_instability():
    rng = np.random.default_rng(4)
    digits = np.linspace(2.31, 2.28, 1000) * rng.lognormal(0.0, 0.005, 1000)  # lr 2.7e-5: 2.31 -> 2.28
    for chance in (None, math.log(10)):
        result = analyze(digits, chance_loss=chance)
        assert (result.verdict, result.cause, result.plateau) == ("slow", "too_slow", False)
        assert 0.0 < result.progress < 0.05
    assert still_falling(digits) and log_trend(digits[500:]) < -3
    # The same start without the fall is a plateau: flat, no lower than it started.
    assert analyze(np.full(1000, 2.31) * rng.lognormal(0.0, 0.005, 1000)).verdict == "plateau"
    # A run with real progress is stable even while still falling; a slow one with a late spike is spiky.
    assert analyze(np.linspace(2.31, 2.0, 1000)).verdict == "stable"
    spiked = with_spike(digits, at=800, factor=50.0, length=3)
    assert analyze(spiked).verdict == "spiky"  # a late 50x jump is a spike, not the early rebound of a collapse


def test_no_progress_within_heavy_noise_is_slow_not_a_collapse():
    # A noisy regression at lr 1e-3 for 40 steps (tests/modules/interrupt.py): the first loss is one draw
    # of a noise of 0.6 in log-loss, so ending 18% above it says nothing of a collapse.
    rng = np.random.default_rng(6)
    noisy = 1.5 * rng.lognormal(0.0, 0.6, 40)
    noisy[0] = 1.5
    result = analyze(noisy)
    assert result.progress <= 0.02 and (result.verdict, result.cause) == ("slow", "no_clear_progress")
    # The same shape with little noise is a run that did not train.
    quiet = 1.5 * rng.lognormal(0.0, 0.005, 40)
    quiet[0] = 1.45
    assert (analyze(quiet).verdict, analyze(quiet).cause) == ("plateau", "no_progress")


def test_the_trend_is_robust_to_one_wild_minibatch():
    rng = np.random.default_rng(5)
    flat = 2.3 * rng.lognormal(0.0, 0.01, 500)
    assert abs(log_trend(flat)) < 3
    wild = flat.copy()
    wild[-1] = 2.3e3  # one huge last value would make a least-squares fall into a rise
    assert abs(log_trend(wild)) < 3
    assert log_trend(np.geomspace(1.0, 0.5, 100)) < -1e6  # noise-free (but for rounding): a certain fall
    assert log_trend([1.0] * 5) == 0.0 and log_trend([1.0, 1.0 + 1e-9] * 50) == 0.0


# --------------------------------------------------------------------------- summaries


def test_initial_and_final_loss_are_robust_medians():
    assert reference_loss([math.nan, 9.0, 2.0, 2.1, 2.2, 2.3, 0.1]) == 2.2
    assert math.isnan(reference_loss([math.nan, math.inf]))
    curve = np.concatenate([decay(95), [0.5, 0.5, 50.0, 0.5, math.nan]])
    assert final_loss(curve) == 0.5  # last 5 values, finite ones
    assert final_loss([3.0]) == 3.0


def test_held_out_final_loss_replaces_the_curve_tail():
    curve = decay(1000)
    result = analyze(curve, final=0.2)
    assert result.final_loss == 0.2
    assert result.score == pytest.approx(math.log10(0.2 + 1e-3 * result.initial_loss))


# --------------------------------------------------------------------------- score


def test_lower_final_loss_scores_lower():
    assert analyze(decay(2000, tau=100)).score < analyze(decay(2000, tau=100) + 0.2).score


def test_spiky_run_scores_worse_than_the_same_run_without_the_spike():
    clean = decay(2000, sigma=0.05)
    spiky = with_spike(clean, at=1500, factor=100.0, length=10)
    assert analyze(spiky).score > analyze(clean).score + 1.5  # ~2 decades of spike
    stuck = clean.copy()
    stuck[1500:] *= 10.0
    assert analyze(stuck).score > analyze(clean).score + 1.0


def test_diverged_score_is_finite_and_worse_than_any_finished_run():
    family = [decay(2000, tau=tau) for tau in (50, 200, 800)]
    family.append(with_spike(family[0], at=1500, factor=30.0, length=5))
    raised = family[1].copy()
    raised[1200:] *= 20.0  # unrecovered and well above the best loss
    family.append(raised)
    worst_finished = max(analyze(c).score for c in family)
    diverged = decay(2000)
    diverged[1500] = np.nan
    capped = analyze(diverged).score
    assert math.isfinite(capped)
    assert capped > worst_finished - 1e-12
    assert capped == capped_score(first_loss(diverged))
    # Even a finished run with many unrecovered late spikes never beats diverging.
    bad = Spike(step=1500, peak_step=1500, size=3.0, before=0.05, peak=50.0, recovered=False, recover_steps=None)
    many = score(initial=L0, final=0.5, best=0.05, spikes=[bad] * 5, n=2000, diverged=False)
    assert many == capped_score(L0)


def test_floor_stops_chasing_tiny_losses():
    a = score(initial=L0, final=1e-12, best=1e-12, spikes=[], n=1000, diverged=False)
    b = score(initial=L0, final=1e-11, best=1e-11, spikes=[], n=1000, diverged=False)
    assert abs(a - b) < 1e-6
    assert score(initial=L0, final=0.01, best=0.01, spikes=[], n=1000, diverged=False) < score(
        initial=L0, final=0.1, best=0.1, spikes=[], n=1000, diverged=False
    ) - 0.5


def test_score_terms_follow_the_design_formula():
    late = Spike(step=600, peak_step=601, size=0.5, before=0.1, peak=0.3, recovered=True, recover_steps=3)
    early = Spike(step=100, peak_step=100, size=0.7, before=0.2, peak=1.0, recovered=False, recover_steps=None)
    value = score(initial=L0, final=0.3, best=0.1, spikes=[late, early], n=1000, diverged=False)
    floor = 1e-3 * L0
    rise = math.log10((0.3 + floor) / (0.1 + floor)) - math.log10(1.5)  # the rise is floored like the final loss
    expected = math.log10(0.3 + floor) + 0.5 + rise + 1.0
    assert value == pytest.approx(expected)
    # A drift far below the floor (1e-15 to 1e-10) is no late rise.
    assert score(initial=L0, final=1e-10, best=1e-15, spikes=[], n=1000, diverged=False) == pytest.approx(
        math.log10(1e-10 + floor)
    )
    # A final loss within 1.5x of the best costs nothing extra.
    assert score(initial=L0, final=0.14, best=0.1, spikes=[], n=1000, diverged=False) == pytest.approx(
        math.log10(0.14 + 1e-3 * L0)
    )
    assert score(initial=L0, final=0.3, best=0.1, spikes=[], n=1000, diverged=True) == capped_score(L0)


# --------------------------------------------------------------------------- options and arguments


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("window", 0, "StabilityOptions.window must be an integer >= 1; got 0"),
        ("head", 2.5, "StabilityOptions.head must be an integer >= 1; got 2.5"),
        ("smooth", True, "StabilityOptions.smooth must be an integer >= 1; got True"),
        ("z_threshold", -1.0, "StabilityOptions.z_threshold must be a finite number > 0; got -1.0"),
        ("mad_floor", 0.0, "StabilityOptions.mad_floor must be a finite number > 0; got 0.0"),
        ("final_fraction", 1.5, "StabilityOptions.final_fraction must be a finite number in (0, 1]; got 1.5"),
        ("plateau_fraction", 0.0, "StabilityOptions.plateau_fraction must be a finite number in (0, 1]; got 0.0"),
        ("rise_tolerance", 0.5, "StabilityOptions.rise_tolerance must be a finite number >= 1; got 0.5"),
        ("spike_weight", math.nan, "StabilityOptions.spike_weight must be a finite number >= 0; got nan"),
        ("diverge_factor", 0.9, "StabilityOptions.diverge_factor must be a finite number >= 1; got 0.9"),
        ("diverge_sigmas", -1.0, "StabilityOptions.diverge_sigmas must be a finite number >= 0; got -1.0"),
        ("z_single", 0.0, "StabilityOptions.z_single must be a finite number > 0; got 0.0"),
        ("start_cap", 0.5, "StabilityOptions.start_cap must be a finite number >= 1; got 0.5"),
        ("progress_tolerance", -0.1, "StabilityOptions.progress_tolerance must be a finite number in [0, 1]; got -0.1"),
        ("slow_progress", 1.5, "StabilityOptions.slow_progress must be a finite number in [0, 1]; got 1.5"),
        ("trend_sigmas", 0.0, "StabilityOptions.trend_sigmas must be a finite number > 0; got 0.0"),
        ("rebound_factor", 1.0, "StabilityOptions.rebound_factor must be a finite number > 1; got 1.0"),
        ("slow_progress", 0.01, "StabilityOptions.slow_progress must be >= progress_tolerance (0.02); got 0.01"),
    ],
)
def test_options_are_validated_with_a_message_naming_the_field(field, value, message):
    with pytest.raises(ValueError) as info:
        StabilityOptions(**{field: value})
    assert str(info.value) == message


def test_analyze_checks_its_arguments():
    with pytest.raises(ValueError, match="losses is empty"):
        analyze([])
    with pytest.raises(ValueError, match="steps has 3 values but losses has 4"):
        analyze([1.0, 1.0, 1.0, 1.0], steps=[0, 1, 2])
    with pytest.raises(ValueError, match="warmup must be an integer >= 0; got -1"):
        analyze([1.0, 1.0], warmup=-1)
    with pytest.raises(ValueError, match="chance_loss must be a finite number > 0; got 0"):
        analyze([1.0, 1.0], chance_loss=0)
    with pytest.raises(ValueError, match="steps must be strictly increasing"):
        analyze([1.0, 1.0, 1.0], steps=[0, 2, 2])
    with pytest.raises(ValueError, match="one-dimensional"):
        analyze(np.ones((3, 3)))
    with pytest.raises(TypeError, match="StabilityOptions"):
        analyze([1.0], options={"window": 10})


def test_options_change_the_analysis():
    curve = with_spike(decay(2000, sigma=0.05), at=1500, factor=100.0, length=10)
    assert analyze(curve, options=StabilityOptions(z_threshold=200.0)).spikes == ()
    heavier = analyze(curve, options=StabilityOptions(spike_weight=2.0)).score
    assert heavier > analyze(curve).score


# --------------------------------------------------------------------------- results


def test_to_dict_is_json_safe():
    curve = with_spike(decay(2000, sigma=0.05), at=1500, factor=100.0, length=10)
    curve[-1] = np.nan
    result = analyze(curve, chance_loss=math.log(10))
    data = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert data["verdict"] == "diverged" and data["diverged_at"] == 1999
    assert data["spikes"][0]["step"] == 1500 and data["spikes"][0]["recovered"] is True
    assert set(data) == {f.name for f in Analysis.__dataclass_fields__.values()}


def test_docstring_examples_run():
    results = {m.__name__: doctest.testmod(m, optionflags=doctest.ELLIPSIS)
               for m in (curve, divergence, objective, options, plateau, spikes, verdict)}
    assert all(r.attempted > 0 for r in results.values()), results
    assert sum(r.attempted for r in results.values()) > 5 and sum(r.failed for r in results.values()) == 0, results
