"""Reading YAML that someone else may have written: strict, bounded, and with the numbers people write.

PyYAML's `safe_load` already refuses to build Python objects, but it still accepts three things
that hurt here, and misreads one:
- aliases (`*name`): nested ones expand exponentially ("billion laughs": gigabytes from a few
  lines). A search-space file never needs them, so any alias is an error;
- duplicate keys (`channels: 8` and later `channels: 4096`): the last silently wins;
- files of any size and encoding: the text is capped and must be UTF-8;
- costly shapes: tens of thousands of values (the pure-Python parse and every check after it
  take seconds), deep nesting (the parser recurses) and complex keys (`? [a, b]`) are refused;
- `1e-3`: YAML 1.1 reads a float without a dot as a string. Every learning rate is written this
  way, so such scalars are read as floats (as YAML 1.2 does).
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from study.errors import StudyError

MAX_BYTES = 1_000_000  # a search-space file is a few kB; anything near this is not one
# A search-space file holds tens of values and nests four deep; these keep the parse under a second.
MAX_NODES = 20_000  # scalars, lists and mappings in one text
MAX_DEPTH = 32  # lists and mappings inside each other

# 1e-3, 5E+4, 2.5e-4, .5e1: scientific notation without YAML 1.1's mandatory dot and sign.
SCIENTIFIC = re.compile(r"^[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[eE][-+]?[0-9]+$")


class StrictLoader(yaml.SafeLoader):
    """safe_load without aliases or duplicate keys, reading 1e-3 as a float."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, f"aliases (*{event.anchor}) are not allowed; write the value out", event.start_mark
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode):  # `? [a, b]`: a key no one can look up
                raise yaml.constructor.ConstructorError(
                    None, None, f"a key must be a plain value, not a {key_node.id}", key_node.start_mark
                )
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}; each key may appear once", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


StrictLoader.add_implicit_resolver("tag:yaml.org,2002:float", SCIENTIFIC, list("-+0123456789."))


def check_size(text: str) -> None:
    """Refuse more than MAX_NODES nodes or MAX_DEPTH levels, counted by libyaml's fast event
    parser before the slow strict one builds anything. A syntax error ends the count: the strict
    parse reports it."""
    if not yaml.__with_libyaml__:  # no fast parser: MAX_BYTES alone bounds the parse
        return
    nodes = depth = 0
    mark = None
    try:
        for event in yaml.parse(text, Loader=yaml.CSafeLoader):
            mark = event.start_mark
            if isinstance(event, (yaml.CollectionStartEvent, yaml.ScalarEvent)):
                nodes += 1
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
            if nodes > MAX_NODES or depth > MAX_DEPTH:
                break
    except yaml.MarkedYAMLError as exc:
        if "nesting depth" not in str(exc.problem):  # libyaml's own depth limit, met while scanning ahead
            return
        depth, mark = MAX_DEPTH + 1, exc.problem_mark
    if nodes > MAX_NODES:
        problem = f"more than {MAX_NODES} values; a search space needs far fewer"
    elif depth > MAX_DEPTH:
        problem = f"lists and mappings nested more than {MAX_DEPTH} deep"
    else:
        return
    raise yaml.MarkedYAMLError(problem=problem, problem_mark=mark)


def parse_yaml(text: str, source: str) -> Any:
    """Parse YAML text strictly; errors are one line naming `source` and the line."""
    try:
        check_size(text)
        return yaml.load(text, Loader=StrictLoader)  # noqa: S506 - StrictLoader is a SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        syntax = isinstance(exc, (yaml.scanner.ScannerError, yaml.parser.ParserError))
        raise StudyError(f"{source}: {line}{'YAML syntax error: ' if syntax else ''}{problem}") from None
    except RecursionError:  # nesting that libyaml refused too, so check_size could not count it
        raise StudyError(f"{source}: lists and mappings nested more than {MAX_DEPTH} deep") from None


def read_yaml(path: str, what: str = "file") -> Any:
    """Read a YAML file written by anyone: at most MAX_BYTES of UTF-8, parsed strictly."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise StudyError(f"{path}: no such {what}") from None
    except IsADirectoryError:
        raise StudyError(f"{path}: is a folder; give a .yaml file") from None
    except OSError as exc:
        raise StudyError(f"{path}: cannot read ({exc.strerror})") from None
    if len(data) > MAX_BYTES:
        raise StudyError(f"{path}: larger than {MAX_BYTES} bytes; not a {what}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise StudyError(f"{path}: not UTF-8 text (byte {data[exc.start]:#04x} at offset {exc.start})") from None
    return parse_yaml(text, path)
