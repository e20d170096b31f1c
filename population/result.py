"""A candidate's final result, as it is recorded: one frozen value passed whole from the
worker's answer through the extra-run logic (stages, noise, confirmation) to the store."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from population.candidate import Status


@dataclass(frozen=True)
class Result:
    """What is recorded for `candidate_id`: its status, metrics, why, and its log tail."""

    candidate_id: str
    status: Status
    metrics: Mapping[str, Any] = field(default_factory=dict)
    reason: str = ""
    log_tail: str = ""

    def replace(self, **changes: Any) -> Result:
        return dataclasses.replace(self, **changes)
