"""Train under stabsearch through the frameworks people train with, in one line of ``train(run)``.

- :mod:`stabsearch.integrations.lightning`: ``fit(run, module, ...)`` and
  ``StabilityCallback`` for ``lightning.Trainer``
  (``pip install "stabsearch[lightning]"``).
- :mod:`stabsearch.integrations.transformers`: ``train(run, model=..., ...)``
  and ``StabilityCallback`` for ``transformers.Trainer``
  (``pip install "stabsearch[transformers]"``).

Each submodule imports its framework when it is imported itself, so
``import stabsearch`` never needs either.
"""

from __future__ import annotations

from typing import Any

#: What each integration needs, and the extra that installs it.
EXTRAS = {"lightning": "lightning", "transformers": "transformers"}


def missing(framework: str, exc: ImportError) -> ImportError:
    """The one-line ImportError for an integration whose framework is not installed."""
    extra = EXTRAS[framework]
    return ImportError(f"stabsearch.integrations.{framework} needs {framework} ({exc}): pip install \"stabsearch[{extra}]\"")


def same_device(a: Any, b: Any) -> bool:
    """``cuda`` and ``cuda:0`` are one device (the current one, index 0 by default)."""
    import torch

    a, b = torch.device(a), torch.device(b)
    return a.type == b.type and (a.index or 0) == (b.index or 0)
