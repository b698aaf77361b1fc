"""Stage builders of the pocket world (see `world.py`). Each returns a dict of figures for world.json."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from specdiff2.errors import DataError
from specdiff2.pocket.corpus import read_corpus
from specdiff2.pocket.spec import ModelSpec, PocketSpec, PocketWorld

DREAM_ARCHITECTURE = {"model_type": "Dream", "architectures": ["DreamModel"]}


def _quiet_datasets() -> None:
    import datasets

    datasets.disable_progress_bars()


def build_corpus_stage(spec: PocketSpec, world: PocketWorld, log=print) -> dict:
    from datasets import Dataset, DatasetDict

    _quiet_datasets()
    c = spec.corpus
    corpus = read_corpus(c.roots, c.max_bytes, c.max_file_bytes, validation_fraction=c.validation_fraction,
                         heldout_packages=c.heldout_packages)
    dd = DatasetDict({
        split: Dataset.from_dict({"sha": [f.sha for f in files], "text": [f.text for f in files]})
        for split, files in (("train", corpus.train), ("validation", corpus.validation))
    })
    dd.save_to_disk(str(world.corpus))
    return {**corpus.stats(), "heldout_packages": list(c.heldout_packages)}


def _load_corpus(world: PocketWorld):
    from datasets import load_from_disk

    return load_from_disk(str(world.corpus))


def build_tokenizer_stage(spec: PocketSpec, world: PocketWorld, log=print) -> dict:
    from specdiff2.pocket.tokenizer import train_tokenizer

    train = _load_corpus(world)["train"]

    def texts():
        used = 0
        for text in train["text"]:
            if used >= spec.corpus.tokenizer_train_bytes:
                return
            used += len(text)
            yield text

    tok = train_tokenizer(texts(), spec.vocab_size, world.tokenizer)
    return {"vocab_size": len(tok), "eos_id": tok.eos_token_id, "mask_id": tok.mask_token_id,
            "pad_id": tok.pad_token_id}


def build_tokens_stage(spec: PocketSpec, world: PocketWorld, log=print) -> dict:
    from datasets import DatasetDict

    from specdiff2.models.tokenizer import load_tokenizer

    _quiet_datasets()
    tok = load_tokenizer(world.tokenizer, require_mask=True)
    eos = tok.eos_token_id

    def encode(batch):
        # Each file ends with EOS so the flat stream marks document boundaries.
        ids = tok(batch["text"], add_special_tokens=False)["input_ids"]
        return {"input_ids": [x + [eos] for x in ids]}

    corpus = _load_corpus(world)
    tokens = DatasetDict({
        split: ds.map(encode, batched=True, batch_size=256, remove_columns=["text"])
        for split, ds in corpus.items()
    })
    tokens.save_to_disk(str(world.tokens))
    counts = {f"{split}_tokens": int(sum(len(x) for x in ds["input_ids"])) for split, ds in tokens.items()}
    bytes_ = sum(len(t) for t in corpus["train"]["text"])
    return {**counts, "train_bytes_per_token": round(bytes_ / max(1, counts["train_tokens"]), 3)}


def token_blocks(world: PocketWorld, split: str, seq_len: int) -> torch.Tensor:
    """The split's token stream cut into (N, seq_len) blocks."""
    from datasets import load_from_disk

    col = load_from_disk(str(world.tokens))[split].data.column("input_ids")
    flat = col.combine_chunks().flatten().to_numpy().astype(np.int64)
    n = len(flat) // seq_len
    if n == 0:
        raise DataError(f"{split} split has {len(flat)} tokens, fewer than one block of {seq_len}; "
                        "raise pocket.corpus.max_bytes or lower pocket.seq_len")
    return torch.from_numpy(flat[: n * seq_len]).view(n, seq_len)  # (N, seq_len)


def pocket_qwen2_config(spec: PocketSpec, m: ModelSpec, tok):
    """The Qwen2Config of a pocket model of shape `m` (not `models.hf`'s loader of existing configs)."""
    from transformers import Qwen2Config

    # Embedding rows rounded up past the tokenizer, as Qwen2.5 does: ids beyond the tokenizer exist
    # in the head, so the engine's vocabulary checks are exercised by the pocket models too.
    vocab = 64 * math.ceil(len(tok) / 64)
    return Qwen2Config(
        vocab_size=vocab, hidden_size=m.hidden_size, intermediate_size=m.intermediate_size,
        num_hidden_layers=m.num_layers, num_attention_heads=m.num_heads, num_key_value_heads=m.num_kv_heads,
        max_position_embeddings=spec.max_position_embeddings, rope_theta=spec.rope_theta,
        tie_word_embeddings=True, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        bos_token_id=tok.eos_token_id,
    )


def _model(spec: PocketSpec, m: ModelSpec, tok, init_from: Path | None):
    from transformers import Qwen2ForCausalLM

    config = pocket_qwen2_config(spec, m, tok)
    config._attn_implementation = "sdpa"
    if init_from is None:
        return Qwen2ForCausalLM(config)
    # Same shape (checked by PocketSpec): the AR weights carry over unchanged, the mask row included.
    return Qwen2ForCausalLM.from_pretrained(str(init_from), config=config).train()


def _train(spec: PocketSpec, world: PocketWorld, m: ModelSpec, objective, out: Path, seed: int, log=print,
           init_from: Path | None = None) -> dict:
    import lightning as L
    import transformers
    from torch.utils.data import DataLoader, TensorDataset

    from specdiff2.models.tokenizer import load_tokenizer
    from specdiff2.pocket.pretrain import PretrainModule, pretrain_logger, pretrain_optim, pretrain_trainer

    L.seed_everything(seed, verbose=False)
    transformers.utils.logging.disable_progress_bar()  # the stage prints its own progress lines
    tok = load_tokenizer(world.tokenizer, require_mask=True)
    model = _model(spec, m, tok, init_from)
    train = DataLoader(TensorDataset(token_blocks(world, "train", spec.seq_len)), batch_size=m.batch_size,
                       shuffle=True, drop_last=True, num_workers=spec.num_workers)
    val = DataLoader(TensorDataset(token_blocks(world, "validation", spec.seq_len)), batch_size=m.batch_size)
    out.mkdir(parents=True, exist_ok=True)
    optimizer, scheduler = pretrain_optim(m)
    module = PretrainModule(model, objective, optimizer, m.steps, scheduler, seed=seed, name=out.name,
                            progress=lambda line: log(f"[pocket:{spec.name}] {line}"))
    trainer = pretrain_trainer(spec, m)(logger=pretrain_logger(out))
    trainer.validate(module, val, verbose=False)  # the untrained loss: the first point of the curve
    trainer.fit(module, train, val)
    model.save_pretrained(str(out), safe_serialization=True)
    tok.save_pretrained(str(out))
    n_params = sum(p.numel() for p in model.parameters())
    first, final = module.val_history[0], module.val_history[-1]
    metrics = {"params": n_params, "steps": m.steps, "tokens_seen": m.steps * m.batch_size * spec.seq_len,
               "val_history": module.val_history, "final_val": final}
    (out / "train_metrics.json").write_text(json.dumps(metrics, indent=2))
    alpha = [final[f"val/alpha_{j}"] for j in range(1, spec.drafter.window + 1) if f"val/alpha_{j}" in final]
    return {"params": n_params, "final_val": final, "initial_val": first, "alpha": alpha}


def _ar_objective(spec: PocketSpec):
    from specdiff2.pocket.pretrain import ARObjective

    # α at the diffusion drafter's windows: the AR curves are the reference of its Figure-2 curve.
    return ARObjective(window=spec.drafter.window, windows_per_row=spec.drafter.windows_per_row)


def build_verifier_stage(spec: PocketSpec, world: PocketWorld, log=print) -> dict:
    return _train(spec, world, spec.verifier, _ar_objective(spec), world.verifier, spec.seed + 10, log)


def build_ar_drafter_stage(spec: PocketSpec, world: PocketWorld, log=print) -> dict:
    return _train(spec, world, spec.ar_drafter, _ar_objective(spec), world.ar_drafter, spec.seed + 20, log)


def build_drafter_stage(spec: PocketSpec, world: PocketWorld, log=print) -> dict:
    from specdiff2.models.tokenizer import load_tokenizer
    from specdiff2.pocket.pretrain import DenseDrafterObjective

    tok = load_tokenizer(world.tokenizer, require_mask=True)
    d = spec.drafter
    objective = DenseDrafterObjective(tok.mask_token_id, window=d.window, windows_per_row=d.windows_per_row,
                                      ar_weight=d.ar_weight, mdlm_weight=d.mdlm_weight,
                                      mdlm_windows_per_row=d.mdlm_windows_per_row, streak_weight=d.streak_weight)
    init_from = world.ar_drafter if d.init_from == "ar_drafter" else None
    info = _train(spec, world, d, objective, world.drafter, spec.seed + 30, log, init_from)
    # The Dream/DiffuCoder layout: same Qwen2 weights and field names, a shifted head implied by the model type,
    # mask id in the config; plus the prefix attention it was trained with (models.diffusion.prefix_attention).
    cfg_path = world.drafter / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.update(DREAM_ARCHITECTURE, mask_token_id=tok.mask_token_id, prefix_attention="causal")
    cfg_path.write_text(json.dumps(cfg, indent=2))
    return {**info, "init_from": d.init_from, "prefix_attention": "causal", "window": d.window,
            "windows_seen": d.steps * d.batch_size * d.windows_per_row}
