"""The memory module's pure parts: the sizing arithmetic, the tensors found in a batch, the RAM a process may use."""

from __future__ import annotations

import pytest
import torch

from stabsearch.population import memory
from stabsearch.population.memory import PopulationMemory, _leaves

GIB = 1024**3


def test_the_largest_population_is_the_one_that_fits_the_budget():
    m = PopulationMemory(shared=1000, per_member=300, available=10_000, measured=True)
    assert m.bytes_for(0) == 1000 and m.bytes_for(4) == 2200
    k = m.max_population(0.8)
    assert m.bytes_for(k) <= 0.8 * m.available < m.bytes_for(k + 1)
    assert PopulationMemory(shared=20_000, per_member=300, available=10_000, measured=True).max_population() == 0
    # a member measured as no bytes at all still counts one byte: K stays finite
    assert PopulationMemory(shared=0, per_member=0, available=10, measured=False).max_population(1.0) == 10


def test_the_tensors_of_a_batch_are_found_in_any_nesting():
    a, b, c = torch.zeros(1), torch.zeros(2), torch.zeros(3)
    assert [t.numel() for t in _leaves({"x": [a, (b, "label")], "y": {"z": c}, "n": 3})] == [1, 2, 3]
    assert _leaves("text") == [] and _leaves(a) == [a]


class FakePath:
    """``pathlib.Path`` over a dict of file contents; a missing file raises ``OSError`` as a real one does."""

    files: dict[str, str] = {}

    def __init__(self, path: str) -> None:
        self.path = path

    def read_text(self) -> str:
        if self.path not in self.files:
            raise FileNotFoundError(self.path)
        return self.files[self.path]


@pytest.mark.parametrize(
    ("cgroup", "expected"),
    [
        ({}, 8 * GIB),  # no cgroup v2 limit
        ({"/sys/fs/cgroup/memory.max": "max\n"}, 8 * GIB),
        ({"/sys/fs/cgroup/memory.max": f"{4 * GIB}\n", "/sys/fs/cgroup/memory.current": f"{GIB}\n"}, 3 * GIB),
        ({"/sys/fs/cgroup/memory.max": f"{GIB}\n", "/sys/fs/cgroup/memory.current": f"{2 * GIB}\n"}, 0),  # over it
        ({"/sys/fs/cgroup/memory.max": "garbage"}, 8 * GIB),
    ],
    ids=["no-cgroup", "unlimited", "limited", "over-the-limit", "unreadable"],
)
def test_available_ram_is_memavailable_capped_by_the_cgroup_limit(monkeypatch, cgroup, expected):
    meminfo = f"MemTotal:       {16 * GIB // 1024} kB\nMemAvailable:    {8 * GIB // 1024} kB\n"
    monkeypatch.setattr(FakePath, "files", {"/proc/meminfo": meminfo, **cgroup})
    monkeypatch.setattr(memory, "Path", FakePath)
    assert memory._cpu_available() == expected


def test_without_meminfo_the_free_pages_count(monkeypatch):
    monkeypatch.setattr(FakePath, "files", {})
    monkeypatch.setattr(memory, "Path", FakePath)
    pages = {"SC_AVPHYS_PAGES": 1000, "SC_PAGE_SIZE": 4096}
    monkeypatch.setattr(memory.os, "sysconf", pages.__getitem__)
    assert memory._cpu_available() == 1000 * 4096
