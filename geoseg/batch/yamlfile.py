"""Reading a catalog's YAML safely: plain values only, no duplicate keys, errors at YAML paths.

Examples
--------
>>> yaml.load("b: {c: 2, c: 3}", Loader=CatalogLoader)
Traceback (most recent call last):
...
geoseg.batch.yamlfile.YamlPathError: b.c: duplicate key (lines 1 and 1); keep one
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from geoseg.errors import CatalogError


class YamlPathError(Exception):
    """A validation problem at a YAML path (turned into a CatalogError with the file name)."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}")
        self.where = where
        self.message = message


PLAIN_TAG = "tag:yaml.org,2002:"
"""Prefix of YAML's own tags (str, int, map, ...); ``python/...`` ones are refused."""
MERGE_KEY = "<<"


class CatalogLoader(yaml.SafeLoader):
    """A SafeLoader that refuses duplicate keys and tags outside YAML's plain ones.

    Both are checked on the composed node tree before anything is constructed, so the problem
    is reported at its YAML path (``scenes[1].path``) instead of the last value silently winning.

    Examples
    --------
    >>> yaml.load("b: {c: 2, c: 3}", Loader=CatalogLoader)
    Traceback (most recent call last):
    ...
    geoseg.batch.yamlfile.YamlPathError: b.c: duplicate key (lines 1 and 1); keep one
    """

    def get_single_data(self) -> Any:
        node = self.get_single_node()
        if node is None:
            return None
        check_nodes(node, "")
        return self.construct_document(node)


def check_nodes(node: yaml.Node, where: str) -> None:
    """Raise :class:`YamlPathError` for a foreign tag or a duplicate key under ``node``."""
    check_tag(node, where)
    if isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            check_nodes(item, f"{where}[{i}]")
    elif isinstance(node, yaml.MappingNode):
        lines: dict[str, int] = {}
        for key, value in node.value:
            check_tag(key, where or "(top level)")
            path = f"{where}.{key.value}" if where else str(key.value)
            if key.value in lines and key.value != MERGE_KEY:
                first, line = lines[key.value], key.start_mark.line + 1
                raise YamlPathError(path, f"duplicate key (lines {first} and {line}); keep one")
            lines[key.value] = key.start_mark.line + 1
            check_nodes(value, path)


def check_tag(node: yaml.Node, where: str) -> None:
    """Refuse tags that construct Python objects (or anything but YAML's plain types)."""
    tag = node.tag or ""
    if not tag.startswith(PLAIN_TAG) or tag.startswith(PLAIN_TAG + "python/"):
        shown = "!!" + tag.removeprefix(PLAIN_TAG) if tag.startswith(PLAIN_TAG) else tag
        raise YamlPathError(
            where or "(top level)",
            f"YAML tag {shown} (line {node.start_mark.line + 1}) is not allowed: a catalog "
            "holds plain values (text, numbers, lists, mappings); remove the tag",
        )


def read_yaml(file: Path) -> Any:
    try:
        return yaml.load(file.read_text(encoding="utf-8"), Loader=CatalogLoader)
    except YamlPathError as bad:
        raise CatalogError(f"{file.name}: {bad.where}: {bad.message}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise CatalogError(f"{file.name}: {at}YAML syntax error ({problem})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CatalogError(f"{file.name}: cannot read the catalog ({exc})") from None
