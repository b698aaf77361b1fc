"""A small gpt-fast style inference transformer for Qwen2 / LLaMA / Mistral / Dream checkpoints.

Parameter names match Hugging Face exactly, so an HF state dict loads with strict=True. The KV cache
is static and position-indexed: a forward writes keys/values at explicit slots and attends over the
whole buffer through a boolean mask, so rolling back a rejected draft is just using a shorter length
next time. `forward` is a plain function of tensors (no `.item()`, no data-dependent branches) so it
can be torch.compile'd or captured in a CUDA graph.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from specdiff2.errors import ConfigError
from specdiff2.models.config import SUPPORTED_MODEL_TYPES, ModelArgs  # noqa: F401  (re-exported)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.kernels["rms_norm"](x, self.weight, self.eps)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    # Statistics in fp32, then back to the input dtype before the weight, exactly as HF does.
    x32 = x.float()
    x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x32.to(x.dtype)


def add_rms_norm(x: torch.Tensor, delta: torch.Tensor, weight: torch.Tensor, eps: float):
    """(x + delta, rms_norm(x + delta)): the residual add and the next norm in one kernel once compiled."""
    x = x + delta
    return x, rms_norm(x, weight, eps)


def rotary_pair(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
    return apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)


def silu_mul(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    return F.silu(gate) * up


# The elementwise pieces of a layer. A model's `kernels` table (per instance, never process-wide) holds these eager
# functions or, after `model.use_kernels("elementwise")`, torch.compile'd ones (one kernel each instead of 4–10):
# batch-1 decode then runs ~13 kernels per layer instead of ~35.
KERNELS = {"rms_norm": rms_norm, "add_rms_norm": add_rms_norm, "rotary_pair": rotary_pair, "silu_mul": silu_mul}
RMSNorm.kernels = KERNELS  # defined above the kernels it uses; the owning Transformer shares its own table
_COMPILED: dict[str, object] = {}  # the compiled twins, made once per process and shared: pure functions


def compiled_kernels() -> dict:
    """The elementwise kernels compiled with dynamic shapes (one compilation serves every bucket)."""
    for name, fn in KERNELS.items():
        if name not in _COMPILED:
            _COMPILED[name] = torch.compile(fn, dynamic=True, fullgraph=True)
    return {name: _COMPILED[name] for name in KERNELS}


def layer_residual_step(layer, x, delta, cos, sin, mask, cache_slots, kv_len):
    return layer.residual_step(x, delta, cos, sin, mask, cache_slots, kv_len)


def layer_forward(layer, x, cos, sin, mask, cache_slots, kv_len):
    return layer(x, cos, sin, mask, cache_slots, kv_len)


LAYER_FNS = {"residual_step": layer_residual_step, "forward": layer_forward}


def compiled_layer_fns() -> dict:
    """Regional compilation: one decoder layer compiled (dynamic shapes) and called by every layer of every model.
    The layer is an argument, its weights and cache graph inputs, so the compilation count does not grow with
    depth (2 graphs for 2 or 32 layers; the whole forward compiled took 5 s at 2 layers, 81 s at 32, on CPU)."""
    for name, fn in LAYER_FNS.items():
        if f"layer.{name}" not in _COMPILED:
            _COMPILED[f"layer.{name}"] = torch.compile(fn, dynamic=True, fullgraph=True)
    return {name: _COMPILED[f"layer.{name}"] for name in LAYER_FNS}


def rotary_cos_sin(position_ids: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype):
    """cos/sin tables for `position_ids` (B, L), each (B, 1, L, head_dim), computed in fp32 like HF.

    Recomputed per call (a few tiny ops) instead of a buffer so `.to(bfloat16)` can never degrade it.
    """
    exponent = torch.arange(0, head_dim, 2, device=position_ids.device, dtype=torch.float32) / head_dim
    inv_freq = 1.0 / theta**exponent  # (D/2,)
    freqs = position_ids.float()[..., None] * inv_freq  # (B, L, D/2)
    emb = torch.cat([freqs, freqs], dim=-1)  # (B, L, D): rotate_half pairs dim i with i + D/2
    return emb.cos().to(dtype)[:, None], emb.sin().to(dtype)[:, None]  # (B, 1, L, D)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (B, H, L, D) rotated with the HF Qwen2/LLaMA `rotate_half` convention."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)  # (B, H, L, D)
    return x * cos + rotated * sin


def gqa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """SDPA with grouped KV heads, without copying K/V to H heads.

    q (B, H, L, D), k/v (B, H_kv, S, D), mask (B|1, 1, L, S) bool. The G = H/H_kv query heads that
    share a KV head are folded into the query length, which matches HF `repeat_kv` (query head h
    uses KV head h // G) while reading the cache once: decode is bandwidth bound.
    """
    b, h, length, d = q.shape
    groups = h // k.shape[1]
    q = q.reshape(b, k.shape[1], groups * length, d)  # (B, H_kv, G*L, D), row g*L + l
    if mask.shape[-2] != groups * length:  # `forward_block` expands once per forward, not once per layer
        mask = mask.repeat(1, 1, groups, 1)  # (B|1, 1, G*L, S): row g*L + l uses query l's mask
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, H_kv, G*L, D)
    return out.reshape(b, h, length, d)


class Attention(nn.Module):
    kernels = KERNELS  # the owning Transformer shares its own table (`use_kernels`)

    def __init__(self, args: ModelArgs):
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = args.num_heads, args.num_kv_heads, args.head_dim
        q_dim, kv_dim = args.num_heads * args.head_dim, args.num_kv_heads * args.head_dim
        self.q_proj = nn.Linear(args.hidden_size, q_dim, bias=args.qkv_bias)
        self.k_proj = nn.Linear(args.hidden_size, kv_dim, bias=args.qkv_bias)
        self.v_proj = nn.Linear(args.hidden_size, kv_dim, bias=args.qkv_bias)
        self.o_proj = nn.Linear(q_dim, args.hidden_size, bias=args.o_bias)
        # Non-persistent: the cache never enters the state dict, so strict HF loading still works.
        self.register_buffer("k_cache", None, persistent=False)
        self.register_buffer("v_cache", None, persistent=False)
        self.qkv_weight, self.qkv_bias = None, None  # set by `fuse()`
        self.tp = None  # models/parallel.TensorParallel once sharded: heads above are then this rank's

    def forward(self, x, cos, sin, mask, cache_slots, kv_len: int | None = None):
        b, length, _ = x.shape
        heads, kv_heads, d = self.num_heads, self.num_kv_heads, self.head_dim
        q, k, v = self._project(x)
        q = q.view(b, length, heads, d).transpose(1, 2)  # (B, H, L, D)
        k = k.view(b, length, kv_heads, d).transpose(1, 2)  # (B, H_kv, L, D)
        v = v.view(b, length, kv_heads, d).transpose(1, 2)  # (B, H_kv, L, D)
        q, k = self.kernels["rotary_pair"](q, k, cos, sin)
        if cache_slots is not None:
            k, v = self._write_cache(k, v, cache_slots)  # (B, H_kv, S_max, D)
            if kv_len is not None:  # only the live (bucketed) part of the cache is read
                k, v = k[:, :, :kv_len], v[:, :, :kv_len]  # (B, H_kv, S_live, D)
        out = gqa_attention(q, k, v, mask)  # (B, H, L, D)
        out = self.o_proj(out.transpose(1, 2).reshape(b, length, -1))  # (B, L, hidden), a partial sum under TP
        return out if self.tp is None else self.tp.all_reduce(out)

    def _project(self, x):
        if self.qkv_weight is None:
            return self.q_proj(x), self.k_proj(x), self.v_proj(x)
        qkv = F.linear(x, self.qkv_weight, self.qkv_bias)  # (B, L, (H + 2 H_kv) D): one weight read
        q_dim, kv_dim = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        return qkv.split([q_dim, kv_dim, kv_dim], dim=-1)

    def fuse(self) -> None:
        """One q/k/v weight; the three projections become views of it, so memory does not grow."""
        self.qkv_weight, self.qkv_bias = _fuse_linears(self.q_proj, self.k_proj, self.v_proj)

    def _write_cache(self, k, v, cache_slots):
        """Store rotated k/v (B, H_kv, L, D) at `cache_slots` (L,); return this batch's cache views."""
        b = k.shape[0]
        k_cache, v_cache = self.k_cache[:b], self.v_cache[:b]  # (B, H_kv, S_max, D) views
        k_cache.index_copy_(2, cache_slots, k.to(k_cache.dtype))
        v_cache.index_copy_(2, cache_slots, v.to(v_cache.dtype))
        return k_cache, v_cache


class MLP(nn.Module):
    kernels = KERNELS  # the owning Transformer shares its own table (`use_kernels`)

    def __init__(self, args: ModelArgs):
        super().__init__()
        self.gate_proj = nn.Linear(args.hidden_size, args.intermediate_size, bias=False)
        self.up_proj = nn.Linear(args.hidden_size, args.intermediate_size, bias=False)
        self.down_proj = nn.Linear(args.intermediate_size, args.hidden_size, bias=False)

        self.gate_up_weight = None  # set by `fuse()`
        self.tp = None  # models/parallel.TensorParallel once sharded

    def forward(self, x):
        if self.gate_up_weight is None:
            out = self.down_proj(self.kernels["silu_mul"](self.gate_proj(x), self.up_proj(x)))
        else:
            gate, up = F.linear(x, self.gate_up_weight).chunk(2, dim=-1)  # (B, L, I) each, one weight read
            out = self.down_proj(self.kernels["silu_mul"](gate, up))
        return out if self.tp is None else self.tp.all_reduce(out)  # (B, L, hidden) summed over ranks

    def fuse(self) -> None:
        self.gate_up_weight, _ = _fuse_linears(self.gate_proj, self.up_proj)


def _fuse_linears(*linears: nn.Linear) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Concatenate the weights (and biases) of `linears` along the output dim; make each a view of the result.

    Plain tensors, not parameters: the state dict keeps the Hugging Face names through the views.
    """
    with torch.no_grad():
        weight = torch.cat([lin.weight for lin in linears])  # (sum out, in)
        bias = torch.cat([lin.bias for lin in linears]) if linears[0].bias is not None else None
        row = 0
        for lin in linears:
            n = lin.weight.shape[0]
            lin.weight = nn.Parameter(weight[row: row + n], requires_grad=False)
            if bias is not None:
                lin.bias = nn.Parameter(bias[row: row + n], requires_grad=False)
            row += n
    return weight, bias


class DecoderLayer(nn.Module):
    kernels = KERNELS  # the owning Transformer shares its own table (`use_kernels`)

    def __init__(self, args: ModelArgs):
        super().__init__()
        self.self_attn = Attention(args)
        self.mlp = MLP(args)
        self.input_layernorm = RMSNorm(args.hidden_size, args.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(args.hidden_size, args.rms_norm_eps)

    def forward(self, x, cos, sin, mask, cache_slots, kv_len: int | None = None):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, cache_slots, kv_len)
        return x + self.mlp(self.post_attention_layernorm(x))

    def residual_step(self, x, delta, cos, sin, mask, cache_slots, kv_len):
        """`forward` with the residual adds fused into the norms: returns (x + attention, MLP output)."""
        norm1, norm2 = self.input_layernorm, self.post_attention_layernorm
        if delta is None:
            normed = norm1(x)
        else:
            x, normed = self.kernels["add_rms_norm"](x, delta, norm1.weight, norm1.eps)
        attn = self.self_attn(normed, cos, sin, mask, cache_slots, kv_len)
        x, normed = self.kernels["add_rms_norm"](x, attn, norm2.weight, norm2.eps)
        return x, self.mlp(normed)


class Backbone(nn.Module):
    """The HF `model.` submodule: embeddings, decoder layers, final norm."""

    def __init__(self, args: ModelArgs):
        super().__init__()
        self.embed_tokens = nn.Embedding(args.vocab_size, args.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(args) for _ in range(args.num_layers))
        self.norm = RMSNorm(args.hidden_size, args.rms_norm_eps)


class Transformer(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.args = args
        self.tp = None  # models/parallel.TensorParallel when this is one rank's shard
        self.model = Backbone(args)
        self.lm_head = nn.Linear(args.hidden_size, args.vocab_size, bias=False)
        if args.tie_word_embeddings:
            self.tie_weights()
        self.use_kernels("eager")

    def use_kernels(self, kind: str) -> None:
        """eager | elementwise | layer: this model's elementwise kernels (every submodule reads the same table) and
        how each decoder layer is called (`layer`: one compiled layer shared by all, `compiled_layer_fns`)."""
        self.kernels = compiled_kernels() if kind == "elementwise" else dict(KERNELS)
        self.layer_fns = compiled_layer_fns() if kind == "layer" else dict(LAYER_FNS)
        for module in self.modules():
            if isinstance(module, (RMSNorm, Attention, MLP, DecoderLayer)):
                module.kernels = self.kernels

    def tie_weights(self) -> None:
        self.lm_head.weight = self.model.embed_tokens.weight

    @property
    def cache_len(self) -> int:
        """S_max of the allocated cache (0 before `setup_cache`)."""
        k_cache = self.model.layers[0].self_attn.k_cache
        return 0 if k_cache is None else k_cache.shape[2]

    def setup_cache(self, max_batch: int, max_seq_len: int, dtype=None, device=None,
                    check_window: int | None = None) -> None:
        """Allocate per-layer K/V buffers (max_batch, H_kv, max_seq_len, D), zero-filled.

        check_window: the context actually attended (decoding allocates draft slots past it that no committed
        token ever reads); defaults to max_seq_len."""
        window = self.args.sliding_window
        if window is not None and (check_window or max_seq_len) > window:
            raise ConfigError(
                f"max_seq_len {max_seq_len} exceeds the model's sliding_window {window}; use at most {window}"
            )
        weight = self.model.embed_tokens.weight
        dtype, device = dtype or weight.dtype, device or weight.device
        kv_heads = self.model.layers[0].self_attn.num_kv_heads  # this rank's heads under tensor parallelism
        shape = (max_batch, kv_heads, max_seq_len, self.args.head_dim)  # (B, H_kv, S_max, D)
        for layer in self.model.layers:
            layer.self_attn.k_cache = torch.zeros(shape, dtype=dtype, device=device)
            layer.self_attn.v_cache = torch.zeros(shape, dtype=dtype, device=device)
        # fp32 cos/sin per cache position, gathered by `forward_block` (the values HF computes per call).
        positions = torch.arange(max_seq_len, device=device)[None]  # (1, S_max)
        cos, sin = rotary_cos_sin(positions, self.args.head_dim, self.args.rope_theta, torch.float32)
        self._rope = (cos[0, 0], sin[0, 0])  # (S_max, D) each; plain attributes: `.to(bf16)` never touches them
        self._slots = torch.arange(max_seq_len, device=device)  # (S_max,)

    def fuse(self) -> None:
        """Inference only: one weight read for q/k/v and one for gate/up in every layer."""
        for layer in self.model.layers:
            layer.self_attn.fuse()
            layer.mlp.fuse()

    def forward_block(self, ids: torch.Tensor, start: torch.Tensor, kv_len: int,
                      positions: torch.Tensor | None = None, intra: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (n, V) of a block of n tokens written at cache slots start..start+n−1 (batch 1).

        Every token sees the slots < `start` (the cached prefix) and the block tokens that `intra` (n, n) bool
        allows: ancestors for a tree, a drafter window's relation, None = a chain (lower-triangular, positions
        start..start+n−1). `start` is a 0-d device tensor and `kv_len` (≥ start + n) a static bucket: attention
        reads only slots < kv_len, the mask is built once per forward, and nothing syncs with the host, so the
        call can be captured in a CUDA graph and replayed for any `start` with the same (n, kv_len).
        """
        n = ids.shape[0]
        slots = start + self._slots[:n]  # (n,) cache slots of the block
        if positions is None:
            positions = slots
        kv = self._slots[:kv_len]  # (S_live,)
        offset = kv[None, :] - slots[:, None]  # (n, S_live) slot minus the row's own slot
        if intra is None:
            mask = offset <= 0  # (n, S_live) prefix and the chain up to itself
        else:
            col = kv - start  # (S_live,) block index stored at each slot, if any
            in_block = (col >= 0) & (col < n)  # (S_live,)
            mask = (kv < start)[None, :] | (intra[:, col.clamp(0, n - 1)] & in_block[None, :])  # (n, S_live)
        groups = self.args.num_heads // self.args.num_kv_heads
        mask = mask.repeat(groups, 1)[None, None]  # (1, 1, G*n, S_live): expanded once, shared by every layer
        h = self.model.embed_tokens(ids[None])  # (1, n, hidden)
        cos = self._rope[0][positions].to(h.dtype)[None, None]  # (1, 1, n, D)
        sin = self._rope[1][positions].to(h.dtype)[None, None]  # (1, 1, n, D)
        delta = None  # each layer's MLP output, added inside the next layer's first norm (one kernel)
        step = self.layer_fns["residual_step"]
        for layer in self.model.layers:
            h, delta = step(layer, h, delta, cos, sin, mask, slots, kv_len)
        h, normed = self.kernels["add_rms_norm"](h, delta, self.model.norm.weight, self.model.norm.eps)
        return self.lm_head(normed)[0]  # (n, V)

    def copy_cache_slots(self, src: torch.Tensor, dst: torch.Tensor) -> None:
        """Move K/V entries at slots `src` (N,) to slots `dst` (N,) in every layer.

        The gather makes a new tensor before the write, so overlapping src/dst (compacting an accepted tree path
        towards the prefix) is safe. Advanced indexing, not index_select: along dim 2 of the cache the latter ran
        ~10 µs per call on an H200 (24 calls per step for a 12-layer verifier), the index kernels ~2 µs.
        """
        for layer in self.model.layers:
            for cache in (layer.self_attn.k_cache, layer.self_attn.v_cache):
                cache[:, :, dst] = cache[:, :, src]  # (B, H_kv, N, D) moved

    def hidden_states(self, input_ids, position_ids, attn_mask=None, cache_slots=None) -> torch.Tensor:
        """Final-norm hidden states (B, L, hidden); same arguments as `forward`."""
        if attn_mask is None:
            attn_mask = self._default_mask(input_ids.shape[1], cache_slots, input_ids.device)
        elif cache_slots is None:
            self._check_window(input_ids.shape[1])
        if cache_slots is not None and self.cache_len == 0:
            raise ConfigError(
                "cache_slots given but no KV cache; call setup_cache(max_batch, max_seq_len) first"
            )
        h = self.model.embed_tokens(input_ids)  # (B, L, hidden)
        cos, sin = rotary_cos_sin(position_ids, self.args.head_dim, self.args.rope_theta, h.dtype)
        for layer in self.model.layers:
            h = layer(h, cos, sin, attn_mask, cache_slots)
        return self.model.norm(h)

    def forward(self, input_ids, position_ids, attn_mask=None, cache_slots=None) -> torch.Tensor:
        """Logits (B, L, V).

        With `cache_slots` (L,): k/v are written at those slots and attention runs over the whole
        cache with `attn_mask` (B|1, 1, L, S_max); None means "each token sees slots <= its own".
        Without: plain attention over the L inputs with `attn_mask` (B|1, 1, L, L); None means
        causal (pass an all-True mask for a bidirectional diffusion drafter).
        """
        return self.lm_head(self.hidden_states(input_ids, position_ids, attn_mask, cache_slots))

    def _default_mask(self, length: int, cache_slots, device) -> torch.Tensor:
        if cache_slots is None:
            self._check_window(length)
            causal = torch.ones(length, length, dtype=torch.bool, device=device).tril()  # (L, L)
            return causal[None, None]  # (1, 1, L, L)
        slots = torch.arange(self.cache_len, device=device)  # (S_max,)
        return (slots[None, :] <= cache_slots[:, None])[None, None]  # (1, 1, L, S_max)

    def _check_window(self, length: int) -> None:
        window = self.args.sliding_window
        if window is not None and length > window:
            raise ConfigError(
                f"sequence of {length} tokens exceeds the model's sliding_window {window}; use shorter inputs"
            )
