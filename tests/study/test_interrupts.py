"""Signals that land inside a finalizer: Python swallows the interrupt there, stabsearch raises it later."""

from __future__ import annotations

import gc
import os
import signal
import sys
import weakref

import pytest

from stabsearch.study import interrupts


class _Object:
    pass


def _finalize_with(callback) -> None:
    """Run ``callback`` as the weakref callback of an object collected now."""
    obj = _Object()
    ref = weakref.ref(obj, lambda _ref: callback())
    del obj
    gc.collect()
    assert ref() is None


def test_an_interrupt_swallowed_by_a_finalizer_is_raised_at_the_next_check_and_prints_nothing(monkeypatch):
    seen = []
    monkeypatch.setattr(sys, "unraisablehook", seen.append)  # what Python would print as "Exception ignored"
    with interrupts.handling():
        _finalize_with(lambda: os.kill(os.getpid(), signal.SIGINT))  # the handler raises inside the callback
        with pytest.raises(KeyboardInterrupt):
            interrupts.check()
        _finalize_with(lambda: 1 / 0)  # any other error in a finalizer is still reported
    assert [type(info.exc_value) for info in seen] == [ZeroDivisionError]
    assert sys.unraisablehook == seen.append  # handed back when the block ends
