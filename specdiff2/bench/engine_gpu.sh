#!/usr/bin/env bash
# One GPU, one call's worth (~10 min on an H200), run from the project root; what issue 21's closing note measured:
#   STAGES="world speed check real" OUT=/tmp/engine bash specdiff2/bench/engine_gpu.sh
# world: a GPU pocket world trained for fewer steps (speed tables, not claims: ~2.6 min on an H200) under $WORLD_DIR;
#        keep it under /tmp: a path the device tool carries is replaced on every call.
# speed: engine_speed (HF dynamic / static / assisted vs every engine method; wall vs GPU-busy per step, profiler).
# check: step_check on the tests' random checkpoints (graph vs eager tokens, fp32/bf16/T=1/context limit).
# real:  the Qwen2.5-7B-shape verify step against its bandwidth floor.
# tree:  issue 24's sweep (conf/sweep/tree.yaml: chain / argmax chain / self-select K·γ / best-first tree N=8..256
#        on HumanEval, GSM8K, held-out; greedy and T=1) on the world, then its τ/tok-s-vs-N table.
# realtree: the Qwen2.5-7B-shape tree verify pass vs N (where width stops being free).
# traj:  issue 27's trajectory sampling vs HF static-cache generate, batch 64: Qwen2.5-7B shape and the world's verifier.
# OLD=DIR adds "speed" for another checkout (e.g. `git archive REV | tar -x -C DIR`) on the same world: before/after.
# Never re-send DIR with a later call while this runs (the tool replaces carried paths under a running job).
set -uo pipefail
OUT=${OUT:-/tmp/engine}; WORLD_DIR=${WORLD_DIR:-/tmp/pocket/gpu}; STAGES=${STAGES:-"world speed check real"}
DATA=${DATA_DIR:-$PWD/.shared_data}
W="pocket=gpu paths.pocket_dir=$WORLD_DIR pocket.verifier.steps=${VERIFIER_STEPS:-600} pocket.drafter.steps=400
   pocket.ar_drafter.steps=400"
D="paths.data_dir=$DATA verifier.dtype=bfloat16 drafter.dtype=bfloat16 ar_drafter.dtype=bfloat16"
SPEED="--sets ${SETS:-humaneval} --prompts ${PROMPTS:-4} --max-new-tokens ${MAX_NEW:-200}"
mkdir -p "$OUT"
has() { [[ " $STAGES " == *" $1 "* ]]; }
if has world; then
  python3 - $W <<'PY' > "$OUT/world.log" 2>&1
import sys
from hydra.utils import instantiate
from specdiff2.bench.common import compose
from specdiff2.pocket.world import ensure_pocket_world
cfg = compose("decode", sys.argv[1:])
ensure_pocket_world(instantiate(cfg.pocket), cfg.paths.pocket_dir)
PY
  tail -2 "$OUT/world.log"
fi
if has speed; then
  python3 -m specdiff2.bench.engine_speed $W $D $SPEED --profile --out "$OUT/new" > "$OUT/speed.log" 2>&1
  if [[ -n "${OLD:-}" ]]; then
    (cd "$OLD" && PYTHONPATH="$OLD:${PYTHONPATH:-}" python3 -m specdiff2.bench.engine_speed $W $D $SPEED \
      --out "$OUT/old" > "$OUT/speed_old.log" 2>&1)
  fi
fi
if has check; then
  python3 -m specdiff2.bench.step_check device=cuda --random-world /tmp/random_world > "$OUT/check.log" 2>&1
fi
if has real; then
  python3 -m specdiff2.bench.real_shapes --modes graph+block-compiled > "$OUT/real.log" 2>&1
fi
if has tree; then
  python3 -m specdiff2.bench.decode_methods $W $D --sweep tree --out "$OUT/tree" > "$OUT/tree.log" 2>&1
  python3 -m specdiff2.report.tree_table "$OUT/tree/decode_rows.jsonl" --json "$OUT/tree/table.json" \
    > "$OUT/tree_table.log" 2>&1
fi
if has realtree; then
  python3 -m specdiff2.bench.real_shapes --sections tree --out "$OUT" > "$OUT/realtree.log" 2>&1
fi
if has traj; then
  python3 -m specdiff2.bench.trajectories_speed --shape qwen7b --new-tokens 256 --out "$OUT/traj7b" \
    > "$OUT/traj7b.log" 2>&1
  VDIR=$(dirname "$(find -L "$WORLD_DIR" -path '*verifier*' -name config.json | head -1)")
  python3 -m specdiff2.bench.trajectories_speed --verifier "$VDIR" --new-tokens 256 --out "$OUT/trajpocket" \
    > "$OUT/trajpocket.log" 2>&1
fi
grep -h "│\|method |\|^decode=" "$OUT"/*.log 2>/dev/null | tail -60
