"""Build a pocket world and show it: python -m specdiff2.bench.pocket_world [pocket=gpu] [--out DIR].

Prints per-stage wall time, parameter counts, validation losses, and one greedy verifier completion
of the first HumanEval prompt (through the decode engine's `ar` method).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from hydra.utils import instantiate

from specdiff2.bench.common import compose, engine_from_config
from specdiff2.data.prompts import PromptSource, load_prompts
from specdiff2.pocket.world import ensure_pocket_world
from specdiff2.report import print_world


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("overrides", nargs="*", default=["pocket=tiny"])
    parser.add_argument("--out", default=None, help="copy world.json and the completion here")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    args = parser.parse_args()
    cfg = compose("decode", args.overrides)
    world = ensure_pocket_world(instantiate(cfg.pocket), cfg.paths.pocket_dir)
    print_world(world)
    engine = engine_from_config(compose("decode", [*args.overrides, "decode=ar", "temperature=0"]))
    device = engine.device
    prompt = load_prompts(PromptSource("humaneval", cfg.paths.data_dir, limit=1))[0]
    ids = engine.tokenizer(prompt.text, add_special_tokens=False)["input_ids"]
    gen = engine.generate(ids, args.max_new_tokens)
    completion = engine.tokenizer.decode(gen.token_ids)
    print(f"--- greedy verifier completion of {prompt.id} ({len(ids)} prompt tokens, "
          f"{gen.metrics['tokens_per_s']:.0f} tok/s on {device}) ---")
    print(prompt.text + "\033[1m" + completion + "\033[0m")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        shutil.copy(world.root / "world.json", out / "world.json")
        (out / "completion.json").write_text(json.dumps({"id": prompt.id, "prompt": prompt.text,
                                                         "completion": completion, **gen.metrics}, indent=2))
        for role in ("verifier", "drafter", "ar_drafter"):
            shutil.copy(world.root / role / "train_metrics.json", out / f"{role}_train_metrics.json")


if __name__ == "__main__":
    main()
