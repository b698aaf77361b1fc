"""Config values checked against the signature of the callable they are passed to (a node's `_target_`).

decode.py builds its strategy, acceptance rule and model loaders from config nodes. A value of the wrong type
(`decode.strategy.gamma=abc`) used to surface as a TypeError traceback from inside the strategy, after the
models had loaded. Here every field of those nodes is checked against its target's parameter, when the config
is built: the parameter's annotation when it is a plain int / float / bool / str (optionally `| None`), else
the type of its default. Fields of other types (models, refs, nested nodes) are left to their own checks.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Mapping
from typing import Any

from specdiff2.errors import ConfigError

CHECKED = ("decode.strategy", "decode.models", "acceptance", "job.sampling")  # decode nodes users set fields of
WANTED = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string", "None": "null"}


def _fits(value: Any, kind: str) -> bool:
    if kind == "None":
        return value is None
    if isinstance(value, bool):  # bool is an int subclass: true is not a step count
        return kind == "bool"
    return {"int": isinstance(value, int), "float": isinstance(value, int | float),
            "str": isinstance(value, str)}.get(kind, False)


def accepted_kinds(param: inspect.Parameter) -> set[str] | None:
    """The plain types a parameter accepts ("None" included), or None when it is not a plain-typed parameter."""
    annotation, default = param.annotation, param.default
    if annotation is inspect.Parameter.empty:
        kind = type(default).__name__
        return {kind} if default is not None and kind in WANTED else None
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    kinds = {part.strip() for part in text.split("|")}
    if not kinds <= set(WANTED):
        return None
    return kinds | ({"None"} if default is None else set())


def _parameters(target: str) -> Mapping[str, inspect.Parameter] | None:
    from hydra.utils import get_object

    try:
        return inspect.signature(get_object(target)).parameters
    except Exception:  # noqa: BLE001 - an unimportable target: Hydra names it when the node is instantiated
        return None


def check_node(node: Mapping, key: str, raw: Mapping | None = None) -> None:
    """One ConfigError line for the first field of `node` (resolved; `raw`: the same node unresolved, to name the
    key a user set through an interpolation) that its target cannot take; nested nodes are checked too."""
    raw = raw if isinstance(raw, Mapping) else node
    params = _parameters(node["_target_"]) if isinstance(node.get("_target_"), str) else None
    for field, value in node.items():
        name = _source(f"{key}.{field}", raw.get(field))
        if isinstance(value, Mapping):
            check_node(value, name, raw.get(field))
        elif params is not None and not str(field).startswith("_") and not _interpolation(value):
            _check_field(params, field, value, name, node["_target_"])


def _interpolation(value: Any) -> bool:
    """An unresolved ${...} (the multirun pre-check reads the unresolved tree): its target key is checked alone."""
    return isinstance(value, str) and value.startswith("${")


def _source(key: str, raw_value: Any) -> str:
    """The key a user sets: `temperature` for job.sampling.temperature: ${temperature}."""
    if _interpolation(raw_value) and raw_value.endswith("}"):
        inner = raw_value[2:-1]
        return inner if inner.replace(".", "").replace("_", "").isalnum() else key
    return key


def _check_field(params: Mapping[str, inspect.Parameter], field: str, value: Any, key: str, target: str) -> None:
    param = params.get(field)
    if param is None:
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            takes = ", ".join(n for n, p in params.items() if p.default is not inspect.Parameter.empty)
            raise ConfigError(f"{key} is not a setting of {target.rpartition('.')[2]} (it takes: {takes}); "
                              f"remove {key}")
        return
    kinds = accepted_kinds(param)
    if kinds is not None and not any(_fits(value, kind) for kind in kinds):
        wanted = " or ".join(WANTED[k] for k in ("int", "float", "bool", "str", "None") if k in kinds)
        raise ConfigError(f"{key}={value!r}; set {wanted}")


def check_config_types(cfg, nodes: tuple[str, ...] = CHECKED) -> None:
    """check_node on each of `nodes` of a composed DictConfig (those it has)."""
    from omegaconf import OmegaConf

    for key in nodes:
        node = OmegaConf.select(cfg, key)
        if node is not None:
            check_node(OmegaConf.to_container(node, resolve=True), key, OmegaConf.to_container(node, resolve=False))


def _set(tree: dict, key: str, value: Any) -> bool:
    *parents, last = key.split(".")
    for part in parents:
        tree = tree.get(part) if isinstance(tree, dict) else None
    if not isinstance(tree, dict):
        return False
    tree[last] = value
    return True


def check_swept_values(tree: dict, sweeps: dict[str, list], nodes: tuple[str, ...] = CHECKED) -> None:
    """Before a multirun starts: every value of a swept field (`-m decode.strategy.gamma=8,abc`) is checked, so
    the sweep stops in one line before its first job runs. `tree`: the unresolved config of the first values."""
    for key, values in sweeps.items():
        node_key = next((n for n in nodes if key.startswith(n + ".")), None)
        if node_key is None:
            continue
        for value in values:
            trial = copy.deepcopy(tree)
            if _set(trial, key, value):
                node = trial
                for part in node_key.split("."):
                    node = node[part]
                check_node(node, node_key)
