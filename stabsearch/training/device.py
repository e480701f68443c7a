"""Choose the torch device a search trains on, and move batches to it."""

from __future__ import annotations

import copy
import dataclasses
import re
from collections.abc import Mapping
from typing import Any

import torch
from torch.utils import _pytree as pytree

from stabsearch.errors import UsageError


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` means CUDA when it is there, else the CPU; ``cuda:i`` must exist.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    match = re.fullmatch(r"cuda(?::(\d+))?", name)
    if not match:
        raise UsageError(f"--device {name!r}: expected auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise UsageError(f"--device {name}: CUDA is not available on this machine")
    index = int(match.group(1) or 0)
    if index >= torch.cuda.device_count():
        raise UsageError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) here")
    return torch.device("cuda", index)


def _opaque(node: Any) -> bool:
    """A container torch's pytree would keep whole: a Mapping or dataclass of an unregistered type."""
    if type(node) in pytree.SUPPORTED_NODES or pytree.is_namedtuple_instance(node):
        return False
    return isinstance(node, Mapping) or (dataclasses.is_dataclass(node) and not isinstance(node, type))


def _rebuild(node: Any, device: torch.device | str) -> Any:
    """A copy of an opaque container with its values moved; its type and other state are kept."""
    if isinstance(node, Mapping):
        moved = {key: move_to(value, device) for key, value in node.items()}
        try:
            out = copy.copy(node)  # a UserDict (HF BatchEncoding) keeps its extra state this way
            for key, value in moved.items():
                out[key] = value
            return out
        except (TypeError, AttributeError):  # read-only or copy-less mappings
            return moved
    out = copy.copy(node)
    for field in dataclasses.fields(node):
        object.__setattr__(out, field.name, move_to(getattr(node, field.name), device))  # frozen ones too
    return out


def move_to(batch: Any, device: torch.device | str) -> Any:
    """``batch`` with every tensor in it on ``device``; other leaves and container types are kept.

    Tensors anywhere inside tuples, lists, dicts, namedtuples and anything
    else ``torch.utils._pytree`` knows are moved by its ``tree_map``; any
    other ``Mapping`` (``collections.UserDict``, an HF ``BatchEncoding``) and
    any dataclass are copied with their values moved, so their type and
    extra attributes survive. Non-tensor leaves (strings, numbers, ``None``)
    are returned as they are.

    Args:
        batch: a tensor, or any nesting of containers of tensors and other values.
        device: where the tensors go (``"cuda"``, ``torch.device("cuda", 1)``, ``"meta"``).

    Example:
        >>> from collections import namedtuple
        >>> Pair = namedtuple("Pair", "x label")
        >>> moved = move_to({"pair": Pair(torch.ones(2), "a")}, "meta")
        >>> moved["pair"].x.device, moved["pair"].label
        (device(type='meta'), 'a')
    """

    def leaf(node: Any) -> Any:
        if isinstance(node, torch.Tensor):
            return node.to(device, non_blocking=True)
        return _rebuild(node, device) if _opaque(node) else node

    return pytree.tree_map(leaf, batch, is_leaf=_opaque)
