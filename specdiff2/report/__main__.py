"""python -m specdiff2.report RUN_DIR [--wandb offline|online|disabled] [--previous OLD_RUN/claims.json]: report.md
+ figures of a reproduce run (with --previous: the claims whose verdict changed since that run)."""

from __future__ import annotations

import argparse

from specdiff2.cli import one_line_errors
from specdiff2.report.build import build_report
from specdiff2.report.claims import ClaimResult
from specdiff2.report.markdown import claims_section


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m specdiff2.report")
    parser.add_argument("run_dir", help="RUN_DIR of python -m specdiff2.bench.reproduce")
    parser.add_argument("--wandb", default="disabled", choices=["auto", "offline", "online", "disabled"],
                        help="also log figures and tables to W&B (default: files only)")
    parser.add_argument("--previous", default=None, help="an earlier run's claims.json: list changed verdicts")
    args = parser.parse_args(argv)
    with one_line_errors():
        wandb = None if args.wandb == "disabled" else {"mode": args.wandb}
        out = build_report(args.run_dir, wandb=wandb, previous=args.previous)
    print(claims_section([ClaimResult(**c) for c in out["claims"]]))
    print(f"\nwrote {out['report']} and {len(out['figures'])} figures")


if __name__ == "__main__":
    main()
