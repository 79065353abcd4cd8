"""The one safe YAML reader for every YAML file ksmith reads.

`read_yaml(path)` and `load_yaml(text, source)` parse with a `yaml.SafeLoader` that also:

- rejects duplicate mapping keys (plain YAML keeps the last one silently);
- refuses nesting deeper than `Limits.max_yaml_depth` (no RecursionError);
- refuses documents whose alias expansion (``*anchor``, ``<<: *anchor``) would exceed
  `Limits.max_yaml_nodes` values, and recursive aliases ("billion laughs");
- refuses files larger than `Limits.max_yaml_bytes`, binary files and text that is not UTF-8.

Every problem is a `SpecError` naming the file (and the line, where YAML knows it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ksmith.errors import SpecError
from ksmith.spec.limits import Limits, env_name, limits


class _Refused(yaml.YAMLError):
    """A limit was hit while composing; carries the position."""

    def __init__(self, message: str, mark: yaml.Mark | None):
        super().__init__(message)
        self.message, self.mark = message, mark


class SafeLoader(yaml.SafeLoader):
    """SafeLoader with duplicate-key rejection and nesting/alias bounds (see module doc)."""

    def __init__(self, stream: str, bounds: Limits):
        super().__init__(stream)
        self.bounds = bounds
        self.depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self.depth += 1
        try:
            if self.depth > self.bounds.max_yaml_depth:
                mark = self.peek_event().start_mark
                raise _Refused(
                    f"nested deeper than {self.bounds.max_yaml_depth} levels "
                    f"(limit {env_name('max_yaml_depth')})",
                    mark,
                )
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def _construct_mapping(loader: SafeLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            dup = key in seen
        except TypeError:  # an unhashable key: construct_mapping reports it
            continue
        if dup:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key '{key}'", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


SafeLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def expanded_size(root: yaml.Node, cap: int) -> int:
    """Number of values in the document with aliases expanded, counting up to `cap` (+1).

    Shared nodes are counted once per reference, as a consumer that walks the loaded data would
    see them. A recursive alias raises `_Refused`.
    """
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        kids = _children(node)
        if done:
            on_path.discard(key)
            sizes[key] = min(cap + 1, 1 + sum(sizes[id(k)] for k in kids))
            continue
        if key in sizes:
            continue
        if key in on_path:
            raise _Refused("recursive alias (an anchor used inside itself)", node.start_mark)
        on_path.add(key)
        stack.append((node, True))
        for k in kids:
            if id(k) in on_path:
                raise _Refused("recursive alias (an anchor used inside itself)", k.start_mark)
            if id(k) not in sizes:
                stack.append((k, False))
    return sizes[id(root)]


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def load_yaml(text: str, source: str | Path, bounds: Limits | None = None) -> Any:
    """Parse YAML `text` (from `source`, for messages) safely and within `bounds`."""
    bounds = bounds or limits()
    loader = SafeLoader(text, bounds)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        n = expanded_size(node, bounds.max_yaml_nodes)
        if n > bounds.max_yaml_nodes:
            raise _Refused(
                f"expands to more than {bounds.max_yaml_nodes:,} values once its aliases "
                f"(*anchors) are expanded (limit {env_name('max_yaml_nodes')})",
                None,
            )
        return loader.construct_document(node)
    except _Refused as e:
        where = f" at line {e.mark.line + 1}, column {e.mark.column + 1}" if e.mark else ""
        raise SpecError(f"YAML refused{where}: {e.message}", file=source) from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SpecError(f"invalid YAML{where}: {e.problem or e}", file=source) from None
    except yaml.YAMLError as e:
        raise SpecError(f"invalid YAML: {e}", file=source) from None
    except RecursionError:  # belt and braces: the depth bound should come first
        raise SpecError("YAML nested too deeply", file=source) from None
    finally:
        loader.dispose()


def read_text(path: str | Path, bounds: Limits | None = None) -> str:
    """A user's text file as str: bounded in size, UTF-8, not binary; else `SpecError`."""
    path = Path(path)
    bounds = bounds or limits()
    try:
        size = path.stat().st_size
        if size > bounds.max_yaml_bytes:
            raise SpecError(
                f"file is {size:,} bytes, more than the limit of {bounds.max_yaml_bytes:,} "
                f"({env_name('max_yaml_bytes')})",
                file=path,
            )
        with path.open("rb") as f:
            data = f.read(bounds.max_yaml_bytes + 1)
    except OSError as e:
        raise SpecError(f"cannot read: {e.strerror or e}", file=path) from None
    if b"\x00" in data:
        raise SpecError("binary file (it contains NUL bytes), not YAML text", file=path)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SpecError(
            f"not UTF-8 text: byte 0x{data[e.start]:02x} at offset {e.start} cannot be decoded",
            file=path,
        ) from None


def read_yaml(path: str | Path, bounds: Limits | None = None) -> Any:
    """Read and parse a YAML file safely (see the module doc); problems raise `SpecError`."""
    bounds = bounds or limits()
    return load_yaml(read_text(path, bounds), path, bounds)


__all__ = ["SafeLoader", "expanded_size", "load_yaml", "read_text", "read_yaml"]
