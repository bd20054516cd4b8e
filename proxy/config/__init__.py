"""The routing file: YAML text -> one validated, immutable snapshot. Pure: no network, no clocks.

- `yamlsource`: YAML events with line numbers, `${ENV}` expansion (`environment`)
- `models`: the typed sections, each default written once, and the JSON Schema (`schema`)
- `validate`, `checks`, `load`: every issue at once, located; includes; the reload rule (`restart`)
- `snapshot`: the frozen types the rest of the code reads
"""

from __future__ import annotations

from proxy.config.load import config_version, load_config, parse_config, read_config_text
from proxy.config.models import AuthSettings, NangoSettings, RedisSection, ServerSettings
from proxy.config.snapshot import (
    DEFAULT_CALENDAR_INSTRUCTIONS,
    DEFAULT_TAKE_MESSAGE_INSTRUCTIONS,
    CalendarPlan,
    Config,
    Fallback,
    FallbackKind,
    Fallbacks,
    Route,
    User,
)
from proxy.config.tenants import Agency, load_deployment
from proxy.config.yamlsource import ConfigError, ConfigIssue

__all__ = [
    "DEFAULT_CALENDAR_INSTRUCTIONS",
    "DEFAULT_TAKE_MESSAGE_INSTRUCTIONS",
    "Agency",
    "AuthSettings",
    "CalendarPlan",
    "Config",
    "ConfigError",
    "ConfigIssue",
    "Fallback",
    "FallbackKind",
    "Fallbacks",
    "NangoSettings",
    "RedisSection",
    "Route",
    "ServerSettings",
    "User",
    "config_version",
    "load_config",
    "load_deployment",
    "parse_config",
    "read_config_text",
]
