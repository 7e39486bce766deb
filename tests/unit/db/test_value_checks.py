"""The value checks of the command parser: the fast walk refuses exactly what the general one refused,
for the same reason."""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agenda.db.commands import MAX_VALUE_DEPTH, _check_json_tree, check_mapping, encode_value
from agenda.db.errors import InvalidArgument


def reference_check(value: Any, field: str) -> None:
    """The walk as it was written before the fast path: every node pushed, isinstance checks only."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_VALUE_DEPTH:
            raise InvalidArgument(field, f"nested deeper than {MAX_VALUE_DEPTH} levels")
        if node is None or isinstance(node, (bool, int, str)):
            continue
        if isinstance(node, float):
            if not math.isfinite(node):
                raise InvalidArgument(field, "NaN and infinities are not JSON")
            continue
        if isinstance(node, (list, tuple)):
            stack.extend((item, depth + 1) for item in node)
            continue
        if isinstance(node, dict):
            for name, item in node.items():
                if not isinstance(name, str):
                    raise InvalidArgument(field, "object keys must be strings")
                stack.append((item, depth + 1))
            continue
        raise InvalidArgument(field, f"{type(node).__name__} is not a JSON type")


def verdict(check: Any, value: Any) -> str | None:
    try:
        check(value, "value")
    except InvalidArgument as exc:
        return str(exc)
    return None


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.text(max_size=5),
    st.floats(allow_nan=True, allow_infinity=True),
    st.just(frozenset({1})),
    st.just(b"bytes"),
)
keys = st.one_of(st.text(max_size=3), st.integers(0, 3), st.none(), st.booleans())
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.lists(children, max_size=3).map(tuple),
        st.dictionaries(keys, children, max_size=4),
        st.dictionaries(st.text(max_size=3), children, max_size=3).map(OrderedDict),
    ),
    max_leaves=25,
)


@settings(max_examples=400)
@given(values)
def test_the_fast_walk_refuses_what_the_general_one_refused(value: Any) -> None:
    assert verdict(_check_json_tree, value) == verdict(reference_check, value)


def nested(depth: int, leaf: Any, *, as_dict: bool) -> Any:
    value = leaf
    for _ in range(depth):
        value = {"k": value} if as_dict else [value]
    return value


@pytest.mark.parametrize("as_dict", [True, False])
@pytest.mark.parametrize(
    "depth", [MAX_VALUE_DEPTH - 2, MAX_VALUE_DEPTH - 1, MAX_VALUE_DEPTH, MAX_VALUE_DEPTH + 1]
)
@pytest.mark.parametrize("leaf", [1, "s", None, 1.5, float("nan"), [], {}, {1: 2}, set()])
def test_the_depth_limit_and_the_leaves_at_it(as_dict: bool, depth: int, leaf: Any) -> None:
    value = nested(depth, leaf, as_dict=as_dict)
    assert verdict(_check_json_tree, value) == verdict(reference_check, value)


def test_several_faults_are_refused_for_the_same_one() -> None:
    deep = nested(MAX_VALUE_DEPTH - 1, None, as_dict=True)
    cases = [
        {"a": 1, 2: "b", "c": float("nan")},
        [float("inf"), {1: 1}],
        [{1: 1}, float("inf")],
        {"x": deep, "y": {3: 3}},
        [nested(MAX_VALUE_DEPTH, 1, as_dict=False), set()],
        [set(), nested(MAX_VALUE_DEPTH, 1, as_dict=False)],
    ]
    for value in cases:
        assert verdict(_check_json_tree, value) == verdict(reference_check, value)


def test_encode_value_is_unchanged_for_an_event() -> None:
    event = {"id": "e", "participants": {"bob": {"status": "accepted", "level": None}}, "sequence": 0}
    assert encode_value(event) == (
        '{"id":"e","participants":{"bob":{"level":null,"status":"accepted"}},"sequence":0}'
    )


def test_check_mapping_takes_any_mapping_and_refuses_the_rest() -> None:
    ordered = OrderedDict(a=1)
    assert check_mapping(ordered, "x") is ordered
    with pytest.raises(InvalidArgument, match="must be an object"):
        check_mapping([("a", 1)], "x")
