"""JSON on the hot paths (phonemfa.jsoncodec): orjson, with the standard library's leniency
where a timeline detail needs it."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from phonemfa import jsoncodec

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text()
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)  # fmt: skip


@given(_JSON)
def test_what_it_writes_reads_back_as_the_standard_library_wrote_it(value: object) -> None:
    assert jsoncodec.loads(jsoncodec.dumps_text(value)) == json.loads(json.dumps(value))


def test_a_timeline_detail_json_cannot_hold_is_written_as_text_never_an_error() -> None:
    class Odd:
        def __str__(self) -> str:
            return "odd"

    detail = {"big": 2**70, 5: "five", "odd": Odd()}
    assert json.loads(jsoncodec.dumps_text(detail)) == {"big": 2**70, "5": "five", "odd": "odd"}
    assert json.loads(jsoncodec.dumps_text({5: "five", "odd": Odd()})) == {
        "5": "five",
        "odd": "odd",
    }


def test_bad_json_is_a_value_error_as_with_the_standard_library() -> None:
    with pytest.raises(ValueError):
        jsoncodec.loads('{"type": ')


def test_what_the_standard_library_wrote_is_read_back() -> None:
    written = json.dumps({"level": float("nan"), "peak": float("inf")})  # older timelines
    read = jsoncodec.loads_lenient(written)
    assert read["level"] != read["level"] and read["peak"] == float("inf")
    assert jsoncodec.loads_lenient(b'{"name": "caf\xe9"}') == {"name": "caf\ufffd"}
