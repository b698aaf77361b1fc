"""Entry-point plumbing shared by train.py and decode.py: override checks, settings checks and one-line errors.

Everything here runs before or around the Hydra task, so a misspelt key, a value of the wrong type or an
unusable output directory ends in one line on stderr (exit status 2), never in Hydra's or torch's traceback.
"""

from __future__ import annotations

import difflib
import logging
import os
import sys
import warnings
from collections.abc import Callable, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from specdiff2.errors import ConfigError, SpecDiffError, is_int, is_real

# Framework chatter repeated on every run (issue 13, item 13): matched narrowly, by message.
QUIET_WARNINGS = (r"`isinstance\(treespec, LeafSpec\)` is deprecated",)
QUIET_LOG_LINES = ("💡 Tip: For seamless cloud logging", "Setting accelerator to CPU")


def _options(arg: str) -> tuple[str, str] | None:
    """(key, value) of a `key=value` override (`+`/`~` prefixes dropped), else None."""
    if arg.startswith("-") or "=" not in arg:
        return None
    key, value = arg.split("=", 1)
    return key.lstrip("+~"), value


def _is_group(key: str, conf_dir: Path) -> bool:
    return "@" in key or "/" in key or ("." not in key and (conf_dir / key).is_dir())


def check_overrides(argv: list[str], conf_dir: Path) -> str | None:
    """Return one error line for an override naming a config option that does not exist, else None.

    Hydra's own message for this spans many lines and hides the options; users get the list.
    """
    for arg in argv:
        kv = _options(arg)
        if kv is None:
            continue
        key, value = kv
        group_dir = conf_dir / key
        if "." in key or not group_dir.is_dir():
            continue
        for option in value.split(","):  # multirun sweeps: a,b,c
            option = option.strip()
            if option in ("null", "none") and key == "experiment":
                continue
            if not (group_dir / f"{option}.yaml").is_file():
                choices = sorted(p.stem for p in group_dir.glob("*.yaml"))
                return f"error: unknown option {key}={option}; choose one of: {', '.join(choices)}"
    return None


def config_keys(tree: Any, prefix: str = "") -> list[str]:
    """Every dotted key of a plain nested dict (mappings and leaves alike)."""
    keys = []
    if isinstance(tree, Mapping):
        for k, v in tree.items():
            path = f"{prefix}{k}"
            keys.append(path)
            keys.extend(config_keys(v, path + "."))
    return keys


def closest_key(key: str, tree: Mapping) -> str | None:
    """The valid key a misspelt one most likely meant: a sibling (same parent) with a close name, else any key
    with a close last part (`lr` -> optim.optimizer.lr), the one sharing most of the path."""
    parent, _, last = key.rpartition(".")
    siblings = _lookup(tree, parent) if parent and _has_key(tree, parent) else (tree if not parent else None)
    if isinstance(siblings, Mapping):
        match = difflib.get_close_matches(last, [str(k) for k in siblings], n=1, cutoff=0.6)
        if match:
            return f"{parent}.{match[0]}" if parent else match[0]
    by_last: dict[str, list[str]] = {}
    for k in config_keys(tree):
        by_last.setdefault(k.rpartition(".")[2], []).append(k)
    names = difflib.get_close_matches(last, list(by_last), n=1, cutoff=0.8)
    if not names:
        return None
    # Several keys may end alike (optim.optimizer.lr, pocket.verifier.lr): name them, closest path first.
    ranked = sorted(by_last[names[0]], key=lambda k: (-difflib.SequenceMatcher(None, key, k).ratio(), k))
    return " or ".join(ranked[:3])


def _has_key(tree: Any, key: str) -> bool:
    for part in key.split("."):
        if isinstance(tree, Mapping) and part in tree:
            tree = tree[part]
        elif isinstance(tree, list) and part.isdigit() and int(part) < len(tree):
            tree = tree[int(part)]
        else:
            return False
    return True


def compose_plain(conf_dir: Path, config_name: str, overrides: list[str]) -> dict:
    """The composed config (unresolved) as plain dicts: what the given group choices make available."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=overrides)
    return OmegaConf.to_container(cfg, resolve=False)


# Fields renamed in a config node, by the node's _target_: the old name is refused with one line naming the new one.
RENAMED_KEYS: dict[str, dict[str, str]] = {
    # issue 23: DiffuSpec's draft length is γ, as in every other strategy (the paper's k_1, k_min, k_max)
    "specdiff2.decode.diffuspec.strategy.DiffuSpecStrategy": {"k": "gamma", "k_min": "gamma_min", "k_max": "gamma_max"},
}


def renamed_key(key: str, tree: Mapping) -> str | None:
    """The new name of `key` when its node's target renamed that field (RENAMED_KEYS), else None."""
    parent, _, last = key.rpartition(".")
    node = _lookup(tree, parent) if parent and _has_key(tree, parent) else None
    if not isinstance(node, Mapping):
        return None
    new = RENAMED_KEYS.get(str(node.get("_target_")), {}).get(last)
    return f"{parent}.{new}" if new else None


def check_keys(argv: list[str], conf_dir: Path, config_name: str) -> str | None:
    """One error line for an override of a key the config does not have (`+key=...` adds one: allowed)."""
    groups, values = [], {}
    for arg in argv:
        kv = _options(arg)
        if kv is None or kv[0].startswith(("hydra.", "hydra/")):
            continue
        key = kv[0]
        if _is_group(key, conf_dir):
            groups.append(arg)
        elif not arg.startswith(("+", "~")):
            values[key] = kv[1]
    if not values or any("," in g for g in groups):  # a sweep over group options: Hydra checks each job
        return None
    try:
        tree = compose_plain(conf_dir, config_name, groups)
    except Exception:  # noqa: BLE001 - Hydra reports composition errors of its own kind itself
        return None
    for key, value in values.items():
        if not _has_key(tree, key):
            new = renamed_key(key, tree)
            if new:
                return f"error: {key} was renamed {new}; pass {new}={value}"
            hint = _key_hint(key, tree, config_name, conf_dir, groups)
            return f"error: unknown config key {key}; {hint} (+{key}=VALUE adds a new key)"
    return None


def _key_hint(key: str, tree: Mapping, config_name: str, conf_dir: Path, groups: list[str]) -> str:
    guess = closest_key(key, tree)
    if guess:
        return f"did you mean {guess}?"
    group = key.partition(".")[0]
    if (conf_dir / group).is_dir():  # decode.strategy.k exists with decode=self_select only
        found = [f"{group}={option}" for option in sorted(p.stem for p in (conf_dir / group).glob("*.yaml"))
                 if _composes_with(key, conf_dir, config_name, groups, f"{group}={option}")]
        if found:
            return f"it exists with {' or '.join(found)}"
    parent = key.rpartition(".")[0]
    if parent and _has_key(tree, parent) and isinstance(_lookup(tree, parent), Mapping):
        return f"{parent} has: {', '.join(sorted(map(str, _lookup(tree, parent))))}"
    return f"python {config_name}.py --cfg job lists every key"


def _composes_with(key: str, conf_dir: Path, config_name: str, groups: list[str], choice: str) -> bool:
    chosen = [g for g in groups if g.lstrip("+~").partition("=")[0] != choice.partition("=")[0]] + [choice]
    try:
        return _has_key(compose_plain(conf_dir, config_name, chosen), key)
    except Exception:  # noqa: BLE001 - an option that does not compose with the others names nothing
        return False


def _lookup(tree: Any, key: str) -> Any:
    for part in key.split("."):
        tree = tree[int(part)] if isinstance(tree, list) else tree[part]
    return tree


def check_swept_types(argv: list[str], conf_dir: Path, config_name: str) -> str | None:
    """One error line for a value of a multirun sweep that its strategy / acceptance / loader field cannot take
    (`-m decode.strategy.gamma=8,abc`): found before the first job runs, not in the middle of the sweep."""
    if config_name != "decode" or not ({"-m", "--multirun"} & set(argv)):
        return None
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from specdiff2.config_types import check_swept_values

    parser, first, sweeps = OverridesParser.create(), [], {}
    try:
        for arg in (a for a in argv if _options(a)):
            override = parser.parse_override(arg)
            if override.is_sweep_override():
                values = list(override.sweep_string_iterator())
                first.append(f"{override.get_key_element()}={values[0]}")
                if "/" not in override.key_or_group and not _is_group(override.key_or_group, conf_dir):
                    sweeps[override.key_or_group] = list(override.sweep_iterator())
            else:
                first.append(arg)
        if not sweeps:
            return None
        check_swept_values(compose_plain(conf_dir, config_name, first), sweeps)
    except SpecDiffError as err:
        return f"error: {err}"
    except Exception:  # noqa: BLE001 - Hydra reports its own parse and composition errors when it runs
        return None
    return None


def new_top_level_keys(argv: list[str], conf_dir: Path) -> list[str]:
    """`+foo=1` overrides that add a top-level key: allowed by Hydra, but no entry point reads them."""
    return [arg.split("=", 1)[0] for arg in argv
            if arg.startswith("+") and not arg.startswith("++") and (kv := _options(arg))
            and "." not in kv[0] and not _is_group(kv[0], conf_dir)]


def check_output_dirs(argv: list[str]) -> str | None:
    """One error line when hydra.run.dir / hydra.sweep.dir is a file or cannot be created (Hydra would
    raise FileExistsError or PermissionError with a traceback before the task starts)."""
    multirun = "-m" in argv or "--multirun" in argv
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    for arg in argv:
        kv = _options(arg)
        if kv is None or kv[0] != key or "${" in kv[1]:
            continue
        problem = directory_problem(kv[1])
        if problem:
            return f"error: {key}={kv[1]} {problem}; pass a writable directory (or leave {key} unset)"
    return None


def directory_problem(path: str | Path) -> str | None:
    """Why `path` cannot serve as an output/cache directory (it is created when it can be), else None."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        return "is a file, not a directory"
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        return f"cannot be created ({err.strerror})"
    if not os.access(p, os.W_OK | os.X_OK):
        return "is not writable"
    return None


# --- settings: declarative rules for the plain values an entry point reads itself --------------------------

Rule = Callable[[Any], "str | None"]  # value -> what it should be (None: fine)


def _int(minimum: int | None = None) -> Rule:
    def rule(value):
        ok = is_int(value, minimum)
        return None if ok else f"set an integer{'' if minimum is None else f' >= {minimum}'}"
    return rule


def _bool(value) -> str | None:
    return None if isinstance(value, bool) else "set true or false"


def _number(minimum: float, exclusive: bool = False) -> Rule:
    def rule(value):
        ok = is_real(value, minimum, exclusive)
        return None if ok else f"set a number {'>' if exclusive else '>='} {minimum}"
    return rule


def _device(value) -> str | None:
    ok = isinstance(value, str) and (value in ("auto", "cpu", "cuda", "mps") or
                                     (value.startswith("cuda:") and value[5:].isdigit()))
    return None if ok else "use auto, cpu, cuda or cuda:N"


def _accelerator(value) -> str | None:
    if value not in ("gpu", "cuda"):
        return None  # other names: Lightning's own check when the trainer is built
    import torch

    return None if torch.cuda.is_available() else "no CUDA device is visible; use trainer=cpu"


def _writable_dir(value) -> str | None:
    if not isinstance(value, str | Path):
        return "set a directory path"
    problem = directory_problem(value)
    return None if problem is None else f"that path {problem}; set a writable directory"


DECODE_SETTINGS: dict[str, Rule] = {
    "max_new_tokens": _int(1), "max_seq_len": _int(2), "seed": _int(0), "warmup": _bool, "device": _device,
    "paths.cache_dir": _writable_dir,
}
TRAIN_SETTINGS: dict[str, Rule] = {
    "seed": _int(0), "progress_bar": _bool, "module.online_topk": _int(0), "paths.cache_dir": _writable_dir,
}
# Checked once the checkpoints are known to exist: a missing 72B verifier is the first thing to fix.
TRAIN_DEVICE_SETTINGS: dict[str, Rule] = {"trainer.accelerator": _accelerator}


def check_required(tree: Mapping) -> None:
    """One ConfigError line for the first mandatory value (`???`, e.g. data=jsonl's data.prompts.path) left unset
    in the unresolved config tree; OmegaConf would raise MissingMandatoryValue with a traceback when it is read."""
    for key in config_keys(tree):
        if _lookup(tree, key) == "???":
            raise ConfigError(f"{key} is required by the chosen config options; pass {key}=VALUE")


def check_settings(values: Mapping[str, Any], rules: Mapping[str, Rule]) -> None:
    """Raise one ConfigError line `key=value; what to set` for the first value its rule refuses."""
    for key, rule in rules.items():
        expected = rule(values.get(key))
        if expected:
            raise ConfigError(f"{key}={values.get(key)!r}; {expected}")


# --- running ------------------------------------------------------------------------------------------------

def _user_error(err: BaseException | None) -> SpecDiffError | None:
    # Hydra's instantiate wraps errors raised by a _target_; the user-facing one is in the chain.
    while err is not None:
        if isinstance(err, SpecDiffError):
            return err
        err = err.__cause__ or err.__context__
    return None


@contextmanager
def one_line_errors():
    """Turn bad-input errors into one line on stderr and exit status 2 (inside the Hydra task)."""
    try:
        yield
    except KeyboardInterrupt:  # Ctrl-C outside the loops that keep partial results (loading, building a world)
        print("error: interrupted (Ctrl-C); files written before it stay (a killed train.py continues with "
              "resume=RUN_DIR)", file=sys.stderr)
        raise SystemExit(130) from None
    except Exception as err:
        user = _user_error(err)
        if user is None:
            raise
        print(f"error: {user}", file=sys.stderr)
        raise SystemExit(2) from None


class _DropLines(logging.Filter):
    """Drops the repeated chatter; sends the frameworks' information lines to stdout, so that stderr carries
    warnings and errors alone (a diverging run's one error line, not three 'INFO: GPU available' lines first)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        if any(line in message for line in QUIET_LOG_LINES):
            return False
        if record.levelno < logging.WARNING:
            print(record.getMessage(), flush=True)
            return False
        return True


def quiet_frameworks() -> None:
    """Once per process: no repeated deprecation/tip lines, and Lightning's lines printed once.

    Lightning's `lightning` logger has its own console handler and also propagates to the root logger, where
    Hydra's handler prints every line a second time (with a timestamp); Lightning's handler is enough.
    """
    for message in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
    logging.getLogger("lightning").propagate = False
    drop = _DropLines()
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero", "DeepSpeed"):
        logging.getLogger(name).addFilter(drop)


def run_main(hydra_main: Callable[[], None], conf_dir: Path, config_name: str) -> None:
    """Check overrides, then run a Hydra entry point whose task body uses `one_line_errors`."""
    os.environ.setdefault("SPECDIFF2_ROOT", str(conf_dir.parent))
    argv = sys.argv[1:]
    message = (check_overrides(argv, conf_dir) or check_output_dirs(argv) or check_keys(argv, conf_dir, config_name)
               or check_swept_types(argv, conf_dir, config_name))
    if message:
        print(message, file=sys.stderr)
        raise SystemExit(2)
    for key in new_top_level_keys(argv, conf_dir):
        print(f"note: {key} adds a top-level key that {config_name}.py does not read", file=sys.stderr)
    quiet_frameworks()
    hydra_main()
