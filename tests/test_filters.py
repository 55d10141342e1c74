"""FilterCriteria: one test per documented behaviour of Lambda event filtering."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from streamfn.connectors.kinesis import DynamoDBStreamSource, KinesisSource
from streamfn.connectors.sqs import SQSSource
from streamfn.errors import ConfigError
from streamfn.filters import MAX_FILTERS, MAX_PATTERN_CHARS, FilterCriteria
from streamfn.record import Record


def match(pattern: dict[str, Any], view: dict[str, Any]) -> bool:
    return FilterCriteria.parse(pattern).matches(view)


def sqs(body: Any, **attributes: str) -> dict[str, Any]:
    return {"body": body, "attributes": attributes, "messageAttributes": {}}


# --- accepted shapes -------------------------------------------------------------------------


def test_aws_filters_shape_with_json_string_patterns_is_accepted() -> None:
    criteria = FilterCriteria.parse(
        {"Filters": [{"Pattern": json.dumps({"body": {"type": ["order"]}})}]}
    )
    assert criteria.matches(sqs({"type": "order"}))
    assert not criteria.matches(sqs({"type": "refund"}))


def test_list_of_dict_and_json_string_patterns_is_accepted() -> None:
    criteria = FilterCriteria.parse([{"body": {"type": ["a"]}}, '{"body": {"type": ["b"]}}'])
    assert criteria.matches(sqs({"type": "a"}))
    assert criteria.matches(sqs({"type": "b"}))


def test_single_dict_pattern_is_accepted() -> None:
    assert FilterCriteria.parse({"body": ["hello"]}).matches(sqs("hello"))


def test_parse_returns_an_already_parsed_criteria_unchanged() -> None:
    criteria = FilterCriteria.parse({"body": ["hello"]})
    assert FilterCriteria.parse(criteria) is criteria


def test_repr_shows_the_decoded_patterns() -> None:
    assert repr(FilterCriteria.parse('{"a": ["x"]}')) == "FilterCriteria([{'a': ['x']}])"


def test_none_criteria_matches_everything() -> None:
    assert FilterCriteria.parse(None).matches(sqs("anything"))


def test_empty_filters_list_matches_everything() -> None:
    assert FilterCriteria.parse({"Filters": []}).matches(sqs("anything"))
    assert FilterCriteria.parse([]).matches({})


def test_filters_are_ored() -> None:
    criteria = FilterCriteria.parse(
        {
            "Filters": [
                {"Pattern": '{"body": {"kind": ["a"]}}'},
                {"Pattern": '{"attributes": {"SenderId": ["svc"]}}'},
            ]
        }
    )
    assert criteria.matches(sqs({"kind": "a"}, SenderId="other"))
    assert criteria.matches(sqs({"kind": "z"}, SenderId="svc"))
    assert not criteria.matches(sqs({"kind": "z"}, SenderId="other"))


# --- validation ------------------------------------------------------------------------------


def test_invalid_json_pattern_is_rejected_naming_its_index() -> None:
    with pytest.raises(ConfigError, match=r"Filters\[1\]: pattern is not valid JSON"):
        FilterCriteria.parse({"Filters": [{"Pattern": "{}"}, {"Pattern": "{body: x"}]})


def test_nan_in_json_pattern_is_rejected() -> None:
    with pytest.raises(ConfigError, match="not valid JSON"):
        FilterCriteria.parse(['{"n": [{"numeric": [">", NaN]}]}'])


def test_pattern_that_is_not_an_object_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"Filters\[0\]: pattern must be a JSON object, not list"):
        FilterCriteria.parse({"Filters": [{"Pattern": '["a"]'}]})


def test_pattern_over_4096_characters_is_rejected() -> None:
    too_long = {"body": ["x" * MAX_PATTERN_CHARS]}
    with pytest.raises(ConfigError, match=r"Filters\[0\]: pattern has \d+ characters; the limit"):
        FilterCriteria.parse(too_long)
    with pytest.raises(ConfigError, match="the limit is 4096"):
        FilterCriteria.parse({"Filters": [{"Pattern": json.dumps(too_long)}]})


def test_pattern_of_exactly_4096_characters_is_accepted() -> None:
    pattern = '{"body":["' + "x" * (MAX_PATTERN_CHARS - 13) + '"]}'
    assert len(pattern) == MAX_PATTERN_CHARS
    FilterCriteria.parse([pattern])


def test_more_than_10_filters_are_rejected() -> None:
    FilterCriteria.parse([{"n": [i]} for i in range(MAX_FILTERS)])
    with pytest.raises(ConfigError, match="11 filters; the limit is 10"):
        FilterCriteria.parse([{"n": [i]} for i in range(MAX_FILTERS + 1)])


def test_filters_that_is_not_a_list_is_rejected() -> None:
    with pytest.raises(ConfigError, match="Filters must be a list"):
        FilterCriteria.parse({"Filters": {"Pattern": "{}"}})


def test_pattern_that_is_not_json_serializable_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"Filters\[0\]: pattern is not JSON-serializable"):
        FilterCriteria.parse({"a": [{1, 2}]})


def test_pattern_of_another_type_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"Filters\[1\]: pattern must be a JSON object or string"):
        FilterCriteria.parse([{"a": ["x"]}, 5])


def test_filter_without_pattern_key_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"Filters\[0\] must be an object with a 'Pattern' key"):
        FilterCriteria.parse({"Filters": [{"pattern": "{}"}]})


def test_unsupported_operator_is_rejected_listing_supported_ones() -> None:
    with pytest.raises(ConfigError, match=r"Filters\[0\]: at body.name: unsupported operator") as e:
        FilterCriteria.parse({"body": {"name": [{"wildcard": "a*"}]}})
    assert "anything-but, equals-ignore-case, exists, numeric, prefix, suffix" in str(e.value)


def test_operator_object_with_two_keys_is_rejected() -> None:
    with pytest.raises(ConfigError, match="exactly one key"):
        FilterCriteria.parse({"a": [{"prefix": "x", "suffix": "y"}]})


@pytest.mark.parametrize(
    "numeric",
    [
        "100",
        [">"],
        ["==", 1],
        [">", "10"],
        [">", True],
        [">", 1, "<"],
        [">", 1, ">", 5],
        ["=", 1, "<", 5],
        [">", 5, "<", 1],
        [">", 5, "<", 5],
    ],
)
def test_malformed_numeric_operator_is_rejected(numeric: Any) -> None:
    with pytest.raises(ConfigError, match=r"Filters\[0\]: at price: .*numeric"):
        FilterCriteria.parse({"price": [{"numeric": numeric}]})


def test_numeric_bound_that_overflows_to_infinity_is_rejected() -> None:
    with pytest.raises(ConfigError, match="at price: numeric takes"):
        FilterCriteria.parse(['{"price": [{"numeric": [">", 1e400]}]}'])


def test_exists_with_non_bool_is_rejected() -> None:
    with pytest.raises(ConfigError, match="exists takes true or false"):
        FilterCriteria.parse({"a": [{"exists": "true"}]})


def test_leaf_that_is_not_a_list_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"at body.type: expected a list of values"):
        FilterCriteria.parse({"body": {"type": "order"}})


def test_operator_outside_a_list_is_rejected_with_a_hint() -> None:
    with pytest.raises(ConfigError, match="operators go inside a list"):
        FilterCriteria.parse({"a": {"exists": True}})


def test_nested_list_inside_a_leaf_is_rejected() -> None:
    with pytest.raises(ConfigError, match="neither a value nor an operator object"):
        FilterCriteria.parse({"a": [["x"]]})


def test_prefix_with_a_non_string_is_rejected() -> None:
    with pytest.raises(ConfigError, match="prefix takes a string"):
        FilterCriteria.parse({"a": [{"prefix": 1}]})
    with pytest.raises(ConfigError, match="prefix equals-ignore-case takes a string"):
        FilterCriteria.parse({"a": [{"prefix": {"equals-ignore-case": 1}}]})


def test_anything_but_with_an_unsupported_inner_operator_is_rejected() -> None:
    with pytest.raises(ConfigError, match="prefix, suffix, equals-ignore-case"):
        FilterCriteria.parse({"a": [{"anything-but": {"wildcard": "x*"}}]})


def test_empty_leaf_list_is_rejected() -> None:
    with pytest.raises(ConfigError, match="empty list matches nothing"):
        FilterCriteria.parse({"a": []})


def test_anything_but_mixing_strings_and_numbers_is_rejected() -> None:
    with pytest.raises(ConfigError, match="only strings or only numbers"):
        FilterCriteria.parse({"a": [{"anything-but": ["x", 1]}]})


def test_or_with_fewer_than_two_objects_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"at \$or: \$or takes a list of at least two"):
        FilterCriteria.parse({"$or": [{"a": ["x"]}]})


def test_criteria_of_an_unknown_type_is_rejected() -> None:
    with pytest.raises(ConfigError, match="not int"):
        FilterCriteria.parse(42)


# --- operators -------------------------------------------------------------------------------


def test_null_matches_a_present_key_holding_null() -> None:
    assert match({"body": {"UserID": [None]}}, sqs({"UserID": None}))
    assert not match({"body": {"UserID": [None]}}, sqs({"UserID": "u1"}))


def test_null_does_not_match_a_missing_key() -> None:
    assert not match({"body": {"UserID": [None]}}, sqs({}))


def test_empty_string_matches_only_the_empty_string_not_null() -> None:
    assert match({"body": {"LastName": [""]}}, sqs({"LastName": ""}))
    assert not match({"body": {"LastName": [""]}}, sqs({"LastName": None}))


def test_equals_matches_strings_byte_for_byte_without_case_folding() -> None:
    assert match({"body": {"Name": ["Alice"]}}, sqs({"Name": "Alice"}))
    assert not match({"body": {"Name": ["Alice"]}}, sqs({"Name": "alice"}))
    assert not match({"body": {"Name": ["Alice"]}}, sqs({"Name": "Alice "}))


def test_equals_numbers_compare_by_value_as_aws_does_not_as_its_docs_say() -> None:
    assert match({"body": {"n": [300]}}, sqs({"n": 300}))
    assert match({"body": {"n": [300]}}, sqs({"n": 300.0}))
    assert match({"body": {"n": [300.0]}}, sqs({"n": 300}))
    assert match({"body": {"n": [300]}}, sqs({"n": [1, 300.0]}))
    assert not match({"body": {"n": [300]}}, sqs({"n": 300.5}))
    assert not match({"body": {"n": [300]}}, sqs({"n": "300"}))
    assert not match({"body": {"n": ["300"]}}, sqs({"n": 300}))


def test_equals_numbers_among_other_kinds_still_compare_by_value() -> None:
    pattern = {"n": ["300", 300, None]}
    assert match(pattern, {"n": 300.0})
    assert match(pattern, {"n": "300"})
    assert not match(pattern, {"n": "300.0"})


def test_equals_booleans_only_match_booleans() -> None:
    assert match({"body": {"ok": [True]}}, sqs({"ok": True}))
    assert not match({"body": {"ok": [True]}}, sqs({"ok": 1}))
    assert not match({"body": {"n": [1]}}, sqs({"n": True}))


def test_equals_ignore_case_folds_case() -> None:
    pattern = {"body": {"Name": [{"equals-ignore-case": "alice"}]}}
    assert match(pattern, sqs({"Name": "ALICE"}))
    assert not match(pattern, sqs({"Name": "alicia"}))


def test_fields_of_a_pattern_are_anded() -> None:
    pattern = {"body": {"Location": ["New York"], "Day": ["Monday"]}}
    assert match(pattern, sqs({"Location": "New York", "Day": "Monday"}))
    assert not match(pattern, sqs({"Location": "New York", "Day": "Tuesday"}))


def test_values_in_a_leaf_list_are_ored() -> None:
    pattern = {"body": {"PaymentType": ["Credit", "Debit"]}}
    assert match(pattern, sqs({"PaymentType": "Debit"}))
    assert not match(pattern, sqs({"PaymentType": "Cash"}))


def test_mixed_alternatives_in_one_leaf_are_ored() -> None:
    pattern = {"v": ["x", 7, {"prefix": "us-"}, {"numeric": [">", 100]}, None]}
    assert all(match(pattern, {"v": v}) for v in ("x", 7, 7.0, "us-east-1", 101, None))
    assert not any(match(pattern, {"v": v}) for v in ("y", 8, "eu-west-1", "7", False))


def test_or_matches_when_any_branch_matches() -> None:
    pattern = {"body": {"$or": [{"Location": ["New York"]}, {"Day": ["Monday"]}]}}
    assert match(pattern, sqs({"Location": "Paris", "Day": "Monday"}))
    assert match(pattern, sqs({"Location": "New York", "Day": "Friday"}))
    assert not match(pattern, sqs({"Location": "Paris", "Day": "Friday"}))


def test_or_is_anded_with_sibling_fields() -> None:
    pattern = {"source": ["s"], "$or": [{"a": ["1"]}, {"b": ["2"]}]}
    assert match(pattern, {"source": "s", "b": "2"})
    assert not match(pattern, {"source": "t", "b": "2"})


def test_or_nests_inside_or_branches() -> None:
    pattern = {"$or": [{"a": ["1"]}, {"b": ["2"], "$or": [{"c": ["3"]}, {"d": ["4"]}]}]}
    assert match(pattern, {"b": "2", "d": "4"})
    assert not match(pattern, {"b": "2", "d": "5"})


def test_anything_but_excludes_listed_values() -> None:
    pattern = {"body": {"Weather": [{"anything-but": ["Raining", "Snowing"]}]}}
    assert match(pattern, sqs({"Weather": "Sunny"}))
    assert not match(pattern, sqs({"Weather": "Raining"}))


def test_anything_but_accepts_a_single_value() -> None:
    pattern = {"state": [{"anything-but": "initializing"}]}
    assert match(pattern, {"state": "running"})
    assert not match(pattern, {"state": "initializing"})


def test_anything_but_does_not_match_a_missing_field() -> None:
    assert not match({"state": [{"anything-but": "initializing"}]}, {})


def test_anything_but_numbers_compare_numerically() -> None:
    pattern = {"limit": [{"anything-but": [100, 200]}]}
    assert match(pattern, {"limit": 150})
    assert not match(pattern, {"limit": 100.0})


def test_anything_but_prefix_excludes_strings_with_that_prefix() -> None:
    pattern = {"state": [{"anything-but": {"prefix": "init"}}]}
    assert match(pattern, {"state": "running"})
    assert not match(pattern, {"state": "initializing"})


def test_anything_but_suffix_excludes_strings_with_that_suffix() -> None:
    pattern = {"file": [{"anything-but": {"suffix": ".tmp"}}]}
    assert match(pattern, {"file": "a.png"})
    assert not match(pattern, {"file": "a.tmp"})


def test_anything_but_prefix_list_excludes_strings_with_any_of_them() -> None:
    pattern = {"state": [{"anything-but": {"prefix": ["init", "test"]}}]}
    assert match(pattern, {"state": "post-init"})
    assert match(pattern, {"state": 12})
    assert not match(pattern, {"state": "testing"})
    assert not match(pattern, {})


def test_anything_but_suffix_list_excludes_strings_with_any_of_them() -> None:
    pattern = {"file": [{"anything-but": {"suffix": [".tmp", ".bak"]}}]}
    assert match(pattern, {"file": "a.png"})
    assert not match(pattern, {"file": "a.bak"})


@pytest.mark.parametrize("affix", ["", [], ["ok", ""], ["ok", 1], {"equals-ignore-case": "x"}])
def test_anything_but_prefix_or_suffix_that_is_empty_or_not_strings_is_rejected(
    affix: Any,
) -> None:
    for op in ("prefix", "suffix"):
        with pytest.raises(ConfigError, match=f"anything-but {op} takes a non-empty string"):
            FilterCriteria.parse({"a": [{"anything-but": {op: affix}}]})


def test_empty_prefix_and_suffix_match_every_string() -> None:
    assert match({"a": [{"prefix": ""}]}, {"a": "x"})
    assert match({"a": [{"suffix": ""}]}, {"a": ""})
    assert not match({"a": [{"prefix": ""}]}, {"a": 1})


def test_anything_but_equals_ignore_case_excludes_any_casing() -> None:
    pattern = {"name": [{"anything-but": {"equals-ignore-case": ["alice", "bob"]}}]}
    assert match(pattern, {"name": "carol"})
    assert not match(pattern, {"name": "BOB"})


def test_numeric_equals_compares_numerically() -> None:
    pattern = {"body": {"Price": [{"numeric": ["=", 100]}]}}
    assert match(pattern, sqs({"Price": 100}))
    assert match(pattern, sqs({"Price": 100.0}))
    assert not match(pattern, sqs({"Price": 100.5}))


def test_numeric_range_applies_both_bounds() -> None:
    pattern = {"body": {"Price": [{"numeric": [">", 10, "<=", 20]}]}}
    assert [match(pattern, sqs({"Price": p})) for p in (10, 10.01, 20, 20.5)] == [
        False,
        True,
        True,
        False,
    ]


def test_numeric_range_bounds_may_come_in_either_order() -> None:
    pattern = {"n": [{"numeric": ["<", 5, ">=", 1]}]}
    assert match(pattern, {"n": 1})
    assert not match(pattern, {"n": 5})


def test_numeric_single_comparison() -> None:
    assert match({"n": [{"numeric": ["<", 10]}]}, {"n": -3})
    assert not match({"n": [{"numeric": [">=", 10]}]}, {"n": 9.99})


def test_numeric_only_matches_json_numbers() -> None:
    pattern = {"n": [{"numeric": [">", 0]}]}
    assert not match(pattern, {"n": "5"})
    assert not match(pattern, {"n": True})
    assert not match(pattern, {"n": None})


def test_exists_true_matches_a_present_key() -> None:
    pattern = {"body": {"ProductName": [{"exists": True}]}}
    assert match(pattern, sqs({"ProductName": "x"}))
    assert match(pattern, sqs({"ProductName": None}))
    assert not match(pattern, sqs({}))


def test_exists_false_matches_an_absent_key() -> None:
    pattern = {"body": {"ProductName": [{"exists": False}]}}
    assert match(pattern, sqs({}))
    assert not match(pattern, sqs({"ProductName": "x"}))


def test_exists_false_matches_when_a_parent_object_is_absent() -> None:
    assert match({"detail": {"count": [{"exists": False}]}}, {})


def test_exists_only_sees_leaves_so_an_object_counts_as_absent() -> None:
    view = {"detail": {"count": {"c1": 100}}}
    assert match({"detail": {"count": [{"exists": False}]}}, view)
    assert not match({"detail": {"count": [{"exists": True}]}}, view)


def test_prefix_matches_strings_that_begin_with_it() -> None:
    pattern = {"body": {"Region": [{"prefix": "us-"}]}}
    assert match(pattern, sqs({"Region": "us-east-1"}))
    assert not match(pattern, sqs({"Region": "eu-west-1"}))


def test_prefix_equals_ignore_case() -> None:
    pattern = {"Region": [{"prefix": {"equals-ignore-case": "US-"}}]}
    assert match(pattern, {"Region": "us-east-1"})
    assert not match(pattern, {"Region": "eu-west-1"})


def test_suffix_matches_strings_that_end_with_it() -> None:
    pattern = {"body": {"FileName": [{"suffix": ".png"}]}}
    assert match(pattern, sqs({"FileName": "cat.png"}))
    assert not match(pattern, sqs({"FileName": "cat.PNG"}))


def test_suffix_equals_ignore_case() -> None:
    assert match({"FileName": [{"suffix": {"equals-ignore-case": ".png"}}]}, {"FileName": "A.PNG"})


def test_string_operators_only_match_strings() -> None:
    assert not match({"n": [{"prefix": "1"}]}, {"n": 12})
    assert not match({"n": [{"suffix": "2"}]}, {"n": 12})
    assert not match({"n": [{"equals-ignore-case": "true"}]}, {"n": True})


# --- structure -------------------------------------------------------------------------------


def test_nested_objects_descend_into_the_event() -> None:
    view = {"dynamodb": {"Keys": {"CustomerName": {"S": "AnyCompany Industries"}}}}
    assert match({"dynamodb": {"Keys": {"CustomerName": {"S": ["AnyCompany Industries"]}}}}, view)
    assert not match({"dynamodb": {"Keys": {"CustomerName": {"S": ["Other"]}}}}, view)


def test_a_value_pattern_does_not_match_a_missing_field() -> None:
    assert not match({"body": {"type": ["order"]}}, sqs({"other": 1}))


def test_an_event_array_matches_if_any_element_matches() -> None:
    pattern = {"resources": ["arn:b"]}
    assert match(pattern, {"resources": ["arn:a", "arn:b"]})
    assert match(pattern, {"resources": [["arn:a"], ["arn:b"]]})
    assert not match(pattern, {"resources": ["arn:a"]})
    assert not match(pattern, {"resources": []})
    assert match(pattern, {"resources": [{"arn": "x"}, "arn:b"]})
    assert match({"resources": ["arn:c", "arn:b"]}, {"resources": ["arn:a", "arn:b"]})


def test_exists_false_matches_an_array_holding_no_leaf_values() -> None:
    pattern = {"tags": [{"exists": False}]}
    assert match(pattern, {"tags": []})
    assert match(pattern, {"tags": [{"k": "v"}]})
    assert not match(pattern, {"tags": [{"k": "v"}, "t"]})


def test_an_array_of_objects_matches_fields_within_one_element() -> None:
    view = {"employees": [{"first": "John", "last": "Doe"}, {"first": "Anna", "last": "Smith"}]}
    assert match({"employees": {"first": ["Anna"]}}, view)
    assert match({"employees": {"first": ["Anna"], "last": ["Smith"]}}, view)
    assert not match({"employees": {"first": ["Anna"], "last": ["Doe"]}}, view)
    assert match({"employees": {"first": ["Anna"]}}, {"employees": [["x", {"first": "Anna"}]]})


def test_a_dotted_pattern_key_is_the_nested_path_it_spells() -> None:
    pattern = {"detail": {"state.status": ["running"]}}
    assert match(pattern, {"detail": {"state": {"status": "running"}}})
    assert not match(pattern, {"detail": {"state": {"status": "stopped"}}})
    assert not match(pattern, {"detail": {"state": "running"}})


def test_a_dotted_event_key_is_the_nested_path_it_spells() -> None:
    pattern = {"detail": {"state": {"status": ["running"]}}}
    assert match(pattern, {"detail": {"state.status": "running"}})
    assert match({"detail.state.status": ["running"]}, {"detail": {"state.status": "running"}})
    assert match(pattern, {"detail.state": {"status": "running"}})
    assert not match(pattern, {"detail": {"state.status": "stopped"}})
    assert not match(pattern, {"detail": {"state.status": {"status": "running"}}})


def test_dotted_event_keys_count_for_exists() -> None:
    assert not match({"a": {"b": [{"exists": False}]}}, {"a.b": 1})
    assert match({"a": {"b": [{"exists": True}]}}, {"a.b": None})
    assert match({"a": {"b": [{"exists": False}]}}, {"a.c": 1})


def test_dotted_and_nested_pattern_keys_merge_into_one_object() -> None:
    pattern = {"a.b": ["1"], "a": {"c": ["2"]}}
    assert match(pattern, {"a": {"b": "1", "c": "2"}})
    assert match(pattern, {"a": [{"b": "1", "c": "2"}]})
    assert not match(pattern, {"a": [{"b": "1"}, {"c": "2"}]})


def test_a_later_value_list_for_the_same_path_replaces_the_earlier() -> None:
    pattern = {"a": {"b": ["old"]}, "a.b": ["new"]}
    assert match(pattern, {"a": {"b": "new"}})
    assert not match(pattern, {"a": {"b": "old"}})
    assert pattern == {"a": {"b": ["old"]}, "a.b": ["new"]}


def test_a_path_given_both_a_value_list_and_an_object_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"at a\.b: this path is given both a value list"):
        FilterCriteria.parse({"a": ["x"], "a.b": ["y"]})


def test_metadata_only_pattern_ignores_the_body_format() -> None:
    pattern = {"attributes": {"SenderId": ["svc"]}}
    assert match(pattern, sqs("plain text", SenderId="svc"))
    assert match(pattern, sqs({"json": True}, SenderId="svc"))


def test_plain_string_body_matches_a_plain_string_pattern() -> None:
    assert match({"body": ["Test message."]}, sqs("Test message."))


def test_json_pattern_does_not_match_a_plain_string_body() -> None:
    assert not match({"body": {"type": ["order"]}}, sqs("type=order"))
    assert not match({"body": {"type": [{"exists": False}]}}, sqs("type=order"))


def test_plain_string_pattern_does_not_match_a_json_body() -> None:
    assert not match({"body": ["order"]}, sqs({"type": "order"}))
    assert not match({"body": [{"anything-but": "x"}]}, sqs({"type": "order"}))


def test_kinesis_data_key_matches_decoded_json() -> None:
    view = {"partitionKey": "pk", "data": {"temperature": 31, "city": "Lima"}}
    assert match({"data": {"temperature": [{"numeric": [">", 30]}], "city": ["Lima"]}}, view)


def test_kafka_pattern_can_combine_key_value_and_metadata() -> None:
    view = {"topic": "orders", "partition": 0, "key": "k1", "value": {"total": 5}}
    assert match({"topic": ["orders"], "key": [{"prefix": "k"}], "value": {"total": [5]}}, view)
    assert not match({"topic": ["orders"], "value": {"total": [6]}}, view)


# --- cases AWS answered ----------------------------------------------------------------------
# filter_cases/ holds LocalStack's AWS-validated EventBridge and Lambda filter cases (see its
# SOURCE.md); every case whose pattern uses only operators streamfn implements is checked here.

CASES_DIR = Path(__file__).parent / "filter_cases"
EXPECTED = {"": "match", "_NEG": "no match", "_EXC": "invalid"}


@dataclass(frozen=True)
class AwsCase:
    """One pattern and one event as AWS saw them, with AWS's answer."""

    name: str
    pattern: str
    view: dict[str, Any]
    aws: str


def read_json5(text: str) -> Any:
    """The JSON5 the templates use, JSON plus ``//`` comments and trailing commas, as the
    ``json5`` package reads it (checked on every template); strings are left untouched."""
    out: list[str] = []
    i, end = 0, len(text)
    while i < end:
        char = text[i]
        if char == '"':
            close = i + 1
            while text[close] != '"':
                close += 2 if text[close] == "\\" else 1
            out.append(text[i : close + 1])
            i = close + 1
            continue
        if text.startswith("//", i):
            newline = text.find("\n", i)
            i = end if newline < 0 else newline
            continue
        if char == "," and re.match(r"(?:\s+|//[^\n]*\n)*[}\]]", text[i + 1 :]):
            i += 1
            continue
        out.append(char)
        i += 1
    return json.loads("".join(out))


def _template_case(path: Path) -> AwsCase:
    stem = path.name.removesuffix(".json5")
    suffix = next((s for s in ("_NEG", "_EXC") if stem.endswith(s)), "")
    data = read_json5(path.read_text())
    # The JSON text AWS received, decoded again: what a source's filter view would hold.
    view = json.loads(json.dumps(data["Event"]))
    return AwsCase(f"eb/{stem}", json.dumps(data["EventPattern"]), view, EXPECTED[suffix])


def _record_view(kind: str, record: dict[str, Any]) -> dict[str, Any]:
    """The record as the streamfn connector for ``kind`` shows it to filters."""
    if kind == "sqs":
        meta = {"Attributes": record.get("attributes", {})}
        return SQSSource("q", region_name="us-east-1").filter_view(
            Record("p", 0, record["body"].encode(), meta=meta)
        )
    if kind == "kinesis":
        meta = {"PartitionKey": record["partitionKey"]}
        kinesis = KinesisSource("s", region_name="us-east-1", state_dir="unused")
        return kinesis.filter_view(Record("p", 0, record["data"].encode(), meta=meta))
    arn = "arn:aws:dynamodb:us-east-1:111111111111:table/t/stream/s"
    stream = DynamoDBStreamSource(arn, state_dir="unused")
    change = json.dumps(record["dynamodb"]).encode()
    return stream.filter_view(Record("p", 0, change, meta=record))


def _derived_case(case: dict[str, Any]) -> AwsCase:
    def text(key: str) -> str:
        return (CASES_DIR / str(case[key])).read_text()

    pattern = text("pattern_file") if "pattern_file" in case else case["pattern"]
    if case["aws"] == "invalid":
        view: dict[str, Any] = {}
    elif case["view"] != "event":
        view = _record_view(case["view"], case["record"])
    elif "event_file" in case:
        view = json.loads(text("event_file"))
    else:
        view = case["event"] if "event" in case else json.loads(case["event_json"])
    return AwsCase(case["name"], pattern, view, case["aws"])


def aws_cases() -> list[AwsCase]:
    templates = sorted((CASES_DIR / "event_pattern_templates").glob("*.json5"))
    derived = json.loads((CASES_DIR / "derived_cases.json").read_text())["cases"]
    return [_template_case(p) for p in templates] + [_derived_case(c) for c in derived]


def streamfn_answer(case: AwsCase) -> str:
    try:
        criteria = FilterCriteria.parse({"Filters": [{"Pattern": case.pattern}]})
    except ConfigError:
        return "invalid"
    return "match" if criteria.matches(case.view) else "no match"


AWS_CASES = aws_cases()


def test_every_copied_aws_case_is_checked() -> None:
    """The fixtures are all here: 122 templates and 60 cases from Lambda and EventBridge tests."""
    assert len(AWS_CASES) == 182


@pytest.mark.parametrize("case", AWS_CASES, ids=[c.name for c in AWS_CASES])
def test_streamfn_answers_as_aws_did(case: AwsCase) -> None:
    assert streamfn_answer(case) == case.aws, case.pattern
