"""Typed, validated settings, stored in the database's `settings` table.

Each top-level field is one row (its value as JSON), so a later version can add a field without a
migration; a stored value that no longer validates falls back to its default and is logged.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy import select

from app.db.models import Setting
from app.db.session import Database

log = logging.getLogger(__name__)

Method = Literal["lora", "qlora", "full"]


class Hyperparameters(BaseModel):
    """The defaults a new training job starts from."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    method: Method = Field(
        "lora",
        description="LoRA trains a small adapter; QLoRA the same on 4-bit weights "
        "(CUDA only); full trains every weight.",
    )
    epochs: int = Field(3, ge=1, le=1000, description="Passes over the training split.")
    batch_size: int = Field(4, ge=1, le=4096, description="Examples per optimiser step.")
    learning_rate: float = Field(2e-4, gt=0, le=1, description="Peak AdamW learning rate.")
    max_seq_length: int = Field(1024, ge=16, le=262144, description="Longer examples are cut.")
    lora_r: int = Field(16, ge=1, le=1024, description="Rank of the LoRA matrices.")
    lora_alpha: int = Field(32, ge=1, le=8192, description="LoRA scaling numerator (integer).")
    lora_dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA path.")
    eval_fraction: float = Field(0.1, ge=0, le=0.5, description="Share held out for evaluation.")
    save_steps: int = Field(100, ge=1, le=1_000_000, description="Steps between checkpoints.")
    seed: int = Field(42, ge=0, le=2**32 - 1, description="Seed for shuffling and init.")


class AppSettings(BaseModel):
    """Everything the Settings tab edits."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    ollama_url: str = Field("http://127.0.0.1:11434", description="Where Ollama listens.")
    max_concurrent_jobs: int = Field(1, ge=1, le=64, description="Training jobs run at once.")
    import_size_limit_mb: int = Field(
        4096, ge=1, le=1_048_576, description="Largest dataset file accepted, in MB."
    )
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)
    # Not on the Settings tab: the window sets it once the first-run panel has been shown.
    welcome_shown: bool = Field(False, description="The welcome panel has been shown once.")

    @field_validator("ollama_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("enter a URL such as http://127.0.0.1:11434")
        try:
            _ = parts.port
        except ValueError as error:
            raise ValueError("the port must be a number from 1 to 65535") from error
        return value

    @property
    def import_size_limit_bytes(self) -> int:
        return self.import_size_limit_mb * 1024 * 1024


def field_errors(error: ValidationError) -> dict[str, str]:
    """One sentence per invalid field, keyed by its dotted path (`hyperparameters.epochs`)."""
    messages: dict[str, str] = {}
    for item in error.errors():
        path = ".".join(str(part) for part in item["loc"])
        messages.setdefault(path, _sentence(item["type"], item.get("ctx") or {}, str(item["msg"])))
    return messages


def _sentence(kind: str, context: dict[str, Any], fallback: str) -> str:
    """Pydantic's error, said the way a settings form says it."""
    templates = {
        "greater_than_equal": "Must be at least {ge}.",
        "greater_than": "Must be more than {gt}.",
        "less_than_equal": "Must be at most {le}.",
        "less_than": "Must be less than {lt}.",
        "int_parsing": "Enter a whole number.",
        "int_from_float": "Enter a whole number.",
        "float_parsing": "Enter a number.",
        "literal_error": "Choose one of {expected}.",
        "extra_forbidden": "This setting is not known to this version.",
    }
    if kind in templates:
        return templates[kind].format(**context)
    text = fallback.removeprefix("Value error, ")
    return text[0].upper() + text[1:].rstrip(".") + "."


def validate_settings(data: dict[str, Any]) -> tuple[AppSettings | None, dict[str, str]]:
    """Validate a whole settings dict; returns the settings or the per-field messages."""
    try:
        return AppSettings.model_validate(data), {}
    except ValidationError as error:
        return None, field_errors(error)


class SettingsStore:
    """Loads and saves AppSettings in the database."""

    def __init__(self, database: Database) -> None:
        self._database = database

    def load(self) -> AppSettings:
        with self._database.session() as session:
            stored = {row.key: row.value for row in session.scalars(select(Setting))}
        values: dict[str, Any] = {}
        for name in AppSettings.model_fields:
            if name in stored:
                values[name] = _decode(name, stored[name])
        return _validate_leniently(values)

    def save(self, settings: AppSettings) -> None:
        data = settings.model_dump(mode="json")
        with self._database.session() as session:
            for key, value in data.items():
                row = session.get(Setting, key)
                encoded = json.dumps(value, sort_keys=True)
                if row is None:
                    session.add(Setting(key=key, value=encoded))
                elif row.value != encoded:
                    row.value = encoded


def _decode(name: str, raw: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        log.warning("stored setting is not JSON; using its default", extra={"setting": name})
        return None


def _validate_leniently(values: dict[str, Any]) -> AppSettings:
    """Validate stored values, dropping (and logging) any that no longer pass."""
    values = {key: value for key, value in values.items() if value is not None}
    while True:
        try:
            return AppSettings.model_validate(values)
        except ValidationError as error:
            bad = {str(item["loc"][0]) for item in error.errors()}
            log.warning(
                "stored settings are invalid; using defaults", extra={"settings": sorted(bad)}
            )
            values = {key: value for key, value in values.items() if key not in bad}


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings as dotted keys, e.g. `hyperparameters.epochs`."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
