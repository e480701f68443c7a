"""Load a user's model module (a ``.py`` path or an importable name).

The contract: ``model()``, ``batches(seed)`` and
``loss(model, batch)``, or a custom loop ``train(run)``; optionally
``evaluate(model)``, ``STEPS``, ``SPACE``, ``CLASSES``, ``PRECISION`` ("32",
"bf16" or "fp16") and ``NO_DECAY`` (``False`` decays biases and normalisation
weights too; default ``True``). Anything wrong with
the module itself (missing, unimportable, lacking names) is a one-line
:class:`UsageError`, raised before any study is touched.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import sys
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from stabsearch.errors import UsageError

_REQUIRED = ("model", "batches", "loss")


@dataclasses.dataclass(frozen=True)
class ModelModule:
    """A loaded, checked model module."""

    name: str
    source: str
    module: ModuleType
    model: Callable[[], Any] | None
    batches: Callable[[int], Any] | None
    loss: Callable[[Any, Any], Any] | None
    evaluate: Callable[[Any], float] | None
    train: Callable[[Any], Any] | None
    steps: int | None
    space: Mapping[str, Any] | None
    classes: int | None
    precision: str | None = None
    no_decay: bool = True


def load_model_module(spec: str) -> ModelModule:
    """Import ``spec`` (a file path ending in ``.py``, or a module name) and check the contract.

    Example:
        >>> load_model_module("no/such/file.py")
        Traceback (most recent call last):
        ...
        stabsearch.errors.UsageError: no/such/file.py: no such file
    """
    module, source, name = _import(spec)
    get = lambda attr: getattr(module, attr, None)  # noqa: E731
    train = get("train")
    if train is None:
        missing = [n for n in _REQUIRED if get(n) is None]
        if missing:
            raise UsageError(
                f"{source}: missing {', '.join(missing)}; a model module defines model(), "
                "batches(seed) and loss(model, batch), or a custom loop train(run)"
            )
    for attr in ("train", "evaluate", *_REQUIRED):
        value = get(attr)
        if value is not None and not callable(value):
            raise UsageError(f"{source}: {attr} must be callable, got {type(value).__name__}")
    return ModelModule(
        name=name,
        source=source,
        module=module,
        model=get("model"),
        batches=get("batches"),
        loss=get("loss"),
        evaluate=get("evaluate"),
        train=train,
        steps=_positive_int(get("STEPS"), "STEPS", source),
        space=_space(get("SPACE"), source),
        classes=_classes(get("CLASSES"), source),
        precision=_precision(get("PRECISION"), source),
        no_decay=_flag(get("NO_DECAY"), "NO_DECAY", source, default=True),
    )


def _import(spec: str) -> tuple[ModuleType, str, str]:
    path = Path(spec)
    if spec.endswith(".py") or path.is_file() or "/" in spec or "\\" in spec:
        if not path.is_file():
            raise UsageError(f"{spec}: no such file")
        name = path.stem
        unique = f"_stabsearch_model_{name}_{abs(hash(str(path.resolve())))}"
        module_spec = importlib.util.spec_from_file_location(unique, path)
        if module_spec is None or module_spec.loader is None:
            raise UsageError(f"{spec}: not a loadable Python file")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[unique] = module
        parent = str(path.resolve().parent)
        added = parent not in sys.path
        if added:
            sys.path.insert(0, parent)  # so the module can import its neighbours
        try:
            module_spec.loader.exec_module(module)
        except BaseException as exc:
            sys.modules.pop(unique, None)
            _raise_import_error(spec, exc)
        finally:
            if added:
                sys.path.remove(parent)
        return module, spec, name
    try:
        module = importlib.import_module(spec)
    except ModuleNotFoundError as exc:
        if exc.name and spec.startswith(exc.name):
            raise UsageError(f"{spec}: no such file or importable module") from None
        _raise_import_error(spec, exc)
    except BaseException as exc:
        _raise_import_error(spec, exc)
    return module, spec, spec.rsplit(".", 1)[-1]


def _raise_import_error(source: str, exc: BaseException) -> None:
    if isinstance(exc, KeyboardInterrupt):
        raise exc
    if isinstance(exc, SyntaxError):
        raise UsageError(f"{source}:{exc.lineno}: syntax error: {exc.msg}") from None
    frames = traceback.extract_tb(exc.__traceback__)
    line = next((f"line {f.lineno}: " for f in reversed(frames) if f.filename.endswith(Path(source).name)), "")
    message = str(exc).splitlines()[0] if str(exc) else ""
    raise UsageError(f"{source}: import failed: {line}{type(exc).__name__}: {message}") from None


def _positive_int(value: Any, attr: str, source: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(f"{source}: {attr} must be a positive integer, got {value!r}")
    return value


def _classes(value: Any, source: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 2:
        raise UsageError(f"{source}: CLASSES must be an integer of at least 2, got {value!r}")
    return value


def _precision(value: Any, source: str) -> str | None:
    from stabsearch.config import PRECISIONS

    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if value not in PRECISIONS:
        raise UsageError(f"{source}: PRECISION must be one of {', '.join(PRECISIONS)}, got {value!r}")
    return value


def _flag(value: Any, attr: str, source: str, *, default: bool) -> bool:
    if value is None:
        return default
    if not isinstance(value, bool):
        raise UsageError(f"{source}: {attr} must be True or False, got {value!r}")
    return value


def _space(value: Any, source: str) -> Mapping[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise UsageError(f"{source}: SPACE must be a dict of parameter overrides, got {type(value).__name__}")
    return value
