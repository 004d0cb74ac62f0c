"""Reading YAML that people write by hand into validated models, with errors that say where.

Duplicate keys are an error, not a silent overwrite.

PyYAML, like the YAML 1.1 loaders it follows, keeps the last of two equal keys in a mapping.
In a registry list that drops a whole ``registries:`` list without a word, so every YAML
regcred reads (the registry list, the CI token list) goes through ``load`` instead.
Errors say where: the line of the second occurrence, and of the first.
"""

from __future__ import annotations

import re
from collections.abc import Hashable
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from webhook.fielderror import FieldError

_MERGE = "tag:yaml.org,2002:merge"
# A key is named in the error only when it looks like a field name: a mapping key is input,
# and a pasted token or password must never reach a message.
_SHOWN_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,31}$")
# Parser problems that almost always mean one line is indented differently from its siblings.
_INDENTATION_PROBLEMS = ("expected <block end>", "mapping values are not allowed here",
                         "did not find expected key", "did not find expected '-' indicator")


class YamlProblem(Exception):
    """Why a document is not usable YAML; ``line`` is 1-based or None."""

    def __init__(self, line: int | None, problem: str | None, *, quotes_input: bool = True):
        super().__init__(problem or "not valid YAML")
        self.line = line
        self.problem = problem
        # The parser's wording can quote the input (a character, an alias, a tag); ours never does.
        self.quotes_input = quotes_input

    def describe(self, *, show_problem: bool = True) -> str:
        where = f" at line {self.line}" if self.line else ""
        shown = self.problem and (show_problem or not self.quotes_input)
        return f"not valid YAML{where}" + (f": {self.problem}" if shown else "")


class _DuplicateKey(yaml.constructor.ConstructorError):
    pass


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses two equal keys in one mapping (merge keys ``<<`` still override)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        if isinstance(node, yaml.MappingNode):
            first_lines: dict[object, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == _MERGE:
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = first_lines.get(key)
                except TypeError:  # an unhashable key: the base class reports it
                    continue
                if first is not None:
                    shown = f" {key!r}" if isinstance(key, str) and _SHOWN_KEY.match(key) else ""
                    raise _DuplicateKey(problem=f"duplicate key{shown} (first at line {first + 1})",
                                        problem_mark=key_node.start_mark)
                first_lines[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def load(text: str) -> object:
    """Parse one YAML document with the safe loader; raise YamlProblem on any error."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None)
        if problem and problem.startswith(_INDENTATION_PROBLEMS):
            problem += " (check this line's indentation against the lines above)"
        line = mark.line + 1 if mark else None
        raise YamlProblem(line, problem, quotes_input=not isinstance(exc, _DuplicateKey)) from None


class ConfigError(Exception):
    """A document (registry list, CI token list) that cannot be used; ``errors`` holds one line per problem."""

    def __init__(self, errors: list[str]):
        super().__init__("; ".join(errors))
        self.errors = errors


ModelT = TypeVar("ModelT", bound=BaseModel)


def validate_yaml(text: str, model: type[ModelT], list_key: str, *, show_problem: bool = True) -> ModelT:
    """Load a YAML mapping into ``model``; every error names its path (``registries[2].url``).

    Messages carry locations and pydantic's wording only, never the input values, so a
    pasted secret in a broken file never reaches a log line.
    """
    try:
        document = load(text)
    except YamlProblem as exc:
        raise ConfigError([exc.describe(show_problem=show_problem)]) from None
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise ConfigError([f"top level must be a mapping with a '{list_key}' list"])
    try:
        return model.model_validate(document)
    except ConfigError:
        raise
    except ValidationError as exc:
        raise ConfigError([describe_validation_error(error) for error in exc.errors()]) from None


def describe_validation_error(error: Any) -> str:
    """One pydantic error as ``path: message``, without the input value."""
    path = ""
    for part in error["loc"]:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    message = error["msg"].removeprefix("Value error, ")
    raised = (error.get("ctx") or {}).get("error")
    if isinstance(raised, FieldError):
        path, message = (f"{path}.{raised.field}" if path else raised.field), raised.message
    if error["type"] == "extra_forbidden":
        message = "unknown key"
    elif error["type"] == "literal_error":
        message = f"must be one of {error['ctx']['expected']}"
    return f"{path}: {message}" if path else message
