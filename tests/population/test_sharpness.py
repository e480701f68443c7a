"""The population's sharpness probe is stabsearch's: asked for or not, failing or not, it never fails a member."""

from __future__ import annotations

import types

import numpy as np

from stabsearch.population import sharpness


def population(k: int):
    return types.SimpleNamespace(members=np.arange(k))


def test_not_asked_for_it_is_skipped_and_costs_nothing(monkeypatch):
    monkeypatch.setattr(sharpness, "_sharpness", lambda *a, **k: (_ for _ in ()).throw(AssertionError("ran")))
    probe = sharpness.probe_sharpness(population(3), [0, 1, 2], [None] * 3, [0] * 3, wanted=False)
    assert not probe.wanted and probe.check == "skipped: --no-early-warning" and probe.seconds == 0.0
    assert probe.values.shape == (3,) and np.isnan(probe.values).all()


def test_a_failing_probe_is_reported_on_one_line_not_raised(monkeypatch):
    def fails(*args, **kwargs):
        raise RuntimeError("double backward is not implemented\nfor this kernel")

    monkeypatch.setattr(sharpness, "_sharpness", fails)
    probe = sharpness.probe_sharpness(population(4), [1, 3], [None] * 2, [0] * 2, wanted=True)
    assert probe.wanted and probe.check == "failed: RuntimeError: double backward is not implemented"
    assert np.isnan(probe.values).all() and probe.seconds >= 0.0


def test_its_time_is_shared_among_the_members_probed(monkeypatch):
    monkeypatch.setattr(sharpness, "_sharpness", lambda p, r, b, s: np.array([1.0, 2.0]))
    monkeypatch.setattr(sharpness, "time", types.SimpleNamespace(perf_counter=iter([10.0, 18.0]).__next__))
    probe = sharpness.probe_sharpness(population(4), [1, 3], [None] * 2, [0] * 2, wanted=True)
    assert probe.check == "ran" and probe.values.tolist() == [1.0, 2.0] and probe.seconds == 4.0
