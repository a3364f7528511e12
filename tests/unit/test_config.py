"""phonemfa.config: the examples load, and every error names file:line: key.path."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import get_args

import pytest
from pydantic import SecretStr, ValidationError

from phonemfa.config import (
    Config,
    ConfigError,
    DialProfile,
    TenantSettings,
    TrunkSettings,
    UnknownTenantError,
    _sections,
    field_errors,
    format_errors,
    is_secret_path,
    load_config,
    redacted_dump,
)
from phonemfa.messages import MessageType
from phonemfa.numbers import NumberType
from tests.unit.test_deploy import env_file

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

MINIMAL = """\
ari:
  password: secret-ari
api:
  tokens: [secret-token]
tenants:
  default: {}
"""


def write(tmp_path: Path, text: str, name: str = "phonemfa.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def error_of(path: Path, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, environ=environ or {})
    return str(info.value)


# --- valid files ----------------------------------------------------------------


@pytest.mark.parametrize("name", ["sandbox.yaml", "phonemfa.yaml"])
def test_examples_load(name: str) -> None:
    environ = {name: f"secret-{name}" for name in env_file()}  # the example's ${VAR}s
    config = load_config(EXAMPLES / name, environ=environ)
    assert config.tenant().region == "US"


def test_sandbox_example() -> None:
    config = load_config(EXAMPLES / "sandbox.yaml", environ={})
    assert config.ari.username == "phonemfa"
    assert config.ari.password.get_secret_value() == "phonemfa-sandbox-secret"
    assert [t.token.get_secret_value() for t in config.api.tokens] == ["sandbox-token"]
    assert config.storage.path == Path("var/phonemfa.db")
    assert config.tenant("default").operator_assistance is False
    assert config.tenant("contoso-ops").operator_assistance is True
    assert config.tenant("contoso-ops").region == "US"
    other = load_config(EXAMPLES / "sandbox.yaml", environ={"PHONEMFA_ARI_PASSWORD": "other"})
    assert other.ari.password.get_secret_value() == "other"


def test_defaults_fill_everything_but_password_tokens_and_tenants(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL), environ={})
    assert config.ari.url == "http://127.0.0.1:8088"
    assert (config.ari.app, config.ari.reconnect_max_delay, config.ari.heartbeat) == (
        "phonemfa",
        2,
        10,
    )
    assert config.trunk.endpoint == "PJSIP/{number}@trunk"
    assert config.trunk.dial_timeout == 45
    assert (config.api.host, config.api.port, config.api.max_body_bytes) == (
        "127.0.0.1",
        8080,
        16384,
    )
    assert config.shutdown.grace_period == 30
    assert config.logging.format == "text" and config.logging.level == "info"
    assert config.sounds.dir is None
    assert config.dial_profiles == ()
    tenant = config.tenant()
    assert tenant.region == "US" and tenant.operator_assistance is False
    assert tenant.language == "en" and tenant.webhook_secret is None
    assert tenant.allowed_country_set() == {"US"}
    assert NumberType.PREMIUM_RATE in tenant.refused_number_types
    assert NumberType.SHARED_COST in tenant.refused_number_types
    assert NumberType.MOBILE not in tenant.refused_number_types
    assert (tenant.fraud.enabled, tenant.fraud.code, tenant.fraud.block_user) == (True, "0#", True)
    assert tenant.calls.attempts == 3 and tenant.calls.max_duration == 300
    assert [(r.count, r.window) for r in tenant.limits.per_user] == [(5, 300), (20, 86400)]
    assert [(r.count, r.window) for r in tenant.limits.per_number] == [(5, 300), (20, 86400)]
    assert [(r.count, r.window) for r in tenant.limits.per_tenant] == [(1000, 60)]


def test_empty_sections_mean_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL.replace("default: {}", "default:") + "logging:\nsounds:\n")
    config = load_config(path, environ={})
    assert config.tenant().region == "US"
    assert config.logging.level == "info"


def test_tokens_short_and_long_forms(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        ari: {password: x}
        api:
          tokens:
            - all-tenants
            - {token: ops-only, tenants: [ops], name: ops portal}
        tenants:
          default: {}
          ops: {operator_assistance: true}
        """,
    )
    tokens = load_config(path, environ={}).api.tokens
    assert tokens[0].tenants is None and tokens[0].name is None
    assert tokens[1].tenants == ("ops",) and tokens[1].name == "ops portal"


def test_env_interpolation(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        ari:
          password: ${ARI_PW}
          url: http://${ARI_HOST:-127.0.0.1}:${ARI_PORT:-8088}
          username: "$${literal}"
        api: {tokens: ["${TOKEN:-dev}"]}
        trunk: {dial_timeout: "${TIMEOUT}"}
        tenants: {default: {}}
        """,
    )
    config = load_config(path, environ={"ARI_PW": "pw", "ARI_PORT": "", "TIMEOUT": "30"})
    assert config.ari.password.get_secret_value() == "pw"
    assert config.ari.url == "http://127.0.0.1:8088"  # empty ARI_PORT takes the default
    assert config.ari.username == "${literal}"
    assert config.api.tokens[0].token.get_secret_value() == "dev"
    assert config.trunk.dial_timeout == 30


def test_no_yaml_1_1_surprises(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        ari: {password: 0123}
        api: {tokens: [t]}
        trunk: {caller_id: 14255550199, dial_timeout: 30}
        dial_profiles:
          - {name: intl, match: [NO], number_format: international, international_prefix: 011,
             add_prefix: 00, extension_prefix: 9, pre_delay: 1:30}
        tenants:
          default:
            region: NO
            operator_assistance: yes
            fraud: {enabled: off}
        """,
    )
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    # 1:30 is text, not 90 seconds.
    assert str(info.value) == (
        f"{path}:6: dial_profiles[0].pre_delay: Input should be a valid number, "
        "unable to parse string as a number"
    )
    path.write_text(path.read_text().replace("1:30", "1.5"))
    config = load_config(path, environ={})
    assert config.ari.password.get_secret_value() == "0123"
    assert config.trunk.caller_id == "14255550199"
    assert config.trunk.dial_timeout == 30
    profile = config.dial_profiles[0]
    assert profile.match == ("NO",)
    assert (profile.international_prefix, profile.add_prefix) == ("011", "00")
    assert profile.extension_prefix == "9"
    assert config.tenant().region == "NO"  # Norway, not False
    assert config.tenant().operator_assistance is True
    assert config.tenant().fraud.enabled is False


def test_text_written_like_a_number_reaches_its_field_as_written(tmp_path: Path) -> None:
    # YAML 1.1 reads +14255550199 as the integer 14255550199 and 123.450 as 123.45: a caller
    # id would lose its '+', a password its last zero (found by review).
    path = write(
        tmp_path,
        """\
        ari: {password: 123.450, heartbeat: 1e1}
        api: {tokens: [+123456, 987654]}
        trunk: {caller_id: +14255550199, dial_timeout: 30, queue_timeout: 2.50}
        dial_profiles:
          - {name: uk, match: [+44], strip_prefix: +44, add_prefix: +1, pre_delay: 1.5}
        tenants: {default: {}}
        """,
    )
    config = load_config(path, environ={})
    assert config.ari.password.get_secret_value() == "123.450"
    assert [t.token.get_secret_value() for t in config.api.tokens] == ["+123456", "987654"]
    assert config.trunk.caller_id == "+14255550199"
    assert (config.trunk.dial_timeout, config.trunk.queue_timeout, config.ari.heartbeat) == (
        30,
        2.5,
        10,
    )
    profile = config.dial_profiles[0]
    assert (profile.match, profile.strip_prefix, profile.add_prefix) == (("+44",), "+44", "+1")
    assert profile.pre_delay == 1.5


@pytest.mark.parametrize("url", ["http://127.0.0.1:99999", "http://127.0.0.1:abc", "http://h:0"])
def test_a_bad_port_in_the_ari_url_is_a_config_error(tmp_path: Path, url: str) -> None:
    path = write(
        tmp_path, MINIMAL.replace("  password: secret-ari", f"  password: x\n  url: {url}")
    )
    assert (
        error_of(path) == f"{path}:3: ari.url: has a bad port: 1-65535, e.g. http://127.0.0.1:8088"
    )


def test_yaml_merge_keys_and_anchors(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        ari: {password: x}
        api: {tokens: [t]}
        tenants:
          default: &base
            region: FR
            operator_assistance: true
          other:
            <<: *base
            operator_assistance: false
        """,
    )
    config = load_config(path, environ={})
    assert config.tenant("other").region == "FR"
    assert config.tenant("other").operator_assistance is False


def test_aliases_that_expand_without_end_are_refused_quickly(tmp_path: Path) -> None:
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    path = write(tmp_path, MINIMAL + "bomb:\n" + "".join(f"  {line}\n" for line in levels))
    assert error_of(path).endswith("more than 100000 values once aliases are expanded")


def test_tenant_lookup() -> None:
    config = load_config(EXAMPLES / "sandbox.yaml", environ={})
    assert config.tenant(None) is config.tenant("default")
    with pytest.raises(UnknownTenantError) as info:
        config.tenant("nobody")
    assert info.value.name == "nobody"


# --- errors: file:line: key.path: reason ------------------------------------------


def test_wrong_type_names_file_line_and_path(tmp_path: Path) -> None:
    path = write(
        tmp_path, MINIMAL.replace("default: {}", "default:\n    operator_assistance: maybe")
    )
    message = error_of(path)
    assert message.startswith(
        f"{path}:7: tenants.default.operator_assistance: Input should be a valid boolean"
    )
    assert "\n" not in message


def test_unknown_key_suggests_the_right_one(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL.replace("default: {}", "default:\n    operater_assistance: on"))
    assert error_of(path) == (
        f"{path}:7: tenants.default.operater_assistance: "
        "unknown key (did you mean 'operator_assistance'?)"
    )


@pytest.mark.parametrize(
    ("yaml_text", "line", "expected"),
    [
        # A look-alike from another section misled here: `api.port` got "did you mean 'format'".
        (
            "api:\n  port: 8080\n",
            4,
            "api.port: unknown key (listen takes host:port, e.g. listen: 127.0.0.1:8080)",
        ),
        (
            "trunk:\n  max_duration: 30\n",
            8,
            "trunk.max_duration: unknown key ('max_duration' belongs under tenants.<name>.calls)",
        ),
        (
            "trunk:\n  dial_timout: 30\n",
            8,
            "trunk.dial_timout: unknown key (did you mean 'dial_timeout'?)",
        ),
        (
            "dial_profiles:\n  - {name: x, match: '+1', pre_dealy: 2}\n",
            8,
            "dial_profiles[0].pre_dealy: unknown key (did you mean 'pre_delay'?)",
        ),
    ],
)
def test_unknown_key_hints_come_from_its_own_section_first(
    tmp_path: Path, yaml_text: str, line: int, expected: str
) -> None:
    if yaml_text.startswith("api:"):  # into the existing section
        text = MINIMAL.replace("api:\n", yaml_text, 1)
    else:
        text = MINIMAL + yaml_text
    path = write(tmp_path, text)
    assert error_of(path) == f"{path}:{line}: {expected}"


def test_unknown_key_hint_in_the_api_is_relative_to_the_tenant() -> None:
    with pytest.raises(ValidationError) as info:
        TenantSettings.model_validate({"max_duration": 30, "fraud": {"blok_user": True}})
    assert sorted(format_errors(info.value)) == [
        "fraud.blok_user: unknown key (did you mean 'block_user'?)",
        "max_duration: unknown key ('max_duration' belongs under calls)",
    ]


def test_unknown_key_hint_in_a_call_request_names_the_request_keys_only() -> None:
    # "usr" got "did you mean 'url'?", the ARI setting (found by a walk through the README).
    from phonemfa.api import StartCallBody

    with pytest.raises(ValidationError) as info:
        StartCallBody.model_validate({"phone": "+14255550100", "usr": "a", "zzz": 1, "url": 1})
    assert sorted(format_errors(info.value)) == [
        "url: unknown key",
        "usr: unknown key (did you mean 'user'?)",
        "zzz: unknown key",
    ]


def test_unknown_section(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "trunks: {}\n")
    assert error_of(path) == f"{path}:7: trunks: unknown key (did you mean 'trunk'?)"


def test_missing_required_key_points_at_its_parent(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL.replace("  password: secret-ari\n", "  username: me\n"))
    assert error_of(path) == f"{path}:1: ari.password: required key is missing"


def test_a_missing_section_names_no_line(tmp_path: Path) -> None:
    # Found by review: "FILE:1: ari: required key is missing" pointed at the line of `api:`.
    path = write(tmp_path, MINIMAL.replace("ari:\n  password: secret-ari\n", ""))
    assert error_of(path) == f"{path}: ari: required key is missing"


def test_logging_format_is_case_blind_as_its_level() -> None:
    settings = Config.model_validate(
        {"ari": {"password": "x"}, "api": {"tokens": ["t"]}, "tenants": {"default": {}},
         "logging": {"format": "JSON", "level": "INFO"}}
    )  # fmt: skip
    assert (settings.logging.format, settings.logging.level) == ("json", "info")


def test_missing_tenants(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL.replace("tenants:\n  default: {}\n", "tenants: {}\n"))
    assert error_of(path).startswith(f"{path}:5: tenants: ")


def test_unset_env_var_names_line_and_variable(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL.replace("secret-ari", "${ARI_SECRET}"))
    message = error_of(path)
    assert message.startswith(f"{path}:2: ari.password: environment variable ARI_SECRET is not set")
    # A secret's hint is the environment, not a default written in the file (found by review).
    assert "in the service's env file" in message and ":-default" not in message
    path = write(tmp_path, MINIMAL + "logging: {level: '${LEVEL}'}\n")
    assert "write ${LEVEL:-default} for a default" in error_of(path)


def test_commands_without_secrets_load_a_file_whose_secrets_are_unset(tmp_path: Path) -> None:
    """`parse` and `prompts` load with secrets=False: an administrator's shell need not hold
    the service's secrets. Only secrets get a placeholder; each its own."""
    text = """\
    ari:
      password: ${ARI_SECRET}
    api:
      tokens:
        - ${TOKEN_A}
        - {token: "${TOKEN_B}", name: ops}
    tenants:
      default: {webhook_secret: "${HOOK_SECRET}"}
    """
    path = write(tmp_path, text)
    assert "ARI_SECRET is not set" in error_of(path)
    config = load_config(path, environ={}, secrets=False)
    tokens = [t.token.get_secret_value() for t in config.api.tokens]
    assert tokens == ["<TOKEN_A unset>", "<TOKEN_B unset>"]
    assert config.ari.password.get_secret_value() == "<ARI_SECRET unset>"
    hook = config.tenant().webhook_secret
    assert hook is not None and hook.get_secret_value() == "<HOOK_SECRET unset>"
    set_ = load_config(path, environ={"ARI_SECRET": "pw"}, secrets=False)
    assert set_.ari.password.get_secret_value() == "pw"


def test_commands_without_secrets_still_need_every_other_variable(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "sounds:\n  dir: ${SOUNDS}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={}, secrets=False)
    assert str(info.value).startswith(f"{path}:8: sounds.dir: environment variable SOUNDS")


def _secret_paths() -> list[tuple[object, ...]]:
    """The path of every SecretStr field in Config, from the sections config.py itself walks
    ("api.tokens[]", "tenants.<name>"), with "t" for a name and 0 for a list item."""
    paths = []
    for where, model in [("", Config), *_sections("Config")]:
        parts = [p for p in where.replace("[]", ".[]").split(".") if p]
        prefix = tuple({"[]": 0, "<name>": "t"}.get(p, p) for p in parts)
        paths += [(*prefix, name) for name, f in model.model_fields.items() if _holds(f.annotation)]
    return paths


def _holds(annotation: object) -> bool:
    """SecretStr anywhere in an annotation (Annotated, X | None)."""
    return annotation is SecretStr or any(_holds(arg) for arg in get_args(annotation))


def test_every_secret_field_is_a_secret_path() -> None:
    paths = _secret_paths()
    assert ("api", "tokens", 0, "token") in paths
    assert ("ari", "password") in paths and ("tenants", "t", "webhook_secret") in paths
    for path in paths:
        assert is_secret_path(path), path
    assert is_secret_path(("api", "tokens", 0))  # the short form: `tokens: [abc]`
    assert not is_secret_path(("api", "tokens", 0, "name"))
    assert not is_secret_path(("sounds", "dir"))


def test_bad_variable_reference(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL.replace("secret-ari", "${1BAD}"))
    assert error_of(path).startswith(f"{path}:2: ari.password: bad variable reference")
    # A password holding "${" by chance: no part of it is quoted (found by review).
    path = write(tmp_path, MINIMAL.replace("secret-ari", "'pa${ss-w0rd}'"))
    assert "ss-w0rd" not in error_of(path)
    path = write(tmp_path, MINIMAL + "logging: {level: '${1BAD}'}\n")
    assert "bad variable reference '${1BAD}'" in error_of(path)


def test_malformed_yaml(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "logging: {level: [\n")
    message = error_of(path)
    assert message.startswith(f"{path}:") and "invalid YAML" in message
    assert int(message.split(":")[1]) >= 7


def test_bad_indentation(tmp_path: Path) -> None:
    path = write(tmp_path, "ari:\n  password: x\n api: {}\n")
    assert error_of(path).startswith(
        f"{path}:3: invalid YAML: this line is indented differently from the keys beside it ("
    )


@pytest.mark.parametrize(("opened", "text"), [("[", "tokens: [t\n"), ("{", "tokens: {t: 1\n")])
def test_an_unclosed_bracket_is_reported_where_it_was_opened(
    tmp_path: Path, opened: str, text: str
) -> None:
    path = write(tmp_path, "ari: {password: x}\napi:\n  " + text + "tenants:\n  default: {}\n")
    assert error_of(path).startswith(
        f"{path}:3: invalid YAML: the {opened} opened here is not closed ("
    )


@pytest.mark.parametrize("quote", ['"', "'"])
def test_an_unclosed_quote_is_reported_where_it_was_opened(tmp_path: Path, quote: str) -> None:
    # Found by review: reported at the end of the file, "unexpected end of stream".
    text = f"ari:\n  password: {quote}abc\napi:\n  tokens: [t]\ntenants:\n  default: {{}}\n"
    path = write(tmp_path, text)
    assert error_of(path).startswith(f"{path}:2: invalid YAML: the quote opened here is not closed")


def test_a_wrong_list_entry_is_not_also_an_empty_list(tmp_path: Path) -> None:
    # Found by review: "api.tokens: must not be empty" came first, for a list of one entry.
    path = write(
        tmp_path,
        """\
        ari: {password: x}
        api:
          tokens:
            - token: abcdefabcdef
              tenant: [acme]
        tenants: {default: {}}
        """,
    )
    message = error_of(path)
    assert "must not be empty" not in message
    assert f"{path}:5: api.tokens[0].tenant: unknown key (did you mean 'tenants'?)" in message
    empty = write(tmp_path, "ari: {password: x}\napi: {tokens: []}\ntenants: {default: {}}\n")
    assert error_of(empty) == f"{empty}:2: api.tokens: must not be empty"


def test_a_key_set_over_a_merge_is_reported_on_its_own_line(tmp_path: Path) -> None:
    # Found by review: the error pointed at the anchor's key, not the key that set the value.
    path = write(
        tmp_path,
        """\
        ari: {password: x}
        api: {tokens: [t]}
        tenants:
          default: &base
            region: FR
          other:
            <<: *base
            region: XX
        """,
    )
    assert error_of(path).startswith(f"{path}:8: tenants.other.region: 'XX' is not")
    # A list's entries too.
    path = write(
        tmp_path,
        """\
        ari: {password: x}
        api: {tokens: [t]}
        tenants:
          default: &base
            refused_number_types: [premium_rate]
          other:
            <<: *base
            refused_number_types:
              - premium_rate
              - bogus_type
        """,
    )
    assert error_of(path).startswith(f"{path}:10: tenants.other.refused_number_types[1]")


def test_a_bracket_closed_by_the_wrong_one_is_reported_on_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, "ari: {password: x}\napi:\n  tokens: [t, }\ntenants: {default: {}}\n")
    assert error_of(path) == f"{path}:3: invalid YAML: expected the node content, but found '}}'"


def test_a_file_that_ends_inside_a_value_is_reported_on_its_last_line(tmp_path: Path) -> None:
    path = write(tmp_path, "ari: {password: x}\napi: {tokens: [t]}\nfraud: {code: #}\n")
    assert error_of(path).startswith(
        f"{path}:3: invalid YAML: the file ends where a value was expected ("
    )


def test_a_tab_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, "ari:\n\tpassword: x\n")
    assert error_of(path).startswith(f"{path}:2: invalid YAML: a tab: YAML is indented with spaces")


def test_missing_file(tmp_path: Path) -> None:
    assert error_of(tmp_path / "nope.yaml") == f"{tmp_path / 'nope.yaml'}: no such file"


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n"])
def test_empty_file(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    assert error_of(path) == f"{path}: the file is empty"


@pytest.mark.parametrize(
    ("text", "found"), [("- a\n- b\n", "a list"), ("just text\n", "a single value")]
)
def test_top_level_must_be_a_mapping(tmp_path: Path, text: str, found: str) -> None:
    path = write(tmp_path, text)
    assert error_of(path) == f"{path}:1: the top level must be a mapping of sections, found {found}"


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("ari: {password: caf\xe9}\n".encode("latin-1"))
    assert error_of(path).startswith(f"{path}: not UTF-8 text")


def test_duplicate_keys_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL.replace("password: secret-ari", "password: a\n  password: b"))
    assert error_of(path) == f"{path}:3: ari.password: duplicate key (first at line 2)"


def test_errors_in_lists_name_index_and_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        MINIMAL
        + textwrap.dedent(
            """\
            dial_profiles:
              - name: us
                match: ["+1"]
              - name: fr
                match: FR
                number_format: foo
            """
        ),
    )
    assert error_of(path).startswith(f"{path}:12: dial_profiles[1].number_format: Input should be")


def test_cross_checks_name_the_exact_key(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        ari: {password: x}
        api:
          tokens:
            - a
            - token: b
              tenants: [default, nobody]
        dial_profiles:
          - {name: p, match: "+1"}
          - {name: p, match: "+33"}
        tenants: {default: {}}
        """,
    )
    assert error_of(path).splitlines() == [
        f"{path}:6: api.tokens[1].tenants[1]: no such tenant",
        f"{path}:9: dial_profiles[1].name: duplicate profile name",
    ]


def test_all_problems_listed_in_line_order(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        ari: {password: x, heartbeat: -1}
        api: {tokens: [t], listen: localhost}
        tenants:
          Bad_Name: {}
          default:
            region: XX
            fraud: {code: "12"}
            calls: {attempts: 0}
            prompts:
              en: {greeting: hello, bogus: "sound:x"}
              EN: {greeting: "sound:x"}
        """,
    )
    assert error_of(path).splitlines() == [
        f"{path}:1: ari.heartbeat: Input should be greater than 0",
        f"{path}:2: api.listen: must be host:port, e.g. 127.0.0.1:8080 or [::1]:8080",
        f"{path}:4: tenants.Bad_Name: should be 1-63 of a-z 0-9 - _, "
        "starting with a letter or digit",
        f"{path}:6: tenants.default.region: 'XX' is not an ISO 3166 region code phonenumbers "
        "knows (e.g. US, FR)",
        f"{path}:7: tenants.default.fraud.code: should be digits then '#', e.g. 0#",
        f"{path}:8: tenants.default.calls.attempts: Input should be greater than or equal to 1",
        f"{path}:10: tenants.default.prompts.en.greeting: a prompt is sound:NAME, recording:NAME "
        "or an audio file (.wav, .mp3, ...)",
        f"{path}:10: tenants.default.prompts.en.bogus: Input should be 'greeting', "
        "'greeting_fraud', 'extension_prompt', 'operator_transfer', 'operator_after_digits', "
        "'code_prompt', 'code_prompt_fraud', 'success', 'denied', 'retry', 'no_input', "
        "'fraud_confirmation', 'goodbye' or 'organization_name'",
        f"{path}:11: tenants.default.prompts.EN: should be a language code such as en, fr or fr-CA",
    ]


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ("ari: {password: x, url: ftp://x}", "ari.url: must be an http:// or https:// URL"),
        ("ari: {password: ''}", "ari.password: must not be empty"),
        ("trunk: {endpoint: PJSIP/trunk}", "trunk.endpoint: must contain {number}"),
        ("trunk: {endpoint: 'PJSIP/{number}@{x}'}", "trunk.endpoint: the only placeholder"),
        ("trunk: {dial_timeout: 0}", "trunk.dial_timeout: Input should be greater than or equal"),
        ("trunk: {dial_timeout: 301}", "trunk.dial_timeout: Input should be less than or equal"),
        ("api: {tokens: []}", "api.tokens: must not be empty"),
        ("api: {tokens: [a, a]}", "api.tokens: the same token appears twice"),
        ("api: {tokens: [a], listen: 'x:99999'}", "api.listen: must be host:port"),
        ("logging: {format: xml}", "logging.format: Input should be 'text' or 'json'"),
        ("shutdown: {grace_period: -1}", "shutdown.grace_period: Input should be greater"),
        ("dial_profiles: [{name: x, match: []}]", "dial_profiles[0].match: must not be empty"),
        ("dial_profiles: [{name: x, match: ZZ}]", "dial_profiles[0].match: 'ZZ' is not an ISO"),
        (
            "dial_profiles: [{name: x, match: ['1425']}]",
            "dial_profiles[0].match: '1425' is neither a region nor a prefix: write '+1425'",
        ),
        ("dial_profiles: [{name: x, match: '+', pre_delay: -1}]", "dial_profiles[0].match:"),
        (
            "dial_profiles: [{name: x, match: FR, extension_prefix: 'p'}]",
            "dial_profiles[0].extension_prefix: should be up to 20 of",
        ),
    ],
)
def test_section_validation(tmp_path: Path, section: str, message: str) -> None:
    base = {"ari": "ari: {password: x}", "api": "api: {tokens: [t]}"}
    key = section.split(":", 1)[0]
    base[key] = section
    text = "\n".join(base.values()) + "\ntenants: {default: {}}\n"
    assert message in error_of(write(tmp_path, text))


# --- the models, as the API uses them ----------------------------------------


def test_tenant_settings_validate_json_with_field_paths() -> None:
    with pytest.raises(ValidationError) as info:
        TenantSettings.model_validate(
            {
                "region": "fr",
                "calls": {"attempts": "x"},
                "limits": {"per_user": [{"count": 0, "window": 5}]},
                "surprise": 1,
                "allowed_countries": [],
            }
        )
    assert format_errors(info.value) == [
        'allowed_countries: list at least one country, ["*"] for any, or null for the region',
        "calls.attempts: Input should be a valid integer, unable to parse string as an integer",
        "limits.per_user[0].count: Input should be greater than or equal to 1",
        "surprise: unknown key",
    ]
    assert field_errors(info.value)[2].loc == ("limits", "per_user", 0, "count")


def test_tenant_settings_normalise() -> None:
    tenant = TenantSettings.model_validate(
        {
            "region": "fr",
            "allowed_countries": ["fr", "de"],
            "prompts": {"fr": {"greeting": "a.wav"}},
        }
    )
    assert tenant.region == "FR"
    assert tenant.allowed_country_set() == {"FR", "DE"}
    assert tenant.prompts["fr"][MessageType.GREETING] == "a.wav"
    anywhere = TenantSettings.model_validate({"allowed_countries": ["*"]})
    assert anywhere.allows_country("JM") and not anywhere.allows_country("001")
    both = TenantSettings.model_validate({"allowed_countries": ["*", "001", "*"]})
    assert both.allowed_countries == ("*", "001") and both.allows_country("001")
    with pytest.raises(ValidationError, match="must be alone, or with"):
        TenantSettings.model_validate({"allowed_countries": ["*", "US"]})
    assert TenantSettings.model_validate({"allowed_countries": ["001"]}).allowed_country_set() == {
        "001"
    }


def test_models_are_frozen() -> None:
    tenant = TenantSettings()
    with pytest.raises(ValidationError):
        tenant.region = "FR"  # type: ignore[misc]


def test_json_schemas_for_the_openapi_document() -> None:
    schema = TenantSettings.model_json_schema()
    assert schema["additionalProperties"] is False
    assert "operator_assistance" in schema["properties"]
    assert Config.model_json_schema()["required"] == ["ari", "api", "tenants"]


def test_dial_profile_match_normalised() -> None:
    profile = DialProfile.model_validate({"name": "uk", "match": ["+44 20", "fr"]})
    assert profile.match == ("+4420", "FR")
    assert profile.prefixes == ("+4420",) and profile.countries == ("FR",)


@pytest.mark.parametrize(
    ("match", "refused"),
    [
        (["+33", "+41"], True),  # +41 44 123 45 67 and +33 4 41 23 45 67 dialled alike
        (["+44", "FR"], True),
        (["+3"], True),  # thirty-odd countries
        (["FR"], False),
        (["+1", "US", "CA"], False),  # one country code, one numbering plan
        (["+4420", "GB"], False),
    ],
)
def test_a_national_dial_profile_stays_within_one_country_code(
    match: list[str], refused: bool
) -> None:
    # Found by review: a national profile over two countries dialled a Swiss number as a
    # French one, which had passed the country rules as Swiss.
    data = {"name": "eu", "match": match, "number_format": "national"}
    if refused:
        with pytest.raises(ValidationError, match="within one country code"):
            DialProfile.model_validate(data)
    else:
        DialProfile.model_validate(data)
    DialProfile.model_validate({**data, "number_format": "e164"})  # the country code stays


def test_trunk_dial_string_has_no_format_surprises() -> None:
    assert TrunkSettings().dial_string("+14255551234") == "PJSIP/+14255551234@trunk"
    trunk = TrunkSettings(endpoint="PJSIP/{number}@carrier,{number}")
    assert trunk.dial_string("1") == "PJSIP/1@carrier,1"


def test_ipv6_listen(tmp_path: Path) -> None:
    path = write(
        tmp_path, MINIMAL.replace("tokens: [secret-token]", "tokens: [t]\n  listen: '[::1]:9000'")
    )
    api = load_config(path, environ={}).api
    assert (api.host, api.port) == ("::1", 9000)


# --- secrets ------------------------------------------------------------------


def test_secrets_never_print(tmp_path: Path) -> None:
    text = MINIMAL.replace("default: {}", "default: {webhook_secret: secret-hook}")
    config = load_config(write(tmp_path, text), environ={})
    for shown in (repr(config), str(config), str(config.model_dump())):
        assert "secret-ari" not in shown
        assert "secret-token" not in shown
        assert "secret-hook" not in shown
    dump = redacted_dump(config)
    assert dump["ari"]["password"] == "***"
    assert dump["api"]["tokens"] == [
        {"token": "***", "tenants": None, "name": None, "limits": [{"count": 1000, "window": 60}]}
    ]
    assert dump["tenants"]["default"]["webhook_secret"] == "***"
    assert dump["tenants"]["default"]["refused_number_types"][0] == "premium_rate"
    assert dump["storage"]["path"] == "/var/lib/phonemfa/phonemfa.db"
    assert "secret" not in str(dump).replace("webhook_secret", "")


def test_errors_do_not_echo_secret_values(tmp_path: Path) -> None:
    path = write(
        tmp_path, MINIMAL.replace("tokens: [secret-token]", "tokens: [{token: secret-token, x: 1}]")
    )
    assert "secret-token" not in error_of(path)


@pytest.mark.parametrize(
    ("source", "ok"),
    [
        ("/etc/phonemfa/greeting.wav", True),
        ("prompts/fr/SUCCESS.MP3", True),
        ("sound:custom/thanks", True),
        ("recording:greeting-2024", True),
        ("hello", False),
        ("greeting.txt", False),
        ("sound:", False),
        ("sound:../../etc/passwd", False),
        ("sound:/abs", False),
        ("tone:ring", False),
    ],
)
def test_prompt_sources(source: str, ok: bool) -> None:
    body = {"prompts": {"en": {"greeting": source}}}
    if ok:
        assert TenantSettings.model_validate(body).prompts["en"][MessageType.GREETING] == source
    else:
        with pytest.raises(ValidationError):
            TenantSettings.model_validate(body)


def test_reference_example_documents_every_key() -> None:
    import phonemfa.config as config_module

    text = (EXAMPLES / "phonemfa.yaml").read_text()
    models = [
        obj
        for obj in vars(config_module).values()
        if isinstance(obj, type) and issubclass(obj, config_module._Model)
    ]
    missing = sorted(
        f"{model.__name__}.{name}"
        for model in models
        for name in model.model_fields
        if f"{name}:" not in text
    )
    assert missing == []
    for message in MessageType:
        assert message.value in text


# The least a config needs beside what a test writes after it (line 3 onwards).
TOKENS_AND_TENANT = "api: {tokens: [t]}\ntenants: {default: {region: US}}\n"


@pytest.mark.parametrize(
    ("written", "kept"),
    [
        ("+1 (425) 555-0199", "+14255550199"),
        ("14255550199", "14255550199"),
        ("+33 1.23.45.67.89", "+33123456789"),
        ("+44 (0)20 7946 0000", "+442079460000"),  # the trunk prefix dropped, not kept
        ("020 7946 0000", "02079460000"),
        ("", None),  # `caller_id: "${PHONEMFA_CALLER_ID:-}"` unset: no caller id
        ("  ", None),
    ],
)
def test_the_caller_id_is_a_number_without_separators(
    tmp_path: Path, written: str, kept: str | None
) -> None:
    path = write(
        tmp_path, TOKENS_AND_TENANT + f'ari: {{password: x}}\ntrunk: {{caller_id: "{written}"}}\n'
    )
    assert load_config(path, environ={}).trunk.caller_id == kept


@pytest.mark.parametrize(
    "written", ["hello", "Contoso <+14255550199>", "+1 425 555 0199 x12", "+", "+1 42", "(425) 555"]
)
def test_a_caller_id_that_is_not_a_number_is_refused_where_it_is(
    tmp_path: Path, written: str
) -> None:
    path = write(
        tmp_path, TOKENS_AND_TENANT + f'ari: {{password: x}}\ntrunk:\n  caller_id: "{written}"\n'
    )
    assert error_of(path) == (
        f"{path}:5: trunk.caller_id: must be a phone number: +country code and number "
        "(e.g. +14255550199), or the digits your carrier wants"
    )


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://127.0.0.1:8088/ari", "without /ari (phonemfa adds it)"),
        ("http://127.0.0.1:8088/ari/", "without /ari (phonemfa adds it)"),
        ("http://phonemfa:UrlSecret99@127.0.0.1:8088", "set ari.username and ari.password"),
        ("http://127.0.0.1:8088?x=1", "must not have a query"),
    ],
)
def test_ari_url_mistakes_are_refused_where_they_are(tmp_path: Path, url: str, says: str) -> None:
    path = write(tmp_path, TOKENS_AND_TENANT + f"ari:\n  password: x\n  url: {url}\n")
    message = error_of(path)
    assert message.startswith(f"{path}:5: ari.url: ") and says in message
    assert "UrlSecret99" not in message


def test_ari_url_behind_a_proxy_path_is_kept(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        TOKENS_AND_TENANT + "ari: {password: x, url: 'https://pbx.example.com/asterisk/'}\n",
    )
    assert load_config(path, environ={}).ari.url == "https://pbx.example.com/asterisk"


def test_a_fraud_code_lost_to_a_yaml_comment_says_so(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "api: {tokens: [t]}\nari: {password: x}\ntenants:\n  default:\n    fraud:\n      code: #\n",
    )
    assert error_of(path) == (
        f"{path}:6: tenants.default.fraud.code: is empty (in a YAML file ' #' starts a "
        'comment: quote the code, "0#")'
    )


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("*Xk9-secret", "a value starting with '*' is a YAML alias"),
        ("!Xk9-secret", "a value starting with '!' is a YAML tag"),
        ("!!Xk9-secret", "a value starting with '!' is a YAML tag"),
    ],
)
def test_a_password_that_yaml_reads_as_syntax_is_not_echoed(
    tmp_path: Path, value: str, says: str
) -> None:
    # Generated passwords start with * or ! too: PyYAML's message quoted the rest of them
    # ("found undefined alias 'Xk9-secret'"), and serve prints it to its log (found by review).
    path = write(tmp_path, MINIMAL.replace("secret-ari", value))
    message = error_of(path)
    assert "Xk9" not in message
    assert message.startswith(f"{path}:2: ") and says in message and "quote" in message


@pytest.mark.parametrize("value", ["!!int Xk9", "!!float Xk9", "!!timestamp Xk9"])
def test_a_value_that_does_not_fit_its_explicit_tag_is_a_config_error(
    tmp_path: Path, value: str
) -> None:
    # A ValueError from PyYAML's constructor escaped as a traceback quoting the value.
    path = write(tmp_path, MINIMAL.replace("secret-ari", value))
    message = error_of(path)
    assert message.startswith(f"{path}:2: ari.password: ") and "Xk9" not in message


@pytest.mark.parametrize("key", ["!!int Xk9", "!!float Xk9", "!!timestamp Xk9", "!Xk9"])
def test_a_key_that_does_not_fit_its_explicit_tag_is_a_config_error(
    tmp_path: Path, key: str
) -> None:
    # As a value's (above), a key's tag was built by PyYAML where the walker read the key:
    # '!!int Xk9: 1' escaped as a traceback (ValueError) quoting it, '!!timestamp' as an
    # AttributeError.
    path = write(tmp_path, MINIMAL.replace("password: secret-ari", f"{key}: 1"))
    message = error_of(path)
    assert message.startswith(f"{path}:2: ") and "Xk9" not in message, message


def test_a_section_indented_under_a_tenant_is_not_hinted_as_itself(tmp_path: Path) -> None:
    # "tenants.default.logging: unknown key (did you mean 'logging'?)": the hint named the
    # very key written, when the section had slipped under a tenant (found by review).
    path = write(tmp_path, MINIMAL.replace("default: {}", "default:\n    logging: {}"))
    assert error_of(path) == (
        f"{path}:7: tenants.default.logging: unknown key "
        "('logging' is a top-level section: check this line's indentation)"
    )


@pytest.mark.parametrize(
    ("key", "hint"),
    [
        ("tenants", "('tenants' is a section of the config file, not a tenant setting)"),
        ("endpoint", "('endpoint' is a setting of the config file, under trunk)"),
    ],
)
def test_a_file_setting_put_through_the_api_is_named_as_one(key: str, hint: str) -> None:
    with pytest.raises(ValidationError) as info:
        TenantSettings.model_validate({key: 5})
    assert format_errors(info.value) == [f"{key}: unknown key {hint}"]


def test_a_single_value_where_a_list_goes_says_list_not_tuple(tmp_path: Path) -> None:
    # "Input should be a valid tuple": a YAML or JSON author never wrote a tuple.
    path = write(tmp_path, MINIMAL.replace("default: {}", "default: {allowed_countries: US}"))
    assert error_of(path) == f"{path}:6: tenants.default.allowed_countries: Input should be a list"
    with pytest.raises(ValidationError) as info:
        TenantSettings.model_validate({"limits": {"per_user": {"count": 5, "window": 60}}})
    assert format_errors(info.value) == ["limits.per_user: Input should be a list"]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"user": "\u200b"}, "user: has no visible characters"),
        ({"callback_url": "ftp://x"}, "callback_url: must be an http:// or https:// URL"),
    ],
)
def test_a_request_field_error_has_no_python_prefix(body: dict[str, str], expected: str) -> None:
    # A ValueError in a validator read "user: Value error, has no visible characters".
    from phonemfa.api import StartCallBody

    with pytest.raises(ValidationError) as info:
        StartCallBody.model_validate({"phone": "+14255550100", **body})
    assert format_errors(info.value) == [expected]


def test_a_token_limited_to_no_tenant_is_refused(tmp_path: Path) -> None:
    # `tenants: []` was taken: a token that may act for nobody, every request a 403; an
    # administrator who meant "no limit" leaves the key out (found by review).
    path = write(tmp_path, MINIMAL.replace("[secret-token]", "[{token: t, tenants: []}]"))
    assert error_of(path) == (
        f"{path}:4: api.tokens[0].tenants: list at least one tenant, or leave tenants out "
        "for a token for every tenant"
    )


def test_an_empty_storage_path_is_refused_at_its_line(tmp_path: Path) -> None:
    # "" was Path("."): accepted by check-config, refused by serve only after it had put
    # its lock file in the working directory (found by review).
    path = write(tmp_path, MINIMAL + 'storage:\n  path: ""\n')
    line = MINIMAL.count("\n") + 2
    assert error_of(path) == (
        f"{path}:{line}: storage.path: must name the database file, "
        "e.g. /var/lib/phonemfa/phonemfa.db"
    )


def test_retention_is_90_days_unless_set_and_null_keeps_calls_for_ever(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, MINIMAL)).storage.retention_days == 90
    kept = write(tmp_path, MINIMAL + "storage:\n  retention_days: null\n")
    assert load_config(kept).storage.retention_days is None
    line = MINIMAL.count("\n") + 2
    for short in ("0", "29"):
        path = write(tmp_path, MINIMAL + f"storage:\n  retention_days: {short}\n")
        assert error_of(path) == (
            f"{path}:{line}: storage.retention_days: must be at least 30 days: a rate "
            "limit's window may be up to 30 days and counts the calls kept"
        )
    # From the environment, a value is a string: its digits are taken (found by review).
    from_env = write(tmp_path, MINIMAL + "storage:\n  retention_days: ${RD}\n")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("RD", "45")
        assert load_config(from_env).storage.retention_days == 45
    for odd in ("true", "'45.0'", "45.0", "'forty'", "''"):  # it deletes calls: no guessing
        path = write(tmp_path, MINIMAL + f"storage:\n  retention_days: {odd}\n")
        assert error_of(path) == (
            f"{path}:{line}: storage.retention_days: must be a whole number of days, or null "
            "to keep calls for ever"
        )


def test_storage_synchronous_is_normal_or_full(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, MINIMAL)).storage.synchronous == "normal"
    full = write(tmp_path, MINIMAL + "storage:\n  synchronous: FULL\n")
    assert load_config(full).storage.synchronous == "full"
    path = write(tmp_path, MINIMAL + "storage:\n  synchronous: off\n")
    line = MINIMAL.count("\n") + 2
    assert error_of(path).startswith(f"{path}:{line}: storage.synchronous: ")
    assert "'normal' or 'full'" in error_of(path)


def test_a_dtmf_gap_of_zero_is_refused_asterisk_would_send_100_ms(tmp_path: Path) -> None:
    path = write(
        tmp_path, MINIMAL + "dial_profiles:\n  - {name: p, match: ['+1'], dtmf_gap_ms: 0}\n"
    )
    assert error_of(path).endswith(
        "dial_profiles[0].dtmf_gap_ms: Input should be greater than or equal to 1"
    )


def test_the_settings_patch_takes_null_at_any_depth_as_the_api_does() -> None:
    # Found by review: only the top and `prompts` took null in the document, and clients
    # made from it refused patches the API takes ({"calls": {"attempts": null}}).
    import jsonschema

    from phonemfa.openapi import openapi_document

    doc = openapi_document()
    schema = {"$ref": "#/components/schemas/TenantSettingsPatch", **doc}
    validator = jsonschema.Draft202012Validator(schema)
    for patch in (
        {"calls": {"attempts": None}},
        {"fraud": {"code": None, "enabled": False}},
        {"limits": {"per_user": None}},
        {"prompts": {"en": {"greeting": None}}},
        {"prompts": {"en": None}},
        {"region": None},
        {"calls": {"attempts": 2}},
    ):
        assert validator.is_valid(patch), patch
    for patch in ({"calls": {"atempts": 2}}, {"calls": {"attempts": "x"}}, {"regio": "US"}):
        assert not validator.is_valid(patch), patch
