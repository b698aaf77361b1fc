"""Every config key an error message names exists, and every `key=value` fix it suggests composes with Hydra.

Messages are the string arguments of `require(...)` and `...Error(...)` calls in specdiff2/, train.py and
decode.py (f-string fields read as `{}`). House style is "problem; fix". A hint counts when it is
  - a dotted name that starts like a config key (`data.`, `decode.`, `generation.` ...), anywhere, or
  - a `key=value` in the fix part (after the first ';'): what a user types next.
A key passes when it exists in the composed train or decode config, with the default options or with another
option of the group it starts with (`decode.strategy.k` exists once decode=self_select); a literal value must
compose as well (`acceptance=tree`). Placeholders (FILE.jsonl, DIR, `{}`) only need the key.
"""

from __future__ import annotations

import ast
import functools
import re

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from tests.conftest import ROOT

CONF = ROOT / "conf"
SOURCES = sorted((ROOT / "specdiff2").rglob("*.py")) + [ROOT / "train.py", ROOT / "decode.py"]
FILE_SUFFIX = re.compile(r"\.(py|json|jsonl|yaml|ckpt|safetensors|bin|gz|txt|md|arpa)$")
KEY_VALUE = re.compile(r"(?<![\w.{}/\-])([+~]?[a-z_][a-z0-9_/]*(?:[.@][a-z0-9_/{}]+)*)=(\S*)")
PLACEHOLDER = re.compile(r"^$|[A-Z]{2,}|\{\}|\.\.\.")
# Words in fix parts that are not config keys there: attributes of files the message names.
UNQUALIFIED_OK = {"eos_token", "mask_token_id", "prefix_attention", "tokenizer_config"}


def _strings(node: ast.AST):
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        yield node.value
    elif isinstance(node, ast.JoinedStr):
        yield "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
    else:
        for child in ast.iter_child_nodes(node):
            yield from _strings(child)


def _is_message_call(node: ast.AST) -> bool:
    if not isinstance(node, ast.Call):
        return False
    name = getattr(node.func, "id", getattr(node.func, "attr", ""))
    return name == "require" or name.endswith("Error")


def messages() -> list[tuple[str, str]]:
    """(file:line, message text) of every user-facing error message."""
    out = []
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text())):
            if _is_message_call(node):
                text = " ".join(s for arg in node.args for s in _strings(arg))
                if text:
                    out.append((f"{path.relative_to(ROOT)}:{node.lineno}", text))
    return out


@functools.cache
def _plain(overrides: tuple[str, ...], config: str) -> dict | None:
    try:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose(config_name=config, overrides=list(overrides), return_hydra_config=True)
    except (HydraException, OmegaConfBaseException, ValueError):
        return None
    return OmegaConf.to_container(cfg, resolve=False)


@functools.cache
def contexts(config: str, group: str) -> list[tuple[str, ...]]:
    """No group option, then each option of `group` when the key starts with a config group of `config`."""
    base = _plain((), config) or {}
    out: list[tuple[str, ...]] = [()]
    if (CONF / group).is_dir() and group in base:
        out += [(f"{group}={opt.stem}",) for opt in sorted((CONF / group).glob("*.yaml"))]
    return out


def _has(tree: dict, dotted: str) -> bool:
    node = tree
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


EXTRA_CONTEXTS = [("decode=diffuspec", "decode/proxy@decode.models.proxy=kenlm"),  # a group inside a group
                  ("decode=diffuspec", "decode/proxy@decode.models.proxy=ngram")]


def _nodes(tree: dict, top: bool = True):
    """(name, is_dict) of every node below the top level."""
    for key, value in tree.items():
        if not top:
            yield key, isinstance(value, dict)
        if isinstance(value, dict):
            yield from _nodes(value, top=False)


@functools.cache
def key_names() -> tuple[frozenset, frozenset, frozenset]:
    """(top-level keys, names of nested config nodes, names of nested leaves) of the train and decode configs.

    A dotted name starting with a nested node's name (`generation.source`) is a key missing its parents.
    """
    top, nested, leaves = set(), set(), set()
    for ctx in [(), ("decode=diffuspec",), ("decode=self_select",), ("peft=lora",)]:
        for config in ("train", "decode"):
            tree = _plain(ctx, config)
            if tree is None:
                continue
            top |= set(tree) - {"hydra"}
            for name, is_dict in _nodes({k: v for k, v in tree.items() if k != "hydra"}):
                (nested if is_dict else leaves).add(name)
    return frozenset(top), frozenset(nested - top), frozenset(leaves - top)


def hints(message: str) -> list[tuple[str, str | None]]:
    """(key, literal value or None) named by a message."""
    top, nested, leaves = key_names()
    found: dict[tuple[str, str | None], None] = {}
    fix = message.split(";", 1)[1] if ";" in message else ""
    for m in KEY_VALUE.finditer(fix):
        key, value = m.group(1), m.group(2).rstrip(").,:'\"")
        found[(key, None if PLACEHOLDER.search(value) else value)] = None
    for m in re.finditer(r"(?<![\w.{}/\-])([a-z_][a-z0-9_]*(?:\.[a-z0-9_@{}]+)+)", message):
        name = m.group(1).rstrip(".")
        if name.split(".")[0] in top | nested and not FILE_SUFFIX.search(name):
            found.setdefault((name, None), None)
    # a bare snake_case word in the fix part that is a nested key (`raise row_tokens`) must be qualified
    for m in re.finditer(r"(?<![\w.{}/\-])([a-z][a-z0-9]*_[a-z0-9_]+)(?![\w.=])", fix):
        if m.group(1) in leaves and m.group(1) not in UNQUALIFIED_OK:
            found.setdefault((m.group(1), None), None)
    return [(k.split("{}")[0].rstrip(".") if "{}" in k else k, v) for k, v in found]


def composes(key: str, value: str | None) -> bool:
    """The key exists (and `key=value` composes) in the train or decode config, in some context.

    `+key=value` must add a key that is not there yet; `group/option@package=value` must compose.
    """
    if key.startswith("+"):
        return any(_plain((f"{key}={value or 'null'}",), config) is not None for config in ("train", "decode"))
    package = "/" in key or "@" in key
    for config in ("train", "decode"):
        for ctx in [*contexts(config, re.split(r"[./@]", key)[0]), *EXTRA_CONTEXTS]:
            tree = _plain(ctx, config)
            if tree is None:
                continue
            exists = package or _has(tree, key) or (CONF / key).is_dir()
            if exists and (value is None and not package or _plain((*ctx, f"{key}={value}"), config)):
                return True
    return False


@pytest.mark.slow  # a meta-check of the scanner itself (~6 s); the hint check runs in the suite
def test_message_scan_finds_the_hints_it_checks():
    """The scanner itself: it sees fix hints, qualified names and placeholders, and skips file names."""
    found = hints("prompt file {} not found; pass data=jsonl data.prompts.path=FILE.jsonl (see decode.py)")
    assert ("data", "jsonl") in found and ("data.prompts.path", None) in found
    assert not any(k.startswith("decode") for k, _ in found)
    assert composes("data.prompts.path", None) and composes("acceptance", "tree")
    assert not composes("decode.max_new_tokens", None) and not composes("data.path", None)
    assert not composes("acceptance", "nope")
    assert len(messages()) > 50


@pytest.mark.slow  # 5-6 s: composes every hinted key; run with -m slow after changing an error message or a key
def test_every_hinted_key_exists_in_the_composed_config():
    bad = [f"{where}: {key}{'' if value is None else '=' + value}  <- {msg[:120]}"
           for where, msg in messages() for key, value in hints(msg) if not composes(key, value)]
    if bad:
        pytest.fail("error messages name config keys that do not exist:\n" + "\n".join(bad))
