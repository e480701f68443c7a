"""A package's names imported on first use (PEP 562), as Optuna's own package does.

``import stabsearch`` and ``import stabsearch.analysis`` then load no torch, Optuna, plotly or pandas:
each name is imported from its home module the first time it is read.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_names(package: str, homes: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of ``package``, serving each name of ``homes`` from its module.

    Args:
        package: The package's ``__name__``.
        homes: Each public name, and the module that defines it.

    Example:
        >>> import types
        >>> sys.modules["demo"] = types.ModuleType("demo")
        >>> getattr_, dir_ = lazy_names("demo", {"sqrt": "math"})
        >>> getattr_("sqrt")(9.0), "sqrt" in dir_()
        (3.0, True)
        >>> getattr_("cbrt")
        Traceback (most recent call last):
        ...
        AttributeError: module 'demo' has no attribute 'cbrt'
        >>> del sys.modules["demo"]
    """

    def __getattr__(name: str) -> Any:
        home = homes.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(home), name)
        setattr(sys.modules[package], name, value)  # later lookups skip this function
        return value

    def __dir__() -> list[str]:
        return sorted([*vars(sys.modules[package]), *homes])

    return __getattr__, __dir__
