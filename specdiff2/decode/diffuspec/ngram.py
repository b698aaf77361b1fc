"""Token-level n-gram language model held in tensors: the causal proxy of DiffuSpec's path search (CPS).

Smoothing: interpolated Kneser-Ney with one absolute discount D_k per order k (Chen & Goodman 1998,
"interpolated KN"). It is a proper distribution (sums to 1 over the vocabulary for every context), every
token keeps a non-zero probability (the recursion bottoms out in a uniform distribution), and it is what
KenLM estimates (modified KN, with three discounts per order instead of one), so it stands in for the paper's
3-gram KenLM without the package:

    P_k(w | h) = [max(c_k(h w) − D_k, 0) + D_k · N1+(h •) · P_{k−1}(w | h')] / Σ_v c_k(h v)   if h was seen,
                 P_{k−1}(w | h')                                                             otherwise,
    P_1(w)     = [max(c_1(w) − D_1, 0) + D_1 · N1+(•) / V] / Σ_v c_1(v),

with h' = h minus its first token. c_n are raw counts at the highest order; below it c_k(g) = N1+(• g), the
number of distinct tokens seen left of g (continuation counts: a token that only follows one context should
not get a large unigram probability). D_k = n1 / (n1 + 2 n2) (Ney's estimate from the numbers of k-grams
seen once and twice), clamped to [0.1, 1] so the back-off mass never vanishes.

Storage: per order k ≥ 2 the distinct k-grams as sorted int64 keys (base-V digits of the tokens, so
V^order must stay below 2^63: order ≤ 3 for a 152k Qwen vocabulary, ≤ 4 for the 8k pocket one) with their
counts, and the distinct contexts with Σ counts and N1+(h •); P_1 is a dense (V,) table. A query is a few
`searchsorted` gathers per order, batched over (B, M) on the model's device, with no host sync.

The model counts a token stream (a tensor); reading a token dataset or trajectory store into one is the data
layer's job (`specdiff2.data.token_streams`). Saved as safetensors (tensors) with JSON metadata: no pickle.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from specdiff2.errors import ConfigError, DataError, require

FORMAT = "specdiff2-ngram-v2"
_TABLE_KEYS = ("keys", "counts", "ctx_keys", "ctx_totals", "ctx_types")


def _window_keys(tokens: torch.Tensor, k: int, vocab: int) -> torch.Tensor:
    """Base-V key (N−k+1,) of every k-token window of the stream tokens (N,)."""
    n = tokens.shape[0] - k + 1
    key = torch.zeros(n, dtype=torch.long)
    for j in range(k):
        key = key * vocab + tokens[j: j + n]
    return key


def _encode(ids: torch.Tensor, vocab: int) -> torch.Tensor:
    """Base-V key (...,) of ids (..., k); −1 where any id is negative (an unknown/padded position)."""
    key = torch.zeros(ids.shape[:-1], dtype=torch.long, device=ids.device)
    for j in range(ids.shape[-1]):
        key = key * vocab + ids[..., j].clamp_min(0)
    return torch.where((ids < 0).any(-1), -1, key)


def _lookup(sorted_keys: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """Index of each query key in sorted_keys, −1 where absent; any query shape."""
    idx = torch.searchsorted(sorted_keys, query.contiguous()).clamp(max=sorted_keys.shape[0] - 1)
    return torch.where(sorted_keys[idx] == query, idx, -1)


def _discount(counts: torch.Tensor) -> float:
    n1, n2 = int((counts == 1).sum()), int((counts == 2).sum())
    d = n1 / (n1 + 2 * n2) if n1 + n2 > 0 else 0.5
    return min(1.0, max(0.1, d))


class NGramModel:
    """Interpolated Kneser-Ney n-gram over token ids [0, vocab); see the module docstring."""

    def __init__(self, order: int, vocab: int, discounts: list[float], unigram_probs: torch.Tensor,
                 tables: list[dict], meta: dict | None = None):
        self.order, self.vocab, self.discounts = order, vocab, discounts
        self.unigram_probs = unigram_probs  # (V,)
        self.tables = tables  # tables[k−2] holds order k, k = 2..order
        self.meta = meta or {}

    @classmethod
    def build(cls, tokens: torch.Tensor, order: int = 3, vocab: int | None = None, meta: dict | None = None):
        """Count a token stream (N,) (documents joined, each ending in EOS) on the host."""
        require(order >= 1, f"n-gram order={order} must be >= 1; use 3 (the paper's KenLM order)")
        tokens = torch.as_tensor(tokens, dtype=torch.long).flatten().cpu()
        require(tokens.numel() > order, f"n-gram corpus has {tokens.numel()} tokens, fewer than order+1="
                f"{order + 1}; point the proxy at a larger token source", DataError)
        lo, hi = int(tokens.min()), int(tokens.max())
        vocab = hi + 1 if vocab is None else vocab
        require(lo >= 0 and hi < vocab, f"n-gram corpus ids span [{lo}, {hi}], outside the vocabulary [0, {vocab}); "
                "build it from the verifier's tokenizer", DataError)
        require(vocab ** order < 2 ** 63, f"n-gram order {order} with vocabulary {vocab} overflows int64 keys "
                f"(needs V^order < 2^63); lower the order")
        # Raw counts at the top order; continuation counts N1+(• g) below: the distinct (k+1)-grams, first
        # token dropped, counted again.
        grams = {order: torch.unique(_window_keys(tokens, order, vocab), return_counts=True)}
        for k in range(order - 1, 0, -1):
            grams[k] = torch.unique(grams[k + 1][0] % vocab ** k, return_counts=True)
        discounts = [_discount(grams[k][1]) for k in range(1, order + 1)]
        uni_keys, uni_counts = grams[1]
        c1 = torch.zeros(vocab, dtype=torch.float64).index_add_(0, uni_keys, uni_counts.double())  # (V,)
        d1 = discounts[0]
        unigram = ((c1 - d1).clamp_min(0) + d1 * uni_keys.numel() / vocab) / c1.sum()  # (V,)
        tables = []
        for k in range(2, order + 1):
            keys, counts = grams[k]  # sorted by key, hence grouped by context (the high digits)
            ctx_keys, inverse, types = torch.unique_consecutive(keys // vocab, return_inverse=True,
                                                                return_counts=True)
            totals = torch.zeros(ctx_keys.numel(), dtype=torch.float64).index_add_(0, inverse, counts.double())
            tables.append({"keys": keys, "counts": counts.float(), "ctx_keys": ctx_keys,
                           "ctx_totals": totals.float(), "ctx_types": types.float()})
        meta = {**(meta or {}), "tokens": tokens.numel()}
        return cls(order, vocab, discounts, unigram.float(), tables, meta)

    def to(self, device) -> NGramModel:
        self.unigram_probs = self.unigram_probs.to(device)
        self.tables = [{k: v.to(device) for k, v in t.items()} for t in self.tables]
        return self

    @property
    def device(self) -> torch.device:
        return self.unigram_probs.device

    def probs(self, context_ids: torch.Tensor, next_ids: torch.Tensor) -> torch.Tensor:
        """P(next | context): context_ids (B, C) long, next_ids (B, M) long in [0, V) → (B, M) float32.

        Only the last order−1 context tokens matter; a shorter context, or −1 entries (unknown tokens, e.g.
        before the start of the text), back off to the orders that do not reach them.
        """
        n, vocab = self.order, self.vocab
        if context_ids.shape[1] < n - 1:  # left-pad: missing history is unknown, not token 0
            context_ids = torch.cat([context_ids.new_full((context_ids.shape[0], n - 1 - context_ids.shape[1]),
                                                          -1), context_ids], dim=1)
        p = self.unigram_probs[next_ids]  # (B, M)
        for k in range(2, n + 1):
            t, d = self.tables[k - 2], self.discounts[k - 1]
            h_key = _encode(context_ids[:, context_ids.shape[1] - (k - 1):], vocab)  # (B,)
            ci = _lookup(t["ctx_keys"], h_key)  # (B,)
            seen = ci >= 0
            total = torch.where(seen, t["ctx_totals"][ci.clamp_min(0)], 0.0)  # (B,)
            types = torch.where(seen, t["ctx_types"][ci.clamp_min(0)], 0.0)  # (B,)
            gi = _lookup(t["keys"], torch.where(seen[:, None], h_key[:, None] * vocab + next_ids, -1))  # (B, M)
            count = torch.where(gi >= 0, t["counts"][gi.clamp_min(0)], 0.0)  # (B, M)
            p_k = ((count - d).clamp_min(0) + d * types[:, None] * p) / total.clamp_min(1.0)[:, None]
            p = torch.where(seen[:, None], p_k, p)
        return p

    def logprob(self, context_ids: torch.Tensor, next_ids: torch.Tensor) -> torch.Tensor:
        """log P(next | context), (B, M); see `probs`."""
        return self.probs(context_ids, next_ids).log()

    # --- persistence --------------------------------------------------------------------------------------

    def save(self, path: str | Path) -> None:
        """safetensors to a temp file, then rename: a killed build never leaves a half-written model."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {"unigram_probs": self.unigram_probs.cpu().contiguous()}
        for k, table in enumerate(self.tables, start=2):
            tensors.update({f"order{k}.{name}": t.cpu().contiguous() for name, t in table.items()})
        header = {"format": FORMAT, "order": self.order, "vocab": self.vocab, "discounts": self.discounts,
                  "meta": self.meta}
        tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
        save_file(tensors, str(tmp), metadata={"ngram": json.dumps(header)})
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | Path, device="cpu") -> NGramModel:
        path = Path(path)
        require(path.is_file(), f"no n-gram model at {path}; build one (NGramModel.build) or fix the path", DataError)
        try:
            with safe_open(str(path), framework="pt") as f:
                state = json.loads(f.metadata()["ngram"])
                names = f.keys()  # a safe_open handle is not iterable
                tensors = {key: f.get_tensor(key) for key in names}
        except (SafetensorError, OSError, ValueError, KeyError, TypeError):  # foreign or truncated file
            raise DataError(f"{path} is not a readable n-gram model; delete it to rebuild") from None
        require(isinstance(state, dict) and state.get("format") == FORMAT,
                f"{path} is not a {FORMAT} file; delete it to rebuild", DataError)
        order = state["order"]
        tables = [{name: tensors.get(f"order{k}.{name}") for name in _TABLE_KEYS} for k in range(2, order + 1)]
        require("unigram_probs" in tensors and all(v is not None for t in tables for v in t.values()),
                f"{path} lacks tables; delete it", DataError)
        return cls(order, state["vocab"], state["discounts"], tensors["unigram_probs"], tables,
                   state["meta"]).to(device)

    @classmethod
    def build_cached(cls, path: str | Path | None, tokens_fn, order: int, vocab: int, meta: dict,
                     device="cpu", log=print) -> NGramModel:
        """Load `path` when it was built with the same order, vocabulary and `meta`; else build and save it."""
        want = {**meta, "order": order, "vocab": vocab}
        if path is not None and Path(path).is_file():
            model = cls.load(path, device)
            have = {k: model.meta.get(k) for k in meta} | {"order": model.order, "vocab": model.vocab}
            if have == want:
                return model
            log(f"[ngram] {path} was built from other settings; rebuilding")
        model = cls.build(tokens_fn(), order, vocab, meta)
        if path is not None:
            model.save(path)
        return model.to(device)


def export_kenlm_corpus(tokens: torch.Tensor, path: str | Path, eos_id: int) -> None:
    """Write a token stream as KenLM `lmplz` input: one document per line, ids as words, EOS dropped
    (lmplz adds </s> itself). Then: lmplz -o 3 --discount_fallback < corpus.txt > lm.arpa."""
    ids = tokens.tolist()
    with open(path, "w") as f:
        line: list[str] = []
        for t in ids:
            if t == eos_id:
                f.write(" ".join(line) + "\n")
                line = []
            else:
                line.append(str(t))
        if line:
            f.write(" ".join(line) + "\n")


def check_order(order: int) -> None:
    if order < 1:
        raise ConfigError(f"n-gram order={order} must be >= 1; set decode.models.proxy.order (paper: 3)")
