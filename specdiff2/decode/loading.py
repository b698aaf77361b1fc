"""The one place that turns checkpoint refs into built decode objects: the verifier, the drafters, the AR proxy.

Strategies receive what these return (conf/decode/*.yaml `models`: partials called with the EngineContext);
they never load a checkpoint themselves.
"""

from __future__ import annotations

import torch

from specdiff2.decode.diffuspec.proxies import ARProxy
from specdiff2.decode.strategies.base import EngineContext
from specdiff2.decode.verifier import Verifier
from specdiff2.errors import ConfigError
from specdiff2.models.archs import arch_for
from specdiff2.models.checkpoint import load_transformer, read_config
from specdiff2.models.config import ModelArgs
from specdiff2.models.diffusion import prefix_attention, require_diffusion_family, resolve_mask_token_id
from specdiff2.models.drafters import ARDrafter, DiffusionDrafter
from specdiff2.models.dtypes import torch_dtype
from specdiff2.models.parallel import init_tensor_parallel, load_sharded_transformer
from specdiff2.models.refs import CheckpointRef
from specdiff2.models.runner import resolve_execution
from specdiff2.models.tokenizer import load_tokenizer
from specdiff2.models.transformer import Transformer
from specdiff2.models.vocab import proposable_ids


def load_verifier(ref: CheckpointRef, device: torch.device, max_seq_len: int, compile: str = "auto",
                  kernels: str = "auto") -> tuple[Verifier, object]:
    """The verifier adapter (static cache of max_seq_len slots) and its tokenizer.

    compile/kernels: how every forward of the engine runs (models/runner.py); `auto` = CUDA graphs with a
    compiled block on CUDA, eager on CPU. The drafters follow the verifier (`engine_context`).
    """
    path = ref.resolve()
    tp = init_tensor_parallel(torch.device(device).type)  # launched by torchrun: this rank's shard only
    if tp is None:
        model, _ = load_transformer(path, dtype=torch_dtype(ref.dtype), device=device)
    else:
        model, _ = load_sharded_transformer(path, tp, torch_dtype(ref.dtype), torch.device(device))
    mode, kernels = resolve_execution(compile, kernels, device)
    return Verifier(model, max_seq_len, mode, kernels), load_tokenizer(path)


def check_vocabularies(verifier: CheckpointRef, drafters: list[CheckpointRef]) -> None:
    """Before any weights load: every real drafter checkpoint shares the verifier's vocabulary (tokenizers and
    config.json only), so a mismatched pair (LLaDA with a Qwen verifier) fails in one line in seconds, not after
    minutes of loading a 72B verifier. Pocket models (one shared tokenizer, maybe not built yet) are skipped."""
    if verifier.pocket:
        return
    v_path = verifier.resolve()
    v_tok, v_rows = load_tokenizer(v_path), ModelArgs.from_hf_config(read_config(v_path)).vocab_size
    for ref in drafters:
        if not ref.pocket:
            path = ref.resolve()
            proposable_ids(v_tok, load_tokenizer(path), v_rows, ModelArgs.from_hf_config(read_config(path)).vocab_size)


def engine_context(verifier: Verifier, tokenizer) -> EngineContext:
    runner = verifier.runner
    return EngineContext(tokenizer, verifier.vocab_rows, verifier.device, verifier.max_seq_len, runner.mode,
                         runner.kernels)


def load_drafter_model(ref: CheckpointRef, ctx: EngineContext,
                       diffusion: bool) -> tuple[Transformer, dict, torch.Tensor, int | None]:
    """A drafter checkpoint: (model, config.json dict, proposable ids (V_verifier,) bool, mask id (diffusion))."""
    path = ref.resolve()
    if diffusion:  # before the weights load: config.json names the family
        require_diffusion_family(read_config(path), str(path))
    model, config = load_transformer(path, dtype=torch_dtype(ref.dtype), device=ctx.device)
    tokenizer = load_tokenizer(path)
    mask_id = resolve_mask_token_id(ref.mask_token_id, config, tokenizer, model.args.vocab_size,
                                    str(path)) if diffusion else None
    proposable = proposable_ids(ctx.verifier_tokenizer, tokenizer, ctx.verifier_rows, model.args.vocab_size,
                                ctx.device, mask_id)
    if model.args.max_position_embeddings < ctx.max_seq_len:
        raise ConfigError(f"drafter context {model.args.max_position_embeddings} < max_seq_len "
                          f"{ctx.max_seq_len}; lower max_seq_len")
    return model, config, proposable, mask_id


def load_diffusion_drafter(ref: CheckpointRef, ctx: EngineContext, cache: str = "auto") -> DiffusionDrafter:
    """The masked-diffusion drafter of `ref`, mapped to the verifier vocabulary (logit shift: drafter.logit_shift,
    else the family's: Dream/DiffuCoder shifted, LLaDA not).

    cache: exact (recompute the prefix every pass) | prefix | auto; see `DiffusionDrafter`. Prefix attention
    (causal | bidirectional) is a property of the checkpoint, read from its config.json.
    """
    model, config, proposable, mask_id = load_drafter_model(ref, ctx, diffusion=True)
    shift = ref.logit_shift if ref.logit_shift is not None else arch_for(config).logit_shift
    return DiffusionDrafter(model, mask_id, shift, proposable, ctx.max_seq_len, cache,
                            prefix_attention(config), ctx.compile, ctx.kernels)


def load_ar_drafter(ref: CheckpointRef, ctx: EngineContext) -> ARDrafter:
    model, _, proposable, _ = load_drafter_model(ref, ctx, diffusion=False)
    return ARDrafter(model, proposable, ctx.max_seq_len, ctx.compile, ctx.kernels)


def load_drafter(ref: CheckpointRef, ctx: EngineContext, cache: str = "auto") -> DiffusionDrafter | ARDrafter:
    """The drafter adapter the ref's role names: the AR drafter (role ar_drafter) or a diffusion drafter (decode=tree
    drafts with either, by its source)."""
    return load_ar_drafter(ref, ctx) if ref.role == "ar_drafter" else load_diffusion_drafter(ref, ctx, cache)


def load_ar_proxy(ref: CheckpointRef, ctx: EngineContext, floor: float = -100.0) -> ARProxy:
    """DiffuSpec's verifier-aware causal proxy: the AR drafter's log-probs (see `ARProxy`)."""
    model, _, proposable, _ = load_drafter_model(ref, ctx, diffusion=False)
    return ARProxy(model, proposable, floor)
