#!/usr/bin/env bash
# Issues 5 and 6 on the GPU pocket world (run after distill_arms, on the same warm box):
# self-selection K × drafter-temperature grid (unaligned drafter, then streak-distilled), DiffuSpec ablations on
# HumanEval and GSM8K. Each table is also saved under $OUT (or ./outputs/grids).
set -uo pipefail
OUT=${OUT:-outputs/grids}
COMMON="pocket=gpu verifier.dtype=bfloat16 drafter.dtype=bfloat16 ar_drafter.dtype=bfloat16 paths.data_dir=${DATA_DIR:-.shared_data} max_seq_len=1024"
STREAK=${STREAK_DRAFTER:-outputs/distill_arms/distill_streak/export/drafter}
bench() { python3 -m specdiff2.bench.decode_methods $COMMON "$@"; }
bench data=humaneval data.prompts.limit=2 max_new_tokens=128 --preset self_select --out $OUT/ss_unaligned
if [ -d "$STREAK" ]; then
  for k in 1 4 8 16; do for t in 0.1 1.0 2.0; do
    M+=(--method "decode=self_select decode.strategy.gamma=16 decode.strategy.k=$k decode.strategy.drafter_temperature=$t")
  done; done
  bench data=humaneval data.prompts.limit=2 max_new_tokens=128 drafter.path=$STREAK --method decode=ar \
    --method "decode=specdiff decode.strategy.gamma=16" "${M[@]}" --out $OUT/ss_streak
fi
bench data=humaneval data.prompts.limit=3 max_new_tokens=128 --preset diffuspec --out $OUT/diffuspec_humaneval
bench data=gsm8k data.prompts.limit=3 max_new_tokens=128 --preset diffuspec --out $OUT/diffuspec_gsm8k
