"""One typed settings object, filled from ``SWITCHBOARD_*`` variables and an optional TOML file.

Precedence (highest first): explicit overrides (CLI flags), environment variables, the TOML
file, built-in defaults. Defaults are chosen so ``switchboard serve --dev`` runs a complete
single-node hub with nothing else installed.

The object is composed of one section per part (:mod:`config.server`, :mod:`config.hub`,
:mod:`config.turn`, :mod:`config.sfu`, :mod:`config.cluster`, :mod:`config.api`,
:mod:`config.messages`). A part
is handed its section's type, so it can only read its own settings; the names stay flat
(``sfu_room_capacity``, ``SWITCHBOARD_SFU_ROOM_CAPACITY``) so one name means one thing in
the environment, the code and the README. A TOML file may use the flat names or one table
per section without the section's prefix (``[sfu] room_capacity = 20``).
"""

from __future__ import annotations

import os
import tomllib
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from config.api import ApiSettings, WebhookSettings
from config.cluster import ClusterSettings
from config.hub import HubSettings
from config.messages import MessageSettings
from config.server import ServerSettings
from config.sfu import SfuSettings
from config.turn import TurnSettings

_TOML_FILE: ContextVar[Path | None] = ContextVar("switchboard_toml_file", default=None)

#: The sections, in the order the README documents them.
SECTIONS: tuple[type[Any], ...] = (
    ServerSettings,
    HubSettings,
    TurnSettings,
    SfuSettings,
    ClusterSettings,
    ApiSettings,
    WebhookSettings,
    MessageSettings,
)


class Settings(
    MessageSettings,
    WebhookSettings,
    ApiSettings,
    ClusterSettings,
    SfuSettings,
    TurnSettings,
    HubSettings,
    ServerSettings,
    BaseSettings,
):
    """Every knob of a Switchboard node. Durations are seconds, sizes are bytes."""

    model_config = SettingsConfigDict(env_prefix="SWITCHBOARD_", extra="forbid")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml_file = _TOML_FILE.get()
        if toml_file is not None:
            sources.append(SectionedToml(settings_cls, toml_file))
        return tuple(sources)


def toml_names() -> dict[str, dict[str, str]]:
    """For each section's table, its TOML keys and the settings they name."""
    tables: dict[str, dict[str, str]] = {}
    for section in SECTIONS:
        names = tables.setdefault(section.toml_table, {})
        for field in section.model_fields:
            names[field.removeprefix(section.toml_prefix)] = field
    return tables


class SectionedToml(PydanticBaseSettingsSource):
    """A TOML file with flat keys, section tables (``[sfu]``), or both; a key given both
    ways, or an unknown table, is an error rather than a silent choice."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path) -> None:
        super().__init__(settings_cls)
        with path.open("rb") as file:
            raw = tomllib.load(file)
        tables = toml_names()
        flat: dict[str, Any] = {}
        for key, value in raw.items():
            if isinstance(value, dict):
                names = tables.get(key)
                if names is None:
                    raise ValueError(f"{path}: unknown table [{key}]; known: {sorted(tables)}")
                for inner, item in value.items():
                    name = names.get(inner)
                    if name is None:
                        raise ValueError(f"{path}: [{key}] has no setting '{inner}'")
                    self._put(flat, name, item, path)
            else:
                self._put(flat, key, value, path)
        self._values = flat

    @staticmethod
    def _put(flat: dict[str, Any], name: str, value: Any, path: Path) -> None:
        if name in flat:
            raise ValueError(f"{path}: '{name}' is set twice")
        flat[name] = value

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._values.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._values)


def load_settings(config_file: Path | str | None = None, **overrides: Any) -> Settings:
    """Build the settings; ``config_file`` falls back to ``SWITCHBOARD_CONFIG``.

    ``overrides`` whose value is ``None`` are ignored so CLI flags left unset do not mask
    the environment or the file.
    """
    path = config_file or os.environ.get("SWITCHBOARD_CONFIG")
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
    token = _TOML_FILE.set(path)
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    finally:
        _TOML_FILE.reset(token)
