"""Which workers a run may use, by device type: pure decisions, tested in milliseconds.

Under a fixed time budget val_bpb depends on the hardware (an H100 trains more tokens in five
minutes than an A100), so scores from two device types are not comparable. By default a
run keeps to one device type: the first worker's type, or the type its results were already
scored on (resume); workers of other types are refused with a message naming both. With
`workers.device_groups: true` every type is used, each island is bound to the type that
first runs one of its candidates, and an island's candidates (lost attempts included) only
ever run on that type, so each island group compares like with like.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

_UNNAMED_GPU = re.compile(r"^gpu:[\d,]+$")  # a GPU without nvidia-smi is named by its id


def device_type(device: str) -> str:
    """The comparable type of a worker's device: "cpu", a GPU model name, or "gpu"."""
    name = (device or "").strip()
    if not name:
        return "unknown"
    if _UNNAMED_GPU.match(name):
        return "gpu"
    return name


@dataclass(frozen=True)
class Admission:
    accepted: bool
    device_type: str
    message: str = ""


@dataclass
class DevicePolicy:
    """Admits workers by device type and says which worker may run which island's candidate."""

    groups: bool = False
    pinned: str | None = None                      # the run's one type (groups off)
    islands: dict[int, str] = field(default_factory=dict)  # island -> type (groups on)
    _types: dict[str, str] = field(default_factory=dict)  # worker -> type

    @classmethod
    def resumed(cls, groups: bool, pinned: str | None, bound: Mapping[int, str]) -> DevicePolicy:
        """The policy of a run rebuilt from its store, deciding as it did before the restart.

        `bound` is island -> the type its first attempt ran on (`first_types`). With groups
        the islands keep those types; without, the run keeps `pinned` (the type it recorded),
        else the type its first island was scored on (a run that used groups before).
        """
        if groups:
            return cls(True, islands=dict(bound))
        if pinned is None and bound:
            pinned = bound[min(bound)]
        return cls(False, pinned=pinned)

    def admit(self, worker_id: str, device: str) -> Admission:
        kind = device_type(device)
        if not self.groups:
            if self.pinned is None:
                self.pinned = kind
            elif kind != self.pinned:
                return Admission(False, kind, (
                    f"worker {worker_id} not used: its device is {kind} but this run is scored on "
                    f"{self.pinned}; val_bpb under a time budget is not comparable across device "
                    "types (set workers.device_groups: true to run one island group per type)"))
        self._types[worker_id] = kind
        return Admission(True, kind)

    def forget(self, worker_id: str) -> None:
        self._types.pop(worker_id, None)

    def may_run(self, island: int, worker_id: str) -> bool:
        """True if `worker_id` may run a candidate of `island`."""
        kind = self._types.get(worker_id)
        if kind is None:
            return False
        if not self.groups:
            return True
        bound = self.islands.get(island)
        return bound is None or bound == kind

    def pick(self, island: int, free: Iterable[str]) -> str | None:
        """The free worker to run a candidate of `island` on, or None if none may.

        An unbound island prefers a type that holds no island yet, so every type gets one.
        """
        allowed = [w for w in free if self.may_run(island, w)]
        if not allowed:
            return None
        if self.groups and island not in self.islands:
            taken = set(self.islands.values())
            fresh = [w for w in allowed if self._types[w] not in taken]
            return (fresh or allowed)[0]
        return allowed[0]

    def started(self, island: int, worker_id: str) -> None:
        """A candidate of `island` started on `worker_id`: binds the island (groups on)."""
        if self.groups and island not in self.islands and worker_id in self._types:
            self.islands[island] = self._types[worker_id]

    def types(self) -> dict[str, int]:
        """Device type -> number of admitted workers."""
        counts: dict[str, int] = {}
        for kind in self._types.values():
            counts[kind] = counts.get(kind, 0) + 1
        return counts


def first_types(attempts: Iterable[tuple[int, int, str]]) -> dict[int, str]:
    """Island -> the device type of its first attempt, from (attempt order, island, device)
    triples in any order: the binding `DevicePolicy.started` made when that attempt began."""
    bound: dict[int, str] = {}
    for _, island, device in sorted(attempts):
        bound.setdefault(island, device_type(device))
    return bound


def island_groups(islands: int, bound: dict[int, str], groups: bool) -> list[list[int]]:
    """The islands that may exchange candidates (migration, re-seeding): all of them, or with
    device groups one list per device type (islands not yet bound to a type hold nothing)."""
    if not groups:
        return [list(range(islands))]
    by_type: dict[str, list[int]] = {}
    for island in range(islands):
        if island in bound:
            by_type.setdefault(bound[island], []).append(island)
    return list(by_type.values())
