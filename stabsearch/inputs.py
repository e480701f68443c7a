"""Checks on what a user hands the command line: numbers, files, YAML and names.

Each check turns bad input into one :class:`~stabsearch.errors.UsageError`
line that names what is wrong and where, before any study is opened:

- :class:`Finite`: a click number type with bounds that, unlike click's
  ``FloatRange``, refuses NaN and infinity;
- :func:`read_user_file`: a regular file of bounded size (not ``/dev/zero``,
  not a folder, not a 50 MB surprise);
- :func:`load_yaml`: YAML without aliases (no "billion laughs") and with
  bounded nesting;
- :func:`check_name`: a study name without control characters, which
  would otherwise reach the terminal raw;
- :func:`shorten`: a bounded ``repr`` for quoting user data in a message.
"""

from __future__ import annotations

import math
import reprlib
import stat
from pathlib import Path
from typing import Any

import click
import yaml

from stabsearch.errors import UsageError

#: Largest space file or loss log read, in bytes.
MAX_FILE_BYTES = {"space file": 1 << 20, "loss log": 256 << 20}
#: Deepest nesting a space file may have (a space is two levels deep).
MAX_YAML_DEPTH = 20

_SHORT = reprlib.Repr()
_SHORT.maxstring = 80
_SHORT.maxother = 80


def shorten(value: Any) -> str:
    """A ``repr`` of ``value`` cut to about 80 characters, for quoting user data in a one-line message.

    Example:
        >>> len(shorten("x" * 50_000_000))
        80
    """
    return _SHORT.repr(value)


class Finite(click.ParamType):
    """A float option within ``[low, high]`` (ends open where told), never NaN or infinite.

    Example:
        >>> Finite(0, 10).convert("2.5", None, None)
        2.5
        >>> Finite(0, 10).convert("nan", None, None)
        Traceback (most recent call last):
        ...
        click.exceptions.BadParameter: 'nan' is not a finite number in [0, 10].
    """

    name = "number"

    def __init__(self, low: float, high: float, *, low_open: bool = False) -> None:
        self.low, self.high, self.low_open = low, high, low_open

    def _range(self) -> str:
        return f"{'(' if self.low_open else '['}{self.low:g}, {self.high:g}]"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{shorten(value)} is not a number in {self._range()}.", param, ctx)
        low_ok = number > self.low if self.low_open else number >= self.low
        if not (math.isfinite(number) and low_ok and number <= self.high):
            self.fail(f"{shorten(value)} is not a finite number in {self._range()}.", param, ctx)
        return number


def read_user_file(path: str | Path, what: str) -> str:
    """The text of a regular file of at most ``MAX_FILE_BYTES[what]`` bytes, or one clear error line.

    Example:
        >>> read_user_file("/dev/zero", "space file")
        Traceback (most recent call last):
        ...
        stabsearch.errors.UsageError: space file /dev/zero: not a regular file
    """
    path = Path(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise UsageError(f"{what} {path}: no such file") from None
    except OSError as exc:
        raise UsageError(f"{what} {path}: cannot read it ({exc.strerror or exc})") from None
    if not stat.S_ISREG(info.st_mode):
        raise UsageError(f"{what} {path}: {'is a directory' if stat.S_ISDIR(info.st_mode) else 'not a regular file'}")
    limit = MAX_FILE_BYTES[what]
    if info.st_size > limit:
        raise UsageError(f"{what} {path}: {info.st_size:,} bytes, more than the {limit:,} a {what} may have")
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as exc:
        raise UsageError(f"{what} {path}: cannot read it ({exc.strerror or exc})") from None
    if len(data) > limit:
        raise UsageError(f"{what} {path}: more than the {limit:,} bytes a {what} may have")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{what} {path}: not UTF-8 text (byte {exc.start})") from None


class _SafeNoAliases(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses aliases and deep nesting while it composes the document."""

    def compose_node(self, parent, index):  # noqa: ANN001, ANN201
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed here", event.start_mark)
        self._depth = getattr(self, "_depth", 0) + 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise yaml.composer.ComposerError(
                    None, None, f"nested deeper than {MAX_YAML_DEPTH} levels", self.peek_event().start_mark
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def load_yaml(text: str, where: str) -> Any:
    """Parse ``text`` as YAML without aliases and at most ``MAX_YAML_DEPTH`` levels deep.

    Example:
        >>> load_yaml("a: &x [1, 2]\\nb: *x\\n", "space file s.yaml")
        Traceback (most recent call last):
        ...
        stabsearch.errors.UsageError: space file s.yaml: line 2: aliases (*name) are not allowed here
    """
    try:
        return yaml.load(text, Loader=_SafeNoAliases)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}:" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise UsageError(f"{where}:{line} {problem}") from None
    except RecursionError:
        raise UsageError(f"{where}: nested too deeply") from None


def check_name(name: str, what: str = "--study") -> str:
    """``name`` if it is a printable study name of at most 200 characters, else one error line.

    Example:
        >>> check_name("adam late\\x1b[2J")
        Traceback (most recent call last):
        ...
        stabsearch.errors.UsageError: --study 'adam late\\x1b[2J': control characters are not allowed in a study name
    """
    if not name or not name.strip():
        raise UsageError(f"{what}: a study name cannot be empty")
    if not name.isprintable():
        raise UsageError(f"{what} {shorten(name)}: control characters are not allowed in a study name")
    if len(name) > 200:
        raise UsageError(f"{what} {shorten(name)}: a study name has at most 200 characters, not {len(name)}")
    return name


def printable(text: str) -> str:
    """``text`` with control characters escaped, for showing names read back from a storage.

    Example:
        >>> printable("ok\\nnext")
        'ok\\\\nnext'
    """
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")
