#!/usr/bin/env bash
# Issue 15 on one host with N GPUs (run from the project root, the pocket world at $WORLD):
#   STAGES="tp decode traj zero" N=2 OUT=outputs/multi_gpu bash specdiff2/bench/multi_gpu.sh
# tp: TP verify-step latency, Qwen2.5-14B shape at TP=1 and TP=N, 32B shape at TP=N (random bf16 weights).
# decode: decode.py greedy output with the verifier split over N GPUs equals the one-GPU output (pocket models;
#         DECODE_DTYPE=float32 by default, DECODE_EXTRA e.g. "compile=graph kernels=eager" skips torch.compile).
# traj: sharded trajectory generation, one process per GPU, rank 1 SIGKILLed mid-run, resumed, compared with an
#       uninterrupted one-process run of the same seed.
# zero: DeepSpeed ZeRO-2/3 streak distillation of a Dream-7B-shape drafter (full and LoRA), export + reload.
set -uo pipefail
N=${N:-2}; OUT=${OUT:-outputs/multi_gpu}; WORLD=${WORLD:-.cache/pocket/tiny}; STAGES=${STAGES:-"tp decode traj zero"}
DATA=${DATA_DIR:-.shared_data}
export NCCL_NVLS_ENABLE=0 OMP_NUM_THREADS=4 TOKENIZERS_PARALLELISM=false
TR="python3 -m torch.distributed.run --standalone --nproc-per-node"
mkdir -p "$OUT"
has() { [[ " $STAGES " == *" $1 "* ]]; }
if has tp; then
  TP1=${TP1_SHAPES:-qwen14b}; TPN=${TPN_SHAPES:-"qwen14b qwen32b"}
  python3 -m specdiff2.bench.tp_verify $(printf -- "--shape %s " $TP1) --out "$OUT" --kinds ${TP1_KINDS:-graph,graph+block-compiled}
  $TR "$N" -m specdiff2.bench.tp_verify $(printf -- "--shape %s " $TPN) --out "$OUT" --kinds ${TPN_KINDS:-eager,graph,graph+block-compiled}
fi
if has decode; then
  COMMON="verifier.path=$WORLD/verifier verifier.pocket=false drafter.path=$WORLD/drafter drafter.pocket=false
    ar_drafter.path=$WORLD/ar_drafter ar_drafter.pocket=false data=humaneval data.prompts.limit=4 max_new_tokens=96
    paths.data_dir=$DATA max_seq_len=${MAX_SEQ_LEN:-1024} ${DECODE_EXTRA:-}"
  DT=${DECODE_DTYPE:-float32}  # fp32: the all-reduce sums partial products in another order, bf16 could flip a near-tie
  COMMON="$COMMON verifier.dtype=$DT drafter.dtype=$DT ar_drafter.dtype=$DT"
  for m in ${DECODE_METHODS:-ar sd_ar specdiff}; do
    python3 decode.py decode=$m $COMMON hydra.run.dir="$OUT/decode_tp1_$m" 2>&1 | tail -3
    $TR "$N" decode.py decode=$m $COMMON hydra.run.dir="$OUT/decode_tp${N}_$m" 2>&1 | tail -3
  done
  python3 - "$OUT" "$N" ${DECODE_METHODS:-ar sd_ar specdiff} <<'PY'
import json, sys
from pathlib import Path
out, n = Path(sys.argv[1]), sys.argv[2]
for m in sys.argv[3:]:
    rows = [[json.loads(l) for l in (out / f"decode_tp{t}_{m}" / "generations.jsonl").open()] for t in ("1", n)]
    same = sum(a["token_ids"] == b["token_ids"] for a, b in zip(*rows))
    s1, s2 = (json.loads((out / f"decode_tp{t}_{m}" / "summary.json").read_text()) for t in ("1", n))
    print(f"DECODE_EQ {m}: {same}/{len(rows[0])} prompts identical; tok/s TP1 {s1['tokens_per_s']:.0f} "
          f"TP{n} {s2['tokens_per_s']:.0f}; mean_accept_len {s1['mean_accept_len']:.2f} / {s2['mean_accept_len']:.2f}")
PY
fi
if has traj; then
  T="--verifier $WORLD/verifier --tokens $WORLD/tokens --prompts 64 --per-shard 4"
  rm -rf /tmp/traj_ref /tmp/traj_sharded
  python3 -m specdiff2.bench.sharded_trajectories gen --store /tmp/traj_ref $T 2>&1 | tail -1
  $TR "$N" -m specdiff2.bench.sharded_trajectories gen --store /tmp/traj_sharded $T --kill-rank 1 --kill-after 2 2>&1 \
    | grep -E "\[bench\]|\[trajectories\]" | tail -8
  echo "after kill: $(ls /tmp/traj_sharded | tr '\n' ' ')"
  $TR "$N" -m specdiff2.bench.sharded_trajectories gen --store /tmp/traj_sharded $T 2>&1 | grep -E "\[bench\]" | tail -4
  python3 -m specdiff2.bench.sharded_trajectories compare --store /tmp/traj_sharded --reference /tmp/traj_ref
fi
if has zero; then
  D7=/tmp/drafter_${DRAFTER_SHAPE:-qwen7b}
  [ -f $D7/config.json ] || python3 -m specdiff2.bench.zero_distill write-drafter --like "$WORLD/verifier" --out $D7 \
    --shape "${DRAFTER_SHAPE:-qwen7b}"
  Z="drafter.path=$D7 drafter.pocket=false drafter.dtype=bfloat16 drafter.logit_shift=true
     verifier.path=$WORLD/verifier verifier.pocket=false verifier.dtype=bfloat16 data.tokens_dir=$WORLD/tokens
     data.generation.dtype=bfloat16 paths.cache_dir=/tmp/zero_cache trainer.max_steps=${ZERO_STEPS:-12}
     trainer.val_check_interval=${ZERO_STEPS:-12} trainer.limit_val_batches=2 trainer.log_every_n_steps=4
     module.gradient_checkpointing=true optim=adamw optim.scheduler.num_warmup_steps=2 logger=csv progress_bar=false
     data.windows.windows_per_batch=16"
  for run in ${ZERO_RUNS:-"3:none 3:lora 2:none"}; do
    st=${run%%:*}; peft=${run##*:}
    # A full fine-tune checkpoint of a 7B drafter carries ~80 GB of optimizer state: none is written, the export
    # is gathered from memory. LoRA checkpoints hold the adapter only and are consolidated offline as well.
    if [ "$peft" = none ]; then flags=""; extra="~callbacks.checkpoint +trainer.enable_checkpointing=false"
    else flags="--consolidate"; extra=""; fi
    $TR "$N" -m specdiff2.bench.zero_distill run --out "$OUT/zero_z${st}_$peft" $flags trainer=deepspeed_z$st \
      peft=$peft $Z $extra 2>&1 | grep -E "ZERO_RESULT|Error|error:" | head -5
  done
fi
