"""Settings: one table row per setting (type, default, parser with its range), read from AUTHSVC_* variables."""

from __future__ import annotations

from dataclasses import fields

import pytest

from authsvc.config import Settings, unknown_variables
from authsvc.errors import ConfigError

_FREE_TEXT = {"database_url", "kek", "kek_file", "data_dir", "host", "issuer", "tls_cert_file", "tls_key_file"}
_FREE_TEXT |= {"tls_client_ca_file", "console_host", "console_tls_cert_file", "console_tls_key_file"}
_CHECKED = [f.name for f in fields(Settings) if f.name not in _FREE_TEXT and f.name != "operator_tokens"]


def test_every_setting_has_a_row_with_a_parser() -> None:
    # operator_tokens is read from two variables (tokens and a file) by a parser of its own.
    rowless = [f.name for f in fields(Settings) if "parse" not in f.metadata and f.name != "operator_tokens"]
    assert rowless == []


@pytest.mark.parametrize("name", _CHECKED)
def test_a_value_out_of_a_settings_type_or_range_is_refused_naming_its_variable(name: str) -> None:
    variable = f"AUTHSVC_{name.upper()}"
    with pytest.raises(ConfigError) as refused:
        Settings.from_env({variable: "-1"})
    assert variable in refused.value.message


@pytest.mark.parametrize(
    ("variable", "text", "name", "value"),
    [
        ("AUTHSVC_PORT", "0", "port", 0),
        ("AUTHSVC_DRAIN_TIMEOUT", "0", "drain_timeout", 0.0),
        ("AUTHSVC_DRAIN_TIMEOUT", "1m30s", "drain_timeout", 90.0),
        ("AUTHSVC_VERIFY_CACHE_SIZE", "0", "verify_cache_size", 0),
        ("AUTHSVC_MIGRATE", "off", "migrate", False),
        ("AUTHSVC_EVENT_LOOP", "asyncio", "event_loop", "asyncio"),
        ("AUTHSVC_MAX_CONNECTION_AGE", "0", "max_connection_age", 0.0),
    ],
)
def test_values_in_range_are_read(variable: str, text: str, name: str, value: object) -> None:
    assert getattr(Settings.from_env({variable: text}), name) == value


@pytest.mark.parametrize("variable", ["AUTHSVC_STATE_CHECK_INTERVAL", "AUTHSVC_DATABASE_TIMEOUT", "AUTHSVC_WORKERS"])
def test_zero_is_refused_where_it_makes_no_sense(variable: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        Settings.from_env({variable: "0"})


def test_a_misspelled_variable_is_named_with_the_closest_setting() -> None:
    warning = unknown_variables({"AUTHSVC_DRAIN_TIMOUT": "5s", "AUTHSVC_PORT": "1"})
    assert warning is not None and "AUTHSVC_DRAIN_TIMOUT (did you mean AUTHSVC_DRAIN_TIMEOUT?)" in warning
