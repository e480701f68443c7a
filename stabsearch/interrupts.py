"""Ctrl-C and SIGTERM that never land in the middle of ending a trial.

Python raises ``KeyboardInterrupt`` wherever the main thread happens to be, so
a second Ctrl-C a few milliseconds after the first lands inside the cleanup
that was ending the interrupted trial, and leaves it RUNNING. While
:func:`handling` is active:

- SIGINT and SIGTERM both raise ``KeyboardInterrupt``, once: a signal that
  arrives while that interrupt is being handled is only recorded;
- inside :func:`deferred` (claiming a slot, telling a trial, re-queueing
  one) a signal is held and raised when the block ends.

Example::

    with handling():
        try:
            train()
        except KeyboardInterrupt:
            with deferred():
                end_the_trial()
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _State:
    active = False
    depth = 0  # nesting of deferred() blocks
    pending: int | None = None  # a signal held by deferred()
    raised = False  # a KeyboardInterrupt is already on its way: later signals are only recorded
    received: list[int] = []


def _handler(signum: int, _frame: object) -> None:
    _State.received.append(signum)
    if _State.raised:
        return
    if _State.depth:
        _State.pending = signum
        return
    _State.raised = True
    raise KeyboardInterrupt(signal.Signals(signum).name)


@contextmanager
def handling() -> Iterator[None]:
    """Install the handlers for the block (main thread only; elsewhere the block runs unchanged)."""
    if _State.active or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in _SIGNALS}
    _State.active, _State.depth, _State.pending, _State.raised, _State.received = True, 0, None, False, []
    for s in _SIGNALS:
        signal.signal(s, _handler)
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        _State.active = False


def interrupted() -> bool:
    """Whether a SIGINT or SIGTERM arrived while :func:`handling` was active."""
    return bool(_State.received)


@contextmanager
def deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM until the block ends, then raise the interrupt (if one came)."""
    _State.depth += 1
    try:
        yield
    finally:
        _State.depth -= 1
        if not _State.depth and _State.pending is not None and not _State.raised:
            signum, _State.pending = _State.pending, None
            _State.raised = True
            raise KeyboardInterrupt(signal.Signals(signum).name)


def shield() -> None:
    """After an interrupt was caught: any later signal is only recorded (the cleanup runs to its end)."""
    _State.raised = True
