"""Entry-point plumbing shared by train.py and decode.py: override checks and one-line errors."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

from specdiff2.errors import SpecDiffError


def check_overrides(argv: list[str], conf_dir: Path) -> str | None:
    """Return one error line for an override naming a config option that does not exist, else None.

    Hydra's own message for this spans many lines and hides the options; users get the list.
    """
    for arg in argv:
        if arg.startswith("-") or "=" not in arg:
            continue
        key, value = arg.split("=", 1)
        key = key.lstrip("+~")
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
    except Exception as err:
        user = _user_error(err)
        if user is None:
            raise
        print(f"error: {user}", file=sys.stderr)
        raise SystemExit(2) from None


def run_main(hydra_main: Callable[[], None], conf_dir: Path) -> None:
    """Check overrides, then run a Hydra entry point whose task body uses `one_line_errors`."""
    os.environ.setdefault("SPECDIFF2_ROOT", str(conf_dir.parent))
    message = check_overrides(sys.argv[1:], conf_dir)
    if message:
        print(message, file=sys.stderr)
        raise SystemExit(2)
    hydra_main()
