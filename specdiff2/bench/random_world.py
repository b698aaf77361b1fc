"""Random-init tiny checkpoints in the real on-disk layout, written in seconds (no pocket world to train): the decode
tests' fixture, and `bench/step_check --random-world` (a GPU smoke test of the captured step).

One byte-level BPE tokenizer (< 512 ids, EOS / mask / pad) is shared by every model; each directory is a Hugging
Face checkpoint (config.json + model.safetensors + tokenizer files) that `decode.loading` reads like a real one:
    verifier        Qwen2 layout, 2 layers, random weights scaled up so its distributions are peaked
    ar_drafter      the verifier's weights plus noise: high but imperfect acceptance
    drafter         Dream layout (bidirectional, shifted logits), the verifier's weights plus noise
    causal_drafter  Dream layout with prefix_attention=causal and the verifier's exact weights: its q_1 is the
                    verifier's p_1, so drafts are accepted at position 1 at least
    tokens          a `datasets` token dataset (train split) for the n-gram proxy
The embedding tables have more rows than the tokenizer has ids (rows no drafter may propose).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import torch

ROWS = 576  # > the tokenizer's ids: the extra rows must never be proposed
ARCH = dict(vocab_size=ROWS, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=512, rope_theta=10000.0, tie_word_embeddings=False)
NORM_SCALE = 4.0  # final-norm gain: logits with a spread of several nats (peaked, like a trained model)
NOISE = 0.05  # relative weight noise of the drafters that copy the verifier
NAMES = ["x", "y", "total", "items", "value", "result", "count", "data", "path", "name", "i", "self"]
FUNCS = ["add", "load", "parse", "run", "build", "merge", "split", "check", "read", "write"]


@dataclass
class TinyWorld:
    root: Path
    verifier: Path
    ar_drafter: Path
    drafter: Path
    causal_drafter: Path
    tokens: Path


def corpus(n_files: int = 120, seed: int = 0) -> list[str]:
    """Small Python-like files: enough structure for BPE merges and an n-gram with repeated contexts."""
    rng = random.Random(seed)
    files = []
    for _ in range(n_files):
        lines = ["import os", "import sys", ""] if rng.random() < 0.5 else []
        for _ in range(rng.randint(2, 5)):
            f, a, b = rng.choice(FUNCS), rng.choice(NAMES), rng.choice(NAMES)
            lines += [f"def {f}({a}, {b}):", f"    {a} = [{b} for i in range(10)]", f"    return {a} + {b}", ""]
        if rng.random() < 0.5:
            lines += ["class Foo:", "    def __init__(self, x):", "        self.x = x", ""]
        files.append("\n".join(lines))
    return files


def _save(model, tok, out: Path, **config_updates) -> Path:
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    if config_updates:
        config = json.loads((out / "config.json").read_text())
        config.update(config_updates)
        (out / "config.json").write_text(json.dumps(config, indent=2))
    return out


def _noisy(model, scale: float, seed: int):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale * p.std().clamp_min(1e-3))
    return model


def _dream(out: Path, **extra) -> None:
    """Rewrite a saved Qwen2 config.json as a Dream one (transformers-4 style rope fields, mask token)."""
    config = json.loads((out / "config.json").read_text())
    theta = config.pop("rope_parameters", {}).get("rope_theta", ARCH["rope_theta"])
    config.update(model_type="Dream", architectures=["DreamModel"], rope_theta=theta, **extra)
    (out / "config.json").write_text(json.dumps(config, indent=2))


def build_tiny_world(root: Path) -> TinyWorld:
    from datasets import Dataset, DatasetDict
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from specdiff2.pocket.tokenizer import train_tokenizer

    root.mkdir(parents=True, exist_ok=True)
    texts = corpus()
    tok = train_tokenizer(texts, 512, root / "tokenizer")
    assert len(tok) < ROWS
    torch.manual_seed(0)
    verifier = Qwen2ForCausalLM(Qwen2Config(**ARCH)).eval()
    with torch.no_grad():  # larger than the default init: peaked distributions, so argmaxes are stable
        for name, p in verifier.named_parameters():
            p.normal_(1.0 if "norm" in name else 0.0, 0.15)
        verifier.model.norm.weight.fill_(NORM_SCALE)
        # Like a trained model's: ids past the tokenizer and the drafter-only tokens get logit 0, never the top.
        unused = torch.arange(len(tok), ROWS).tolist() + [tok.mask_token_id, tok.pad_token_id]
        verifier.lm_head.weight[unused] = 0.0
    state = {k: v.clone() for k, v in verifier.state_dict().items()}

    def copy(noise: float, seed: int):
        model = Qwen2ForCausalLM(Qwen2Config(**ARCH)).eval()
        model.load_state_dict(state)
        return _noisy(model, noise, seed) if noise else model

    mask = tok.mask_token_id
    paths = {"verifier": _save(verifier, tok, root / "verifier"),
             "ar_drafter": _save(copy(NOISE, 1), tok, root / "ar_drafter"),
             "drafter": _save(copy(NOISE, 2), tok, root / "drafter"),
             "causal_drafter": _save(copy(0.0, 0), tok, root / "causal_drafter")}
    _dream(paths["drafter"], mask_token_id=mask)
    _dream(paths["causal_drafter"], mask_token_id=mask, prefix_attention="causal")
    ids = [tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for t in texts]
    sha = [f"{i:016x}" for i in range(len(ids))]  # the pocket token dataset's file ids (corpus prompts name them)
    DatasetDict({"train": Dataset.from_dict({"input_ids": ids, "sha": sha})}).save_to_disk(str(root / "tokens"))
    return TinyWorld(root, tokens=root / "tokens", **paths)


def tiny_hf_qwen2(vocab: int, seed: int = 0):
    """A 2-layer, 32-wide HF Qwen2 (tied, SDPA, fp32) with `vocab` rows: the unit tests' drafter stand-in."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    cfg = Qwen2Config(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                      tie_word_embeddings=True, use_cache=False)
    cfg._attn_implementation = "sdpa"
    return Qwen2ForCausalLM(cfg).float()
