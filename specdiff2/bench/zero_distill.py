"""DeepSpeed ZeRO-2/3 streak distillation of a Dream-7B-shape drafter on several GPUs, through train.py's pipeline.

    python -m specdiff2.bench.zero_distill write-drafter --like VERIFIER_DIR --out DIR      # once, one process
    torchrun --nproc-per-node N -m specdiff2.bench.zero_distill run --out RUN [train.py overrides ...]

`write-drafter` writes a random-weight checkpoint with the Dream-v0-7B shape (28 layers, 3584 wide, GQA 28/4,
Dream config.json, sharded safetensors + index) and the verifier's tokenizer and vocabulary, so any pocket
verifier can drive it. `run` composes conf/train.yaml with the overrides, runs `run_distillation` unchanged
(trajectories sharded over the ranks, Lightning's DeepSpeed strategy, export), and reports per-GPU peak
memory, step time and tokens/s. After training every rank takes part in one forward of the sharded drafter on
a fixed input; rank 0 then reloads the exported Hugging Face drafter (and the PEFT adapter for LoRA) in one
process and prints the max |Δ logit|. With `--consolidate`, the last ZeRO checkpoint directory is also turned
into fp32 weights offline (DeepSpeed zero_to_fp32) and compared with the export.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import lightning as L
import torch
import torch.distributed as dist
from hydra.utils import instantiate
from safetensors.torch import save_file

from specdiff2.bench.common import compose
from specdiff2.bench.real_shapes import SHAPES
from specdiff2.models.checkpoint import read_config
from specdiff2.models.config import ModelArgs
from specdiff2.models.parallel import random_sharded_transformer
from specdiff2.models.tokenizer import copy_tokenizer_files, load_tokenizer
from specdiff2.training.pipeline import run_distillation

PROBE_LEN = 48
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"  # CPU: a smoke run of the same path without DeepSpeed


def write_drafter(like: Path, out: Path, shape: str = "qwen7b", shard_gb: float = 4.0) -> None:
    """Random bf16 weights in the Dream layout, vocabulary rows = the verifier's (so the vocab check passes)."""
    tok = load_tokenizer(like)
    verifier_cfg = read_config(like)
    fields = {**SHAPES[shape], "vocab_size": verifier_cfg["vocab_size"], "qkv_bias": True}
    args = ModelArgs(**fields)
    model = random_sharded_transformer(args, None, torch.bfloat16, torch.device("cpu"))  # unsharded: tp=None
    out.mkdir(parents=True, exist_ok=True)
    shards, current, size, weight_map = [], {}, 0, {}
    for name, p in model.named_parameters():
        current[name] = p.data
        size += p.numel() * 2
        if size > shard_gb * 1e9:
            shards.append(current)
            current, size = {}, 0
    shards.append(current)
    for i, part in enumerate(shards):
        file = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(part, str(out / file), metadata={"format": "pt"})
        weight_map.update({k: file for k in part})
    total = sum(p.numel() * 2 for p in model.parameters())
    (out / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    config = {"architectures": ["DreamModel"], "model_type": "Dream", "vocab_size": args.vocab_size,
              "hidden_size": args.hidden_size, "intermediate_size": args.intermediate_size,
              "num_hidden_layers": args.num_layers, "num_attention_heads": args.num_heads,
              "num_key_value_heads": args.num_kv_heads, "max_position_embeddings": 4096, "rope_theta": 1e6,
              "rms_norm_eps": 1e-6, "hidden_act": "silu", "tie_word_embeddings": False, "torch_dtype": "bfloat16",
              "mask_token_id": tok.mask_token_id, "pad_token_id": tok.pad_token_id, "bos_token_id": tok.bos_token_id,
              "eos_token_id": tok.eos_token_id, "attention_dropout": 0.0, "use_cache": False}
    (out / "config.json").write_text(json.dumps(config, indent=2))
    copy_tokenizer_files(like, out)
    print(f"wrote {total / 1e9:.1f} GB ({sum(p.numel() for p in model.parameters()) / 1e9:.2f}B params) to {out}")


class LogitsProbe(L.Callback):
    """After training: logits of the sharded drafter on a fixed input (every rank joins the ZeRO-3 gather)."""

    def __init__(self):
        self.logits = None
        self.peak_gb = 0.0
        self.step_ms: list[float] = []
        self.tokens_per_step = 0
        self._t0 = 0.0

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if DEVICE == "cuda":
            torch.cuda.synchronize()
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if DEVICE == "cuda":
            torch.cuda.synchronize()
        self.step_ms.append((time.perf_counter() - self._t0) * 1e3)
        self.tokens_per_step = int(batch["input_ids"].numel())

    def on_train_end(self, trainer, module):
        self.peak_gb = torch.cuda.max_memory_allocated() / 1e9 if DEVICE == "cuda" else 0.0
        ids = probe_ids(module.device)
        training = module.drafter.training
        module.drafter.eval()  # LoRA dropout off: the reloads below run in eval mode too
        with torch.no_grad():
            self.logits = module.drafter(input_ids=ids).logits.float().cpu()  # (1, L, V)
        module.drafter.train(training)


def probe_ids(device) -> torch.Tensor:
    return torch.arange(PROBE_LEN, device=device)[None] % 100 + 10  # (1, L)


@torch.no_grad()
def _hf_logits(path: Path, dtype: torch.dtype) -> torch.Tensor:
    from specdiff2.models.hf import load_hf_drafter

    model = load_hf_drafter(path, dtype).to(DEVICE).eval()
    return model(input_ids=probe_ids(DEVICE)).logits.float().cpu()  # (1, L, V)


@torch.no_grad()
def _adapter_logits(base: Path, adapter: Path, dtype: torch.dtype) -> torch.Tensor:
    from peft import PeftModel

    from specdiff2.models.hf import load_hf_drafter

    model = PeftModel.from_pretrained(load_hf_drafter(base, dtype).to(DEVICE), str(adapter)).eval()
    return model(input_ids=probe_ids(DEVICE)).logits.float().cpu()  # (1, L, V)


def _free() -> None:
    if DEVICE == "cuda":
        torch.cuda.empty_cache()


def reload_logits(export: Path, base: Path, lora: bool) -> dict[str, torch.Tensor]:
    """Logits of one-process reloads of the export, in bf16 on cuda:0, to compare with the probe."""
    from specdiff2.models.checkpoint import load_transformer

    out = {"hf_export": _hf_logits(export / "drafter", torch.bfloat16)}
    engine, _ = load_transformer(export / "drafter", torch.bfloat16, DEVICE)
    with torch.no_grad():
        out["engine_export"] = engine(probe_ids(DEVICE), torch.arange(PROBE_LEN, device=DEVICE)[None]).float().cpu()
    del engine
    if lora:
        out["peft_adapter"] = _adapter_logits(base, export / "adapter", torch.bfloat16)
    _free()
    return out


def merged_vs_adapter_fp32(export: Path, base: Path) -> float:
    """Max |Δ logit| between the merged HF export and base + PEFT adapter, both reloaded in fp32: the export's
    correctness apart from bf16 rounding (which the probe comparisons above include)."""
    merged = _hf_logits(export / "drafter", torch.float32)
    adapter = _adapter_logits(base, export / "adapter", torch.float32)
    _free()
    return float((merged - adapter).abs().max())


def run(out: Path, overrides: list[str], consolidate: bool) -> None:
    cfg = compose("train", [f"paths.output_dir={out}", *overrides])
    job = instantiate(cfg.job)
    probe = LogitsProbe()
    job.callbacks["logits_probe"] = probe
    t0 = time.perf_counter()
    summary = run_distillation(job)
    wall = time.perf_counter() - t0
    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1
    peaks = [probe.peak_gb]
    if world > 1:
        peaks = [None] * world
        dist.all_gather_object(peaks, probe.peak_gb)
    if rank != 0:
        return
    lora = cfg.peft.lora is not None
    export = out / "export"
    reloads = reload_logits(export, Path(cfg.drafter.path), lora)
    diffs = {k: float((v - probe.logits).abs().max()) for k, v in reloads.items()}
    if lora:
        diffs["merged_vs_adapter_fp32"] = merged_vs_adapter_fp32(export, Path(cfg.drafter.path))
    if consolidate:
        diffs.update(_consolidated_diff(out, job, export))
    steady = sorted(probe.step_ms[2:] or probe.step_ms)  # the first steps include DeepSpeed's lazy set-up
    step_ms = steady[len(steady) // 2]
    tokens_s = world * probe.tokens_per_step / (step_ms / 1e3)  # every rank trains on its own batch
    result = {"overrides": overrides, "world": world, "median_step_ms": step_ms, "tokens_per_s": tokens_s,
              "tokens_per_step_per_gpu": probe.tokens_per_step, "gpu": torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu",
              "peak_gb_per_gpu": peaks, "wall_s": wall, "probe_logit_scale": float(probe.logits.abs().max()),
              "max_abs_logit_diff": diffs, "summary": _plain(summary)}
    (out / "zero_result.json").write_text(json.dumps(result, indent=2, default=str))
    print("ZERO_RESULT " + json.dumps({k: result[k] for k in ("world", "gpu", "peak_gb_per_gpu", "median_step_ms", "tokens_per_s", "wall_s",
                                                                "max_abs_logit_diff", "probe_logit_scale")}))
    print("ZERO_SUMMARY " + json.dumps(_plain(summary), default=str)[:3000])


def _consolidated_diff(out: Path, job, export: Path) -> dict[str, float]:
    """zero_to_fp32 on the last checkpoint dir (offline, one process) vs the exported weights."""
    from specdiff2.training.zero import consolidate_checkpoint

    ckpt = out / "checkpoints" / "last.ckpt"
    if not ckpt.is_dir():
        return {"consolidate": float("nan")}
    state = consolidate_checkpoint(ckpt)
    from safetensors import safe_open

    diff = 0.0
    files = list((export / "adapter").glob("*.safetensors"))
    if files:
        with safe_open(str(files[0]), "pt") as f:
            adapter = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (a safetensors handle)
        for k, v in state.items():  # drafter.base_model...lora_A.default.weight ↔ base_model...lora_A.weight
            name = k.removeprefix("drafter.").replace(".default", "")
            if name in adapter:
                diff = max(diff, float((adapter[name].float() - v.float()).abs().max()))
    return {"consolidated_fp32_vs_adapter": diff, "consolidated_tensors": float(len(state))}


def _plain(d):
    return json.loads(json.dumps(d, default=str))


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("write-drafter")
    w.add_argument("--like", required=True, type=Path)
    w.add_argument("--out", required=True, type=Path)
    w.add_argument("--shape", default="qwen7b")
    r = sub.add_parser("run")
    r.add_argument("--out", required=True, type=Path)
    r.add_argument("--consolidate", action="store_true")
    r.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    if args.cmd == "write-drafter":
        write_drafter(args.like, args.out, args.shape)
    else:
        if args.out.exists():
            raise SystemExit(f"error: {args.out} exists; pass a new --out directory")
        run(args.out, args.overrides, args.consolidate)


if __name__ == "__main__":
    main()
