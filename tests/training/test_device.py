"""Batches of every common shape reach the device whole: tensors move, containers and other leaves stay."""

from __future__ import annotations

import collections
import dataclasses
import types

import pytest
import torch

from stabsearch.training.device import move_to
from stabsearch.training.loader import ModelModule
from stabsearch.training.trainer import batch_stream

META = torch.device("meta")
Pair = collections.namedtuple("Pair", "x y")


@dataclasses.dataclass
class Batch:
    x: torch.Tensor
    mask: torch.Tensor
    name: str = "train"


@dataclasses.dataclass(frozen=True)
class Frozen:
    x: torch.Tensor


class Wrapper(collections.UserDict):
    def __init__(self, data, note):
        super().__init__(data)
        self.note = note


def tensors(value) -> list[torch.Tensor]:
    from torch.utils._pytree import tree_leaves

    if isinstance(value, torch.Tensor):
        return [value]
    if dataclasses.is_dataclass(value):
        return [t for f in dataclasses.fields(value) for t in tensors(getattr(value, f.name))]
    if isinstance(value, collections.abc.Mapping):
        return [t for v in value.values() for t in tensors(v)]
    return [t for leaf in tree_leaves(value) if leaf is not value for t in tensors(leaf)]


@pytest.mark.parametrize("batch", [
    torch.ones(3),
    (torch.ones(2), torch.zeros(2, dtype=torch.long)),
    [torch.ones(2), torch.ones(1)],
    {"x": torch.ones(2), "y": torch.zeros(2)},
    collections.OrderedDict(x=torch.ones(2)),
    Pair(torch.ones(2), torch.zeros(2)),
    Batch(torch.ones(2), torch.ones(2, dtype=torch.bool)),
    Frozen(torch.ones(2)),
    collections.UserDict(x=torch.ones(2)),
    types.MappingProxyType({"x": torch.ones(2)}),
    {"pair": Pair(torch.ones(1), [Batch(torch.ones(1), torch.ones(1))]), "more": (torch.ones(1), {"z": torch.ones(1)})},
], ids=["tensor", "tuple", "list", "dict", "ordereddict", "namedtuple", "dataclass", "frozen-dataclass", "userdict",
        "mappingproxy", "nested"])
def test_every_tensor_moves_and_the_container_type_is_kept(batch):
    moved = move_to(batch, META)
    before, after = tensors(batch), tensors(moved)
    assert len(after) == len(before) >= 1
    assert all(t.device == META for t in after)
    assert all(t.device.type == "cpu" for t in before)  # the caller's batch is not changed
    assert [(t.shape, t.dtype) for t in after] == [(t.shape, t.dtype) for t in before]
    expected = dict if isinstance(batch, types.MappingProxyType) else type(batch)
    assert type(moved) is expected


def test_namedtuple_and_dataclass_fields_survive():
    moved = move_to([Pair(torch.ones(2), "label"), Batch(torch.ones(2), torch.ones(2), name="val")], META)
    pair, batch = moved
    assert isinstance(pair, Pair) and pair.x.device == META and pair.y == "label"
    assert isinstance(batch, Batch) and batch.mask.device == META and batch.name == "val"


def test_non_tensor_leaves_are_returned_as_they_are():
    marker = object()
    moved = move_to({"ids": torch.ones(1), "text": "hi", "n": 3, "none": None, "obj": marker, "f": 1.5}, META)
    assert moved["ids"].device == META
    assert (moved["text"], moved["n"], moved["none"], moved["f"]) == ("hi", 3, None, 1.5) and moved["obj"] is marker


def test_a_userdict_keeps_its_own_attributes():
    moved = move_to(Wrapper({"x": torch.ones(2)}, note="kept"), META)
    assert isinstance(moved, Wrapper) and moved.note == "kept" and moved["x"].device == META


def test_an_hf_batch_encoding_moves_and_stays_a_batch_encoding():
    transformers = pytest.importorskip("transformers")
    batch = transformers.BatchEncoding({"input_ids": torch.ones(2, 5, dtype=torch.long), "attention_mask": torch.ones(2, 5)})
    moved = move_to(batch, META)
    assert isinstance(moved, transformers.BatchEncoding)
    assert moved["input_ids"].device == META and moved.attention_mask.device == META  # item and attribute access
    assert batch["input_ids"].device.type == "cpu"


def test_the_trainer_batch_stream_moves_namedtuple_batches():
    def batches(seed):
        for _ in range(2):
            yield Pair(torch.ones(4, 2), {"labels": torch.zeros(4, dtype=torch.long), "tag": "t"})

    module = ModelModule(name="m", source="m.py", module=types.ModuleType("m"), model=None, batches=batches,
                         loss=None, evaluate=None, train=None, steps=None, space=None, classes=None)
    stream = batch_stream(module, 0, META)
    for _ in range(3):  # past the end: restarted
        batch = next(stream)
        assert isinstance(batch, Pair) and batch.x.device == META
        assert batch.y["labels"].device == META and batch.y["tag"] == "t"
