"""One typed config model, read from TOML at the CLI edge and passed down.

Every option, with its default and meaning, is shown in ``configs/default.toml``.
The API key never sits here: the config only names the environment variable holding it.
"""

from __future__ import annotations

import tomllib
import zoneinfo
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline.errors import ConfigError
from pipeline.model import FIELDS, date_shape
from pipeline.simulator.config import SimulatorConfig

MAX_BATCH_SIZE = 1000


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class EngageConfig(Section):
    base_url_env: str = "ENGAGE_BASE_URL"  # variable holding https://{tenant}.voyado.com
    api_key_env: str = "ENGAGE_API_KEY"  # variable holding the API key
    connect_timeout: float = Field(10.0, gt=0)  # seconds
    read_timeout: float = Field(60.0, gt=0)  # seconds, per request
    check_definitions: bool = True  # GET the tenant's point definitions, reject unknown ids
    concurrency: int = Field(16, ge=1, le=256)  # requests in flight; --concurrency
    max_requests_per_second: float = Field(50.0, ge=1)  # Voyado recommends <= 50; --max-rps


class InputConfig(Section):
    format: Literal["auto", "csv", "tsv", "parquet", "ndjson", "excel"] = "auto"
    delimiter: str = "auto"  # "auto" sniffs , ; tab | from the header line
    timezone: str = ""  # IANA name for values without offset; "" = this machine's
    id_column: str = ""  # a column with the source's transaction id: each row's identity
    encoding: str = "utf-8"  # of text files: cp1252, latin-1, utf-16, ... (made UTF-8 on reading)
    decimal_separator: Literal[".", ","] = "."  # in amounts
    thousands_separator: Literal["", ".", ",", " ", "'", "\u00a0", "\u202f"] = ""  # in amounts
    date_formats: list[str] = []  # strftime formats tried in order, e.g. "%d.%m.%Y %H:%M"

    @model_validator(mode="after")
    def _separators_differ(self) -> InputConfig:
        if self.thousands_separator == self.decimal_separator:
            raise ValueError("thousands_separator and decimal_separator must differ")
        for fmt in self.date_formats:
            if "%" not in fmt:
                raise ValueError(f"date format {fmt!r} has no % directive, e.g. %d.%m.%Y")
            date_shape(fmt)  # a directive it does not know is a ValueError
        return self


class ValidationConfig(Section):
    allow_duplicates: bool = False  # exact duplicate rows within one import are rejected
    allow_twins: bool = False  # send a row without timeStamp whose twin landed; --allow-twins
    max_source_length: int = Field(255, gt=0)
    max_description_length: int = Field(1000, gt=0)


class BatchConfig(Section):
    batch_size: int = Field(MAX_BATCH_SIZE, ge=1, le=MAX_BATCH_SIZE)


class RetryConfig(Section):
    max_attempts: int = Field(8, ge=1)  # per request, the first included
    initial_wait: float = Field(1.0, ge=0)  # seconds, doubled each attempt, with jitter
    max_wait: float = Field(60.0, ge=0)  # cap of one back-off
    max_retry_after: float = Field(300.0, ge=0)  # cap on a server's Retry-After


class JournalConfig(Section):
    state_dir: Path = Path(".points-import")  # where journal.sqlite lives; --state-dir
    idempotency_window: float = Field(82800.0, gt=0)  # seconds Engage keeps a key, less a margin
    remember_days: float = Field(365.0, gt=0)  # how long a finished import's rows are known


class LogConfig(Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"  # auto: console on a TTY, else JSON


class AlertConfig(Section):
    # rows rejected (by validation or by Engage) a run may have and still exit 0, as a share of
    # the rows read; above it, exit 3. 0: any rejected row is exit 3. Rows held back, a file
    # that changed while read and stopped runs are never tolerated.
    max_rejected_share: float = Field(0.0, ge=0, le=1)
    notify: list[str] = []  # apprise URLs told when a run fails or crosses the threshold
    notify_env: str = "POINTS_IMPORT_NOTIFY"  # variable with more URLs (secrets), space-separated


class MetricsConfig(Section):
    file: Path | None = None  # Prometheus text file (node_exporter's textfile collector)
    pushgateway: str = ""  # a Pushgateway's URL, for CronJobs; "" = none
    job: str = "points_import"  # the Pushgateway's job label

    @field_validator("file", mode="before")
    @classmethod
    def _none_if_empty(cls, value: object) -> object:
        return None if value == "" else value


class Config(Section):
    engage: EngageConfig = EngageConfig()
    input: InputConfig = InputConfig()
    columns: dict[str, str] = {}  # input header -> API field, e.g. "Kundnr" = "contactId"
    validation: ValidationConfig = ValidationConfig()
    batching: BatchConfig = BatchConfig()
    retry: RetryConfig = RetryConfig()
    journal: JournalConfig = JournalConfig()
    logging: LogConfig = LogConfig()
    alerts: AlertConfig = AlertConfig()
    metrics: MetricsConfig = MetricsConfig()
    simulator: SimulatorConfig = SimulatorConfig()

    @field_validator("columns")
    @classmethod
    def _known_targets(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(value.values()) - set(FIELDS))
        if unknown:
            raise ValueError(f"maps to unknown field(s) {unknown}; fields are {list(FIELDS)}")
        return value


def load_config(path: Path | None) -> Config:
    """Read a TOML config file; no file means every default."""
    if path is None:
        return Config()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"config file {path} can't be read: {exc}") from exc
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"config file {path}: {_first_problem(exc)}") from exc


def _first_problem(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(part) for part in err["loc"])
    return f"{where}: {err['msg']}" + (
        f" ({len(exc.errors())} problems)" if exc.error_count() > 1 else ""
    )


def resolve_timezone(name: str) -> str:
    """The configured IANA zone, or this machine's."""
    if not name:
        import tzlocal

        try:
            name = tzlocal.get_localzone_name() or "UTC"
        except Exception:
            name = "UTC"
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"unknown time zone {name!r}; use an IANA name like Europe/Stockholm"
        ) from None
    return name
