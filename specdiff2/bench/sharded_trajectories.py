"""Sharded verifier-trajectory generation on several GPUs, killed and resumed.

    torchrun --nproc-per-node N -m specdiff2.bench.sharded_trajectories gen --store DIR --verifier V --tokens T
        [--tp TP]                           # TP GPUs per verifier copy, N / TP copies (data-parallel groups)
        [--kill-rank R --kill-after K]      # rank R SIGKILLs itself after its K-th shard (torchrun stops the rest)
    python -m specdiff2.bench.sharded_trajectories compare --store DIR --reference REF

One process per GPU. Each data-parallel group samples every (N / TP)-th pending shard with its verifier split over
its TP GPUs, and its first rank records it in the group's progress file; rank 0 merges the manifest. `compare`
checks the merged set against a reference store (an uninterrupted run with the same seed): rows, duplicates,
missing samples, and how many trajectories are token for token the same (in bf16 a TP split or a different batch
order may round a logit differently and change a sampled token: same distribution, another draw).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import time
from pathlib import Path

from specdiff2.data.trajectories import GenerationSpec, generate_trajectories, load_trajectories


def spec(args) -> GenerationSpec:
    return GenerationSpec(num_prompts=args.prompts, prompt_tokens=32, prompts_per_shard=args.per_shard,
                          samples_per_prompt=4, max_new_tokens=64, temperature=0.8, top_p=0.95, topk_logprobs=8,
                          batch_size=64, dtype="bfloat16", device="auto", seed=0, tensor_parallel_size=args.tp)


def gen(args) -> None:
    rank = int(os.environ.get("RANK", "0"))
    done = []

    def on_done(k: int) -> None:
        done.append(k)
        if rank == args.kill_rank and len(done) == args.kill_after:
            print(f"[bench] rank {rank}: SIGKILL after shard {k}", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)

    t0 = time.perf_counter()
    generate_trajectories(spec(args), args.verifier, args.store, tokens_dir=args.tokens, on_shard_done=on_done)
    print(f"[bench] rank {rank}: {len(done)} shards in {time.perf_counter() - t0:.1f}s", flush=True)


def compare(args) -> None:
    merged, ref = load_trajectories(args.store).to_dict(), load_trajectories(args.reference).to_dict()
    keys = list(zip(merged["prompt_id"], merged["sample"]))
    ref_keys = set(zip(ref["prompt_id"], ref["sample"]))
    manifest = json.loads((Path(args.store) / "manifest.json").read_text())
    same = dict(zip(zip(ref["prompt_id"], ref["sample"]), ref["continuation_ids"]))
    equal = sum(same.get(k) == c for k, c in zip(keys, merged["continuation_ids"]))
    result = {"rows": len(keys), "reference_rows": len(ref_keys), "duplicates": len(keys) - len(set(keys)),
              "missing": len(ref_keys - set(keys)), "extra": len(set(keys) - ref_keys),
              "identical_to_reference": merged == ref, "same_tokens": f"{equal}/{len(keys)}",
              "shards": len(manifest["shards"])}
    print("SHARDED_RESULT " + json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("cmd", choices=("gen", "compare"))
    parser.add_argument("--store", required=True)
    parser.add_argument("--verifier")
    parser.add_argument("--tokens")
    parser.add_argument("--reference")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--per-shard", type=int, default=4)
    parser.add_argument("--tp", type=int, default=1, help="GPUs per verifier copy (tensor parallel)")
    parser.add_argument("--kill-rank", type=int, default=-1)
    parser.add_argument("--kill-after", type=int, default=2)
    args = parser.parse_args()
    gen(args) if args.cmd == "gen" else compare(args)


if __name__ == "__main__":
    main()
