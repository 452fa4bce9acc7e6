"""What every params.yaml section shares: strict parsing, finite numbers, fields re-declared only by their default."""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined


class Section(BaseModel):
    # Unknown keys are typos until proven otherwise; NaN/inf are never a valid setting.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, validate_default=True)


def no_nan(v):
    if isinstance(v, float) and not math.isfinite(v):
        raise ValueError("must be a finite number")
    return v


def redefault(section: type[BaseModel], name: str, value=None, factory=None) -> FieldInfo:
    """A field of `section` with another default (value, or factory for mutable ones): its type's bounds and its
    description stay as declared there, so a section that only changes a default restates only the default."""
    info = section.model_fields[name]
    if factory is not None:
        new = FieldInfo.merge_field_infos(info, default_factory=factory)
        new.default = PydanticUndefined
    else:
        new = FieldInfo.merge_field_infos(info, default=value)
        new.default_factory = None
    return new


def distinct(v):
    dup = sorted({x for x in v if v.count(x) > 1})
    if dup:
        raise ValueError(f"seeds must be distinct; repeated: {dup}")
    return v
