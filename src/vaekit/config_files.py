"""Config files: TOML, YAML or JSON text read into sections, bounded in size and (YAML) in expanded nodes, parsed
safely; `config.RunConfig.from_dict` then checks every field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vaekit.errors import VaekitError

MAX_CONFIG_BYTES = 1 << 20  # a config file is a few lines; anything larger is not one
MAX_YAML_NODES = 10_000  # YAML aliases may repeat a node; more nodes than this after expansion is a bomb


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML (.toml), YAML (.yaml/.yml) or JSON (.json) config file into a dict of sections.

    Bounded: at most 1 MiB of UTF-8 text, and YAML (safe loader only) at most 10,000 nodes with aliases
    expanded, so a few hundred bytes of nested aliases cannot take minutes and gigabytes."""
    path = Path(path)
    if not path.is_file():
        raise VaekitError(f"{path}: config file not found")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise VaekitError(f"{path}: {path.stat().st_size:,} bytes is too large for a config file (at most 1 MiB)")
    from vaekit.files import parse_json

    parsers = {".toml": _parse_toml, ".yaml": _parse_yaml, ".yml": _parse_yaml, ".json": parse_json}
    if path.suffix not in parsers:
        raise VaekitError(f"{path}: config files must end in .toml, .yaml, .yml or .json")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise VaekitError(f"{path}: not UTF-8 text (a config file is plain text)") from None
    try:
        data = parsers[path.suffix](text)
    except VaekitError as e:
        raise VaekitError(f"{path}: {e}") from None
    except Exception as e:  # the parsers' own exceptions differ; all mean "not valid syntax"
        first = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise VaekitError(f"{path}: not a valid {path.suffix[1:].upper()} file ({first})") from None
    if not isinstance(data, dict):
        raise VaekitError(f"{path}: expected sections [model], [data], [train]")
    return data


def _parse_toml(text: str) -> Any:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    return tomllib.loads(text)


def _parse_yaml(text: str) -> Any:
    try:
        import yaml
    except ModuleNotFoundError:
        raise VaekitError("YAML configs need PyYAML (pip install pyyaml)") from None
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is not None and _expanded_size(node, MAX_YAML_NODES) > MAX_YAML_NODES:
            raise VaekitError(f"more than {MAX_YAML_NODES:,} YAML nodes once aliases are expanded (an alias bomb?)")
        return (loader.construct_document(node) if node is not None else None) or {}
    finally:
        loader.dispose()


def _expanded_size(node: Any, limit: int) -> int:
    """Nodes in a composed YAML tree with every alias expanded, counting no further than just past `limit`."""
    count, stack = 0, [node]
    while stack and count <= limit:
        n = stack.pop()
        count += 1
        if isinstance(n.value, list):
            stack.extend(item for pair in n.value for item in (pair if isinstance(pair, tuple) else (pair,)))
    return count
