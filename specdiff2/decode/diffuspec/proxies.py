"""Causal proxies for DiffuSpec's path search: log p(next token | committed text ∘ partial path).

Every proxy arrives built (its model loaded: `decode.loading.load_ar_proxy`, `data.token_streams.load_ngram_proxy`,
`KenLMProxy(path, ctx)`) and has the same interface, driven by `cps.beam_search`:
    prepare(ctx, beam, window)          once, at engine start-up (device, B beams, L lattice positions, checks)
    reset(prompt)                       per prompt (P,) on the device
    begin(step, cand_ids)               per draft: the engine's StepInput (committed tokens seq[:length], length a
                                        0-d tensor, the step's kv_len) and the lattice candidates (L, M)
    logprobs(i, beam_idx, beam_tokens)  per lattice position i: the B beams' candidate indices and tokens (B, i)
                                        → (B, M) log p(cand_ids[i, m] | seq[:length] ∘ beam)
    capturable                          False when the proxy runs on the host: the engine then steps eagerly

NGramProxy        tensor n-gram (interpolated Kneser-Ney, `ngram.py`), on the device, no host sync. The paper's proxy.
ARProxy           the AR drafter's log-probs: a verifier-aware proxy (trained on the verifier's corpus, full
                  context instead of n−1 tokens); one forward of the B beam paths per lattice position, no host sync.
KenLMProxy        a KenLM ARPA/binary model through the `kenlm` package (host library); for fidelity with the paper.
ContextNGramProxy an n-gram counted on the host from the sequence being decoded.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from specdiff2.decode.diffuspec.ngram import NGramModel
from specdiff2.errors import ConfigError, DataError, require
from specdiff2.models.drafters import ARDrafter
from specdiff2.models.runner import DRAFT_SLOTS
from specdiff2.models.transformer import Transformer
from specdiff2.models.vocab import to_verifier_vocab


class NGramProxy:
    """n-gram proxy; with the lattice known up front, all its scores come from one batched query.

    For order n the score at position i depends on the beam only through the candidate indices it took at
    positions i−n+1..i−1, so `begin` scores every (position, M^(n−1) contexts, M next) triple at once
    (L·M^n lookups: 32·15³ ≈ 10^5 for a trigram) and the beam search only gathers. Past `table_limit` lookups
    (high orders) it queries per position instead. Both at fixed shapes on the device.
    """

    name = "ngram"
    capturable = True

    def __init__(self, model: NGramModel, table_limit: int = 1 << 22):
        self.model, self.order, self.table_limit = model, model.order, table_limit

    def prepare(self, ctx, beam: int, window: int) -> None:
        self.model.to(ctx.device)
        require(self.model.vocab >= ctx.verifier_rows, f"n-gram vocabulary {self.model.vocab} is smaller than the "
                f"verifier's {ctx.verifier_rows}; rebuild it for this verifier (delete its cache file)")

    def reset(self, prompt: torch.Tensor) -> None:
        pass

    def begin(self, step, cand_ids: torch.Tensor) -> None:
        n = self.order
        # The last n−1 committed tokens by device indices; −1 = before the text (backs off, unlike token 0).
        slots = step.length - (n - 1) + torch.arange(n - 1, device=cand_ids.device)  # (n−1,)
        self.tail = torch.where(slots >= 0, step.seq[slots.clamp_min(0)], -1)  # (n−1,)
        self.cand_ids = cand_ids  # (L, M)
        L, M = cand_ids.shape
        self.table = None
        if n == 1:
            self.table = self.model.logprob(cand_ids[:, :0], cand_ids).view(L, 1, M)  # no context: one row
        elif L * M ** n <= self.table_limit:
            self.table = self._lattice_table(cand_ids)
            self.weights = M ** torch.arange(n - 2, -1, -1, device=cand_ids.device)  # (n−1,) base-M digits

    def _lattice_table(self, cand_ids: torch.Tensor) -> torch.Tensor:
        """(L, M^(n−1), M): log p(cand[i, m] | the candidates (a_1..a_{n−1}) at positions i−n+1..i−1)."""
        n, (L, M) = self.order, cand_ids.shape
        # Row r of `rows` holds the tokens available at lattice position r−(n−1): the committed tail (the same
        # token for every index) before the lattice, the candidates inside it.
        rows = torch.cat([self.tail[:, None].expand(n - 1, M), cand_ids])  # (n−1+L, M)
        grid = [L, *([M] * (n - 1))]
        slots = []
        for j in range(n - 1):  # context slot j of position i is row i+j, indexed by digit a_j
            shape = [L] + [M if a == j else 1 for a in range(n - 1)]
            slots.append(rows[j: j + L].reshape(shape).expand(grid))
        context = torch.stack(slots, -1).reshape(-1, n - 1)  # (L·M^(n−1), n−1)
        nxt = cand_ids[:, None, :].expand(L, M ** (n - 1), M).reshape(-1, M)  # (L·M^(n−1), M)
        return self.model.logprob(context, nxt).view(L, M ** (n - 1), M)

    def logprobs(self, i: int, beam_idx: torch.Tensor, beam_tokens: torch.Tensor) -> torch.Tensor:
        n, W = self.order, beam_idx.shape[0]
        if self.table is not None:
            if n == 1:
                return self.table[i].expand(W, -1)
            # Digits before the lattice index constant rows: any value works, 0 is used.
            digits = torch.cat([beam_idx.new_zeros(W, n - 1), beam_idx], 1)[:, beam_idx.shape[1]:]  # (W, n−1)
            return self.table[i][(digits * self.weights).sum(1)]  # (W, M)
        context = torch.cat([self.tail[None].expand(W, -1), beam_tokens], 1)[:, -(n - 1):]  # (W, n−1)
        return self.model.logprob(context, self.cand_ids[i][None].expand(W, -1))


def beam_chains(beam: int, depth: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """B chains of `depth` tokens as one block (token b·depth + d): intra (B·d, B·d) bool (a token sees its own
    chain up to itself), depth (B·d,) of each token, and the block row of each chain's last token (B,)."""
    a = torch.arange(beam * depth, device=device)  # (B·d,)
    chain, d = a // depth, a % depth
    intra = (chain[:, None] == chain[None, :]) & (d[None, :] <= d[:, None])  # (B·d, B·d)
    return intra, d, torch.arange(beam, device=device) * depth + depth - 1


class ARProxy:
    """The AR drafter as causal proxy: log q_AR(x | full committed text ∘ beam), batched over beams.

    Runs like `models.drafters.ARDrafter` (it is one): batch-1 cache with draft slots past max_seq_len, the last
    L + 1 committed tokens re-encoded per draft (the most one step commits), forwards through `BlockRunner.direct`
    at fixed shapes. At lattice position i ≥ 1 the B beams' paths (i tokens each) are one block of B chains at
    the slots after the committed text (positions length + depth), each seeing the committed text and its own
    chain: re-encoding the short paths avoids reordering cache rows when beams swap parents. Tokens the AR
    drafter cannot propose get log-prob `floor` rather than −inf, so beams stay comparable.
    """

    name = "ar"
    capturable = True

    def __init__(self, model: Transformer, proposable: torch.Tensor, floor: float = -100.0,
                 draft_slots: int = DRAFT_SLOTS):
        self.model, self.proposable, self.floor, self.draft_slots = model.eval(), proposable, floor, draft_slots

    def prepare(self, ctx, beam: int, window: int) -> None:
        if beam * window > self.draft_slots:
            raise ConfigError(f"the AR proxy encodes beam={beam} paths of up to {window} tokens past the text, more "
                              f"than its {self.draft_slots} draft slots; lower decode.strategy.beam or the draft "
                              "length (decode.strategy.gamma_max, or decode.strategy.gamma without ADL)")
        self.beam, self.window = beam, window
        self.drafter = ARDrafter(self.model, self.proposable, ctx.max_seq_len, ctx.compile, ctx.kernels,
                                 self.draft_slots)
        self.blocks = [None] + [beam_chains(beam, i, ctx.device) for i in range(1, window)]  # per position i

    def reset(self, prompt: torch.Tensor) -> None:
        self.drafter.prefill(prompt)

    def _logprobs(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.log_softmax(-1).clamp_min(self.floor)  # (..., V)

    def begin(self, step, cand_ids: torch.Tensor) -> None:
        # Past the step's bucket by the beams' block: it lies at slots length .. length + B·(L−1) − 1.
        self.kv_len = min(self.drafter.cache_len, step.kv_len + self.beam * self.window)
        first = self.drafter.catch_up(step.seq, step.length, self.kv_len, self.window + 1)  # (V,) predicts position 0
        self.first = self._logprobs(first)[None]  # (1, V)
        self.length, self.cand_ids = step.length, cand_ids

    def logprobs(self, i: int, beam_idx: torch.Tensor, beam_tokens: torch.Tensor) -> torch.Tensor:
        W = beam_tokens.shape[0]
        if i == 0:
            lp = self.first.expand(W, -1)  # (W, V)
        else:
            intra, depth, last = self.blocks[i]
            logits = self.drafter.runner.direct(beam_tokens.flatten(), self.length, self.kv_len,
                                                self.length + depth, intra)  # (W·i, V_d)
            lp = self._logprobs(to_verifier_vocab(logits[last], self.proposable))  # (W, V)
        return lp.gather(1, self.cand_ids[i][None].expand(W, -1))  # (W, M)


class KenLMProxy:
    """A KenLM model over token-id words (built with lmplz from `ngram.export_kenlm_corpus` output).

    Our EOS is KenLM's </s>, and a context is cut after its last EOS and restarted at <s>, as lmplz saw it.
    A host library: reads the committed tail and the beams on the host (capturable = False: eager steps).
    """

    name = "kenlm"
    capturable = False

    def __init__(self, path: str, ctx):
        try:
            import kenlm
        except ImportError:
            raise ConfigError("the KenLM proxy needs the `kenlm` package, which is not installed; pip install "
                              "kenlm, or use the tensor n-gram proxy (decode/proxy@decode.models.proxy=ngram)"
                              ) from None
        require(Path(path).is_file(), f"no KenLM model at {path}; build one with lmplz (see "
                "ngram.export_kenlm_corpus) or fix decode.models.proxy.path", DataError)
        self.path, self.kenlm, self.lm = path, kenlm, kenlm.Model(path)
        self.eos, self.device = ctx.verifier_tokenizer.eos_token_id, ctx.device

    def prepare(self, ctx, beam: int, window: int) -> None:
        pass

    def reset(self, prompt: torch.Tensor) -> None:
        pass

    def _word(self, token: int) -> str:
        return "</s>" if token == self.eos else str(token)

    def _state(self, context: list[int]):
        state = self.kenlm.State()
        if self.eos in context:
            context = context[len(context) - context[::-1].index(self.eos):]
            self.lm.BeginSentenceWrite(state)
        else:
            self.lm.NullContextWrite(state)
        for token in (context[-(self.lm.order - 1):] if self.lm.order > 1 else []):
            nxt = self.kenlm.State()
            self.lm.BaseScore(state, self._word(token), nxt)
            state = nxt
        return state

    def begin(self, step, cand_ids: torch.Tensor) -> None:
        # Enough history to find a sentence start within the model's order (eager steps: reading length is fine).
        length = int(step.length)
        self.prefix = step.seq[max(0, length - self.lm.order): length].tolist()
        self.cands = cand_ids.tolist()

    def logprobs(self, i: int, beam_idx: torch.Tensor, beam_tokens: torch.Tensor) -> torch.Tensor:
        out = []
        for row in beam_tokens.tolist():
            state = self._state(self.prefix + row)
            out.append([self.lm.BaseScore(state, self._word(c), self.kenlm.State()) for c in self.cands[i]])
        return torch.tensor(out, device=self.device) * math.log(10)  # log10 → natural log


class ContextNGramProxy:
    """An n-gram counted from the sequence being decoded (prompt + verifier-committed tokens), rebuilt per draft.

    Needs no corpus and no extra model, so it works with any checkpoint pair (the default for real checkpoints):
    it favours paths that repeat the prompt's and the output's own n-grams (identifiers, code idioms), like
    prompt-lookup decoding. Counting happens on the host, a few hundred to a few thousand tokens per draft
    (capturable = False: eager steps). The order shrinks to fit a short context; with one committed token every
    candidate scores the same.
    """

    name = "context_ngram"
    capturable = False

    def __init__(self, order: int = 3):
        require(order >= 1, f"context n-gram order={order} must be >= 1; use 3", ConfigError)
        self.order = order

    def prepare(self, ctx, beam: int, window: int) -> None:
        self.vocab, self.device = ctx.verifier_rows, ctx.device

    def reset(self, prompt: torch.Tensor) -> None:
        pass

    def begin(self, step, cand_ids: torch.Tensor) -> None:
        length = int(step.length)  # eager steps only (capturable = False)
        order = min(self.order, length - 1)
        self.inner, self.width = None, cand_ids.shape[1]
        if order >= 1:
            model = NGramModel.build(step.seq[:length], order, self.vocab).to(self.device)
            self.inner = NGramProxy(model)
            self.inner.begin(step, cand_ids)

    def logprobs(self, i: int, beam_idx: torch.Tensor, beam_tokens: torch.Tensor) -> torch.Tensor:
        if self.inner is None:
            return torch.zeros(beam_idx.shape[0], self.width, device=self.device)  # (W, M) no information
        return self.inner.logprobs(i, beam_idx, beam_tokens)


def context_ngram_proxy(ctx, order: int = 3) -> ContextNGramProxy:
    """Loader form (called with the engine context like every `decode.models` entry)."""
    return ContextNGramProxy(order)


def pick_proxy(ctx, use_corpus: bool, corpus, context):
    """`corpus(ctx=ctx)` (the pocket corpus n-gram: pocket models share that corpus) when use_corpus, else
    `context(ctx=ctx)`; both are loaders built by Hydra, only the chosen one runs."""
    return (corpus if use_corpus else context)(ctx=ctx)
