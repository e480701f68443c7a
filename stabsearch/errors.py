"""The one exception type that means "the user gave bad input".

The CLI turns it into a one-line message on stderr and exit status 2, with no
traceback. Everything else that escapes is an internal error (exit status 1).
"""

from __future__ import annotations


class UsageError(Exception):
    """Bad input from the user: a missing file, a bad option, a bad space file.

    The message must fit on one line and name what is wrong and where.

    Example:
        >>> raise UsageError("objectives/x.py: no such file")
        Traceback (most recent call last):
        ...
        stabsearch.errors.UsageError: objectives/x.py: no such file
    """

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


class StorageError(UsageError):
    """The study storage cannot be read or written: a damaged or foreign file, a full disk, a lost connection.

    Never a trial's failure: the run ends with this one line, naming the
    storage and the cause, and the trial being written stays RUNNING, to be
    recovered by the next run.

    Example:
        >>> str(StorageError("sqlite:///studies/stabsearch.db", "database or disk is full"))
        'storage sqlite:///studies/stabsearch.db: database or disk is full'
    """

    def __init__(self, shown: str, cause: str) -> None:
        super().__init__(f"storage {shown}: {cause}")
