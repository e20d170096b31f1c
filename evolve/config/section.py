"""The base of every config section and the bounded number types they share.

Kept apart from `schema` so that modules declaring their own section (a mutation operator's
config class, `evolve.mutate.kinds`) can use it without importing the whole schema."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

Positive = Annotated[float, Field(gt=0)]
PositiveInt = Annotated[int, Field(gt=0)]
NonNegative = Annotated[float, Field(ge=0)]
NonNegativeInt = Annotated[int, Field(ge=0)]


class Section(BaseModel):
    """A frozen, strict config section: unknown keys and loose types are errors."""

    # strict: `size: "4"` or `size: true` is a mistake worth reporting, not coercing.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


class OperatorSection(Section):
    """What every `mutation.operators` entry has: its `kind` (a `Literal` in each subclass,
    the registry key) and its weight in the operator mix."""

    weight: NonNegative = 1.0

    def label(self) -> str:
        """The key its children's statistics are kept under (`evolve.mutate.operators.label_of`)."""
        return str(getattr(self, "kind"))  # noqa: B009 - each subclass declares kind
