"""Property tests of configuration loading: whatever an administrator (or the API) hands us,
the answer is a valid Config or one clear error naming where, never a crash."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from phonemfa.config import Config, ConfigError, TenantSettings, field_errors, load_config

VALID = {
    "ari": {"password": "secret-ari", "url": "http://127.0.0.1:8088"},
    "api": {"tokens": ["secret-token"], "listen": "127.0.0.1:8080"},
    "trunk": {"dial_timeout": 30},
    "tenants": {
        "default": {
            "region": "US",
            "operator_assistance": False,
            "calls": {"attempts": 3, "first_digit_timeout": 10},
            "fraud": {"code": "0#"},
        }
    },
}

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(min_size=1, max_size=12), inner, max_size=3)
    ),
    max_leaves=12,
)
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _load(text: str) -> Config | ConfigError:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "phonemfa.yaml"
        path.write_text(text)
        try:
            return load_config(path, environ={})
        except ConfigError as exc:
            return exc


@SETTINGS
@given(st.text(max_size=300))
def test_any_text_is_a_config_or_one_clear_error(text: str) -> None:
    result = _load(text)
    if isinstance(result, ConfigError):
        assert "phonemfa.yaml" in str(result).split(":", 1)[0], str(result)


@SETTINGS
@given(values)
def test_any_yaml_document_is_a_config_or_one_clear_error(document: Any) -> None:
    result = _load(yaml.safe_dump(document))
    assert isinstance(result, ConfigError | Config)


def _paths(node: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    if isinstance(node, dict):
        out = []
        for key, value in node.items():
            out.append((*prefix, key))
            out += _paths(value, (*prefix, key))
        return out
    return []


LEAVES = _paths(VALID)


@SETTINGS
@given(st.sampled_from(LEAVES), values)
def test_a_changed_value_is_accepted_or_refused_naming_its_line_and_key(
    where: tuple[str, ...], value: Any
) -> None:
    document: dict[str, Any] = yaml.safe_load(yaml.safe_dump(VALID))
    node = document
    for key in where[:-1]:
        node = node[key]
    node[where[-1]] = value
    result = _load(yaml.safe_dump(document, sort_keys=False))
    if isinstance(result, ConfigError):
        # Every issue says file:line: and a key path inside what we changed (or the section).
        for issue in result.issues:
            assert issue.line is None or issue.line >= 1
        text = str(result)
        assert re.search(r"phonemfa\.yaml(:\d+)?: ", text), text


@SETTINGS
@given(st.dictionaries(st.sampled_from(sorted(TenantSettings.model_fields)), values, max_size=4))
def test_tenant_settings_from_the_api_validate_or_name_the_field(data: dict[str, Any]) -> None:
    try:
        TenantSettings.model_validate(data)
    except ValidationError as exc:
        errors = field_errors(exc)
        assert errors and all(e.path and e.message for e in errors)
