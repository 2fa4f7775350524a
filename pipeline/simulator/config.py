"""The simulator's settings: one pydantic model, read from the ``[simulator]`` table of a TOML file.

```toml
[simulator]
api_key = "sim-key"
max_rows = 1000
rate_limit_rps = 50

[simulator.faults]
error_rates = { 500 = 0.1, 503 = 0.05, 429 = 0.05 }
apply_then_fail_rate = 0.02
seed = 7
```
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pipeline.simulator import fixture
from pipeline.simulator.rules import is_guid

Probability = Annotated[float, Field(ge=0, le=1)]

_STRICT = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class FaultConfig(BaseModel):
    """Faults the simulator injects into ``POST /api/v2/point-accounts/transactions``."""

    model_config = _STRICT

    error_rates: dict[int, Probability] = Field(
        default_factory=dict,
        description="status -> probability per POST; the request then has no effect",
    )
    retry_after_seconds: float = Field(1.0, ge=0, description="Retry-After sent on injected 429s")
    latency_ms: float = Field(0, ge=0, description="added to every API request")
    apply_then_fail_rate: Probability = Field(
        0, description="probability that a POST is committed and then answered with a failure"
    )
    apply_then_fail_mode: Literal["500", "drop", "mixed"] = Field(
        "mixed", description="the failure: a 500, a dropped connection, or either at random"
    )
    seed: int | None = Field(None, description="random seed, for reproducible faults")

    @field_validator("error_rates")
    @classmethod
    def _error_statuses(cls, rates: dict[int, float]) -> dict[int, float]:
        bad = sorted(status for status in rates if not 400 <= status <= 599)
        if bad:
            raise ValueError(f"statuses must be 4xx or 5xx, got {bad}")
        if sum(rates.values()) > 1:
            raise ValueError(f"the rates add up to {sum(rates.values()):g}, more than 1")
        return rates


class PointDefinition(BaseModel):
    """A point definition: which point account a transaction goes to."""

    model_config = _STRICT

    id: int = Field(gt=0)
    name: str = Field(min_length=1)
    description: str = ""


class SimulatorConfig(BaseModel):
    """Everything the simulator can be told; every field has a default."""

    model_config = _STRICT

    api_key: str = Field("sim-key", min_length=1, repr=False, description="the apikey header")
    contacts: list[str] | None = Field(None, description="contact GUIDs; None = built-in 500")
    definitions: list[PointDefinition] | None = Field(None, description="None = built-in five")
    auto_create_contacts: bool = Field(False, description="every well-formed GUID is a contact")
    idempotency_window_seconds: float = Field(86400, ge=0)
    max_rows: int = Field(1000, ge=1, description="rows allowed in one POST")
    max_description_length: int | None = Field(
        None, ge=1, description="a longer description makes the whole POST a 400 (None = no limit)"
    )
    rate_limit_rps: float | None = Field(None, ge=1, description="requests per 1-second window")
    faults: FaultConfig = Field(default_factory=FaultConfig)

    @field_validator("contacts")
    @classmethod
    def _contact_guids(cls, contacts: list[str] | None) -> list[str] | None:
        if contacts is None:
            return None
        bad = [contact for contact in contacts if not is_guid(contact)]
        if bad:
            raise ValueError(f"contacts must be GUIDs, got {bad[:3]}")
        return [contact.lower() for contact in contacts]

    @field_validator("definitions")
    @classmethod
    def _unique_definitions(
        cls, definitions: list[PointDefinition] | None
    ) -> list[PointDefinition] | None:
        ids = [definition.id for definition in definitions or []]
        if len(ids) != len(set(ids)):
            raise ValueError(f"definition ids must be unique, got {ids}")
        return definitions

    def contact_ids(self) -> list[str]:
        """The configured contacts (lower case), or the built-in ones."""
        return fixture.contact_ids() if self.contacts is None else list(self.contacts)

    def point_definitions(self) -> list[PointDefinition]:
        """The configured point definitions, or the built-in ones."""
        if self.definitions is not None:
            return list(self.definitions)
        return [PointDefinition(id=i, name=n, description=d) for i, n, d in fixture.DEFINITIONS]

    @classmethod
    def from_toml(cls, path: str | Path) -> SimulatorConfig:
        """Read the ``[simulator]`` table of ``path``; a missing table gives the defaults."""
        try:
            with open(path, "rb") as file:
                table: Any = tomllib.load(file).get("simulator", {})
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{path} is not valid TOML: {exc}") from exc
        try:
            return cls.model_validate(table)
        except ValidationError as exc:
            raise ValueError(f"{path}: {describe_errors(exc, 'simulator')}") from exc


def describe_errors(exc: ValidationError, prefix: str) -> str:
    """Every problem of a validation error on one line: 'simulator.faults.seed: msg; ...'."""
    problems = []
    for error in exc.errors():
        where = ".".join([prefix, *(str(part) for part in error["loc"])])
        problems.append(f"{where}: {error['msg']}")
    return "; ".join(problems)
