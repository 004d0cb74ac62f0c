"""Hand-written YAML: duplicate keys are refused with both lines; everything else loads as YAML says."""

from __future__ import annotations

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from webhook.yamlload import YamlProblem, load

TOKEN = "regcred_" + "A" * 43


@pytest.mark.parametrize(("text", "expected"), [
    pytest.param("a: 1\nb: 2\na: 3\n", "at line 3: duplicate key 'a' (first at line 1)", id="top-level"),
    pytest.param("r:\n- id: x\n  url: y\n  id: z\n", "at line 4: duplicate key 'id' (first at line 2)", id="in-entry"),
    pytest.param("{a: 1, a: 2}\n", "at line 1: duplicate key 'a' (first at line 1)", id="flow-style"),
    pytest.param("a: 1\n'a': 2\n", "at line 2: duplicate key 'a'", id="quoted-equal"),
    pytest.param(f"{TOKEN}: 1\n{TOKEN}: 2\n", "at line 2: duplicate key (first at line 1)", id="long-key-not-shown"),
    pytest.param("a:\n  b: 1\n c: 2\n", "at line 3: expected <block end>, but found '<block mapping start>' "
                 "(check this line's indentation against the lines above)", id="bad-indentation"),
])
def test_problems_name_the_line(text: str, expected: str) -> None:
    with pytest.raises(YamlProblem) as caught:
        load(text)
    assert expected in caught.value.describe()


@pytest.mark.parametrize(("text", "expected"), [
    pytest.param("x: &base {k: 1, j: 2}\ny:\n  <<: *base\n  k: 3\n", {"x": {"k": 1, "j": 2}, "y": {"k": 3, "j": 2}},
                 id="merge-key-overrides"),
    pytest.param("a: {k: 1}\nb: {k: 1}\n", {"a": {"k": 1}, "b": {"k": 1}}, id="same-key-other-mappings"),
    pytest.param("1: a\n'1': b\n", {1: "a", "1": "b"}, id="int-and-string-differ"),
    pytest.param("", None, id="empty"),
])
def test_documents_without_duplicates_load_as_yaml_says(text: str, expected: object) -> None:
    assert load(text) == expected == yaml.safe_load(text)


def test_without_problem_text_the_parser_quotes_nothing_but_duplicates_still_say_what() -> None:
    with pytest.raises(YamlProblem) as caught:
        load(f"a: [{TOKEN}\n")
    assert caught.value.describe(show_problem=False) == "not valid YAML at line 2"
    with pytest.raises(YamlProblem) as caught:
        load("a: 1\na: 2\n")
    assert caught.value.describe(show_problem=False) == "not valid YAML at line 2: duplicate key 'a' (first at line 1)"


@given(st.dictionaries(st.text(min_size=1, max_size=8), st.integers() | st.text(max_size=8), max_size=6))
def test_any_mapping_dumped_by_yaml_loads_back(mapping: dict) -> None:
    assert load(yaml.safe_dump(mapping)) == mapping
