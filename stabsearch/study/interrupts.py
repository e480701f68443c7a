"""Ctrl-C and SIGTERM that never land in the middle of ending a trial.

Python raises ``KeyboardInterrupt`` wherever the main thread happens to be, so
a second Ctrl-C a few milliseconds after the first lands inside the cleanup
that was ending the interrupted trial, and leaves it RUNNING. While
:func:`handling` is active:

- SIGINT and SIGTERM both raise ``KeyboardInterrupt``; once the code that
  handles it has called :func:`shield`, later signals are only recorded;
- inside :func:`deferred` (claiming a slot, telling a trial, re-queueing
  one) a signal is held and raised when the block ends;
- :func:`check` raises one that was received but never handled (Python
  swallows an exception raised inside a weakref callback or ``__del__``), so
  loops that call it at safe points never lose a Ctrl-C; such a swallowed
  interrupt prints no "Exception ignored" traceback either.

Example::

    with handling():
        try:
            train()
        except KeyboardInterrupt:
            shield()
            with deferred():
                end_the_trial()
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _State:
    active = False
    depth = 0  # nesting of deferred() blocks
    shielded = False  # the interrupt is being handled: later signals are only recorded
    ignore_after = False  # the block ends with the signals ignored, not with the previous handlers
    received: list[int] = []
    unraisable_hook = staticmethod(sys.unraisablehook)  # the hook to hand other unraisable errors to


def _handler(signum: int, _frame: object) -> None:
    _State.received.append(signum)
    if not _State.shielded and not _State.depth:
        raise KeyboardInterrupt(signal.Signals(signum).name)


def _unraisable(info: "sys.UnraisableHookArgs") -> None:
    """An interrupt raised inside a finalizer is not an error to print: :func:`check` raises it again later."""
    if isinstance(info.exc_value, KeyboardInterrupt) and _State.received:
        return
    _State.unraisable_hook(info)


def check() -> None:
    """Raise ``KeyboardInterrupt`` if a signal came that nothing has handled yet (outside :func:`deferred`)."""
    if _State.received and not _State.shielded and not _State.depth:
        raise KeyboardInterrupt(signal.Signals(_State.received[-1]).name)


@contextmanager
def handling() -> Iterator[None]:
    """Install the handlers for the block (main thread only; elsewhere the block runs unchanged)."""
    if _State.active or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in _SIGNALS}
    _State.active, _State.depth, _State.shielded, _State.received, _State.ignore_after = True, 0, False, [], False
    for s in _SIGNALS:
        signal.signal(s, _handler)
    _State.unraisable_hook, sys.unraisablehook = sys.unraisablehook, _unraisable
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, signal.SIG_IGN if _State.ignore_after else h)
        sys.unraisablehook = _State.unraisable_hook
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
        check()


def shield() -> None:
    """Called where the interrupt is caught: later signals are only recorded (the cleanup runs to its end)."""
    _State.shielded = True


def ignore_until_exit() -> None:
    """Ignore SIGINT and SIGTERM from now on, also after :func:`handling` ends (a command about to exit)."""
    _State.ignore_after = True
    for s in _SIGNALS:
        signal.signal(s, signal.SIG_IGN)
