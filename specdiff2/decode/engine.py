"""The one decode loop: prefill, draft (strategy plug-in), verify, accept (rule plug-in), commit, stats.

Strategies only draft; rules only accept. The loop owns the token buffer, the verifier cache and the stop
conditions, all as device state (`DecodeState`). A step is device code at fixed shapes: draft → verify → accept →
commit → stats reads and writes that state and nothing else, so on CUDA each step is two graph replays (draft;
verify + accept + commit) per live-cache bucket, launched without waiting on the GPU. The host learns about
stops asynchronously: after each step a copy of (done, length) goes to pinned memory, and the host reads it
`sync_lag` steps later (1 on CUDA: the GPU always has the next step queued; 0 on CPU, where reading is free). It
picks each step's bucket from an upper bound on the length (every step commits at most depth + 1 tokens),
tightened whenever a copy arrives. Steps launched after the stop are no-ops on the state.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from specdiff2.decode.acceptance.rules import AcceptanceRule, check_rule
from specdiff2.decode.draft import Draft, take
from specdiff2.decode.metrics import DecodeStats, PhaseTimer
from specdiff2.decode.rng import CounterRNG
from specdiff2.decode.sampling import SamplingParams
from specdiff2.decode.strategies.base import DraftStrategy, EngineContext, StepInput
from specdiff2.decode.verifier import Verifier
from specdiff2.errors import ConfigError
from specdiff2.models.tokenizer import stop_ids


@dataclass
class Generation:
    token_ids: list[int]
    stop_reason: str  # "eos", "max_new_tokens" or "context"
    metrics: dict
    steps: list[tuple[int, int]] = field(default_factory=list)  # (accepted drafts, committed) per verifier step


class DecodeState:
    """Everything a step reads and writes besides the model caches, as device tensors at fixed addresses."""

    def __init__(self, size: int, device: torch.device):
        z = lambda dtype=torch.long: torch.zeros((), dtype=dtype, device=device)  # noqa: E731
        self.seq = torch.zeros(size, dtype=torch.long, device=device)  # (S + draft slots,) committed tokens
        self.length, self.n_new, self.max_new, self.done = z(), z(), z(), z(torch.bool)
        self.flags = torch.zeros(3, dtype=torch.long, device=device)  # (done, length, n_new) for the host

    def tensors(self) -> list[torch.Tensor]:
        return [self.seq, self.length, self.n_new, self.max_new, self.done, self.flags]


class DecodeEngine:
    def __init__(self, verifier: Verifier, tokenizer, strategy: DraftStrategy, rule: AcceptanceRule,
                 sampling: SamplingParams, seed: int = 0, max_positions: int = 64, kv_step: int = 256):
        self.verifier, self.tokenizer, self.strategy, self.sampling = verifier, tokenizer, strategy, sampling
        check_rule(rule, sampling)  # a greedy-only rule at T > 0 is biased, however the pair was built
        self.rule = rule
        self.device = verifier.device
        self.seed, self.kv_step = seed, kv_step
        self.eos_ids = stop_ids(tokenizer)  # EOS + generation_config.json's (Qwen2.5-Instruct: <|im_end|>, <|endoftext|>)
        self.eos = torch.tensor(sorted(self.eos_ids) or [-1], dtype=torch.long, device=self.device)  # (E,)
        runner = verifier.runner
        strategy.prepare(EngineContext(tokenizer, verifier.vocab_rows, self.device, verifier.max_seq_len,
                                       runner.mode, runner.kernels))
        self.layout = strategy.layout
        self.depth = self.layout.max_depth
        if self.layout.nodes + self.depth + 2 > verifier.draft_slots:
            raise ConfigError(f"a draft of {self.layout.nodes} nodes needs more than the {verifier.draft_slots} "
                              "cache slots reserved past max_seq_len; lower gamma / k")
        cap = verifier.max_seq_len
        self.state = DecodeState(cap + verifier.draft_slots, self.device)
        self.stats = DecodeStats(max_positions, cap + 1, self.device)
        self.rng = CounterRNG(self.device, seed)
        # A strategy with a host library in its step (KenLM) says capturable = False: eager steps, same loop.
        self.graphs = {} if runner.mode == "graph" and getattr(strategy, "capturable", True) else None
        self.pool = torch.cuda.graph_pool_handle() if self.graphs is not None else None
        self.sync_lag = 1 if self.device.type == "cuda" else 0
        # sync_lag + 2 pinned slots for the stop flags: a slot is reused only after its event was waited on.
        self._ring = [(torch.cuda.Event(), torch.empty(3, dtype=torch.long, pin_memory=True))
                      for _ in range(self.sync_lag + 2)] if self.device.type == "cuda" else []

    # --- one step, device code only -------------------------------------------------------------------------

    def _draft_phase(self, kv_len: int) -> Draft:
        st, cap = self.state, self.verifier.max_seq_len
        # Drafts + the bonus may commit budget + 1 tokens, and must not pass max_new_tokens or the context.
        budget = torch.minimum(st.max_new - st.n_new, cap - st.length) - 1
        return self.strategy.draft(StepInput(st.seq, st.length, budget.clamp_min(0), kv_len), self.sampling, self.rng)

    def _verify_phase(self, draft: Draft, kv_len: int) -> None:
        st = self.state
        start = st.length - 1  # slot of the root: the last committed token
        logits = self.verifier.verify(take(st.seq, start), draft, start, kv_len)  # (N+1, V)
        winner, n, next_token = self.rule(draft, logits, self.sampling, self.rng)
        nodes = take(draft.paths, winner).clamp_min(0)  # (D,) the winning path's nodes
        j = torch.arange(self.depth + 1, device=self.device)  # (D+1,)
        new = torch.cat([draft.tokens[nodes], next_token.view(1)])  # (D+1,)
        new = torch.where(j == n, next_token, new)  # accepted tokens, then the correction / bonus
        is_eos = torch.isin(new, self.eos) & (j <= n)  # (D+1,)
        n_commit = torch.where(is_eos.any(), is_eos.long().argmax() + 1, n + 1)
        live = ~st.done
        self.verifier.commit(start, draft, nodes)
        st.seq.index_copy_(0, st.length + j, new)  # past the committed length: harmless after a stop
        n_commit = n_commit * live.long()
        st.length.add_(n_commit)
        st.n_new.add_(n_commit)
        st.done.copy_(st.done | is_eos.any() | (st.n_new >= st.max_new) | (st.length >= self.verifier.max_seq_len))
        st.flags.copy_(torch.stack([st.done.long(), st.length, st.n_new]))
        self.stats.record(draft.limit, n, n_commit, draft.info, live)
        self.strategy.observe(n, live)

    # --- the host loop ---------------------------------------------------------------------------------------

    def generate(self, prompt_ids: list[int], max_new_tokens: int, seed: int | None = None) -> Generation:
        n_prompt, cap = self._check(prompt_ids, max_new_tokens)
        st = self.state
        prompt = torch.tensor(prompt_ids, dtype=torch.long, device=self.device)
        st.seq[:n_prompt] = prompt
        st.length.fill_(n_prompt)
        st.n_new.zero_()
        st.max_new.fill_(max_new_tokens)
        st.done.zero_()
        self.stats.reset()
        self.rng.reseed(self.seed if seed is None else seed)
        timer = PhaseTimer(self.device)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        self.verifier.prefill(prompt[:-1])
        self.strategy.reset(prompt)
        self._loop(n_prompt, max_new_tokens, timer)
        length = int(st.length)  # the generation's one blocking read besides the flags
        out = st.seq[n_prompt:length].tolist()
        wall = time.perf_counter() - t0
        summary = self.stats.summary(wall, timer.totals())
        return Generation(out, self._stop_reason(out, max_new_tokens), summary, self.stats.steps_trace)

    def prepare(self, prompts: list[list[int]], max_new_tokens: int) -> int:
        """Untimed: what timed generations of `prompts` would otherwise do for the first time. Each prompt's
        prefill shapes (verifier and drafter graphs) through a 1-token generation, the shortest last, then the
        step graphs of every live-cache bucket those generations can reach. On an H200 one capture of a 48-layer
        verifier's step cost ~0.5 s, and a first-use capture inside a timed prompt showed up as its `other_s`.
        Returns the number of step graphs captured here."""
        for ids in sorted(prompts, key=len, reverse=True):
            self.generate(ids, 1)
        if self.graphs is None:
            return 0
        before = len(self.graphs)
        for kv_len in self.reachable_buckets([len(p) for p in prompts], max_new_tokens):
            if kv_len not in self.graphs:
                self._capture(kv_len)  # the warm-up step runs at the shortest prompt's state, then is undone
        return len(self.graphs) - before

    def reachable_buckets(self, prompt_lengths: list[int], max_new_tokens: int) -> list[int]:
        """Every live-cache bucket `_loop` may pick for these prompt lengths: its length bound runs from the
        prompt length to at most the final length plus one step's commit per step in flight."""
        lo = min(prompt_lengths)
        hi = max(prompt_lengths) + max_new_tokens + (self.sync_lag + 1) * (self.depth + 1)
        return sorted({self._bucket(bound) for bound in range(lo, hi + 1)})

    def _loop(self, n_prompt: int, max_new: int, timer: PhaseTimer) -> None:
        grow = self.depth + 1  # the most one step commits
        known, known_step, launched = n_prompt, -1, 0  # length after step `known_step` (−1: the prompt)
        pending = []  # (step, event, pinned flags) not read yet
        while launched < max_new:  # every live step commits ≥ 1 token: the request has stopped by then
            bound = known + (launched - 1 - known_step) * grow  # ≥ the length before this step
            self._run_step(self._bucket(bound), timer)
            pending.append(self._flags(launched))
            launched += 1
            while len(pending) > self.sync_lag:
                step, event, flags = pending.pop(0)
                if event is not None:
                    event.synchronize()
                done, known, _ = flags.tolist()
                known_step = step
                if done:
                    return

    def _bucket(self, bound: int) -> int:
        # Verify writes nodes past the root; a drafter window writes depth slots past the committed (or recent) ones.
        need = max(bound, self.depth + 1) + max(self.layout.nodes, self.depth) + 1
        return min(self.verifier.cache_len, -(-need // self.kv_step) * self.kv_step)

    def _flags(self, step: int):
        """Queue a copy of (done, length, n_new) to pinned memory; returns (step, event, buffer) to read later."""
        if self.device.type != "cuda":
            return step, None, self.state.flags
        event, pinned = self._ring[step % len(self._ring)]
        pinned.copy_(self.state.flags, non_blocking=True)
        event.record()
        return step, event, pinned

    def _run_step(self, kv_len: int, timer: PhaseTimer) -> None:
        """The two phases, each timed: replays of this bucket's graphs, or the same code run eagerly."""
        graph = None if self.graphs is None else self.graphs.get(kv_len) or self._capture(kv_len)
        t = timer.start("drafter")
        draft = graph[0].replay() if graph else self._draft_phase(kv_len)  # the graph's draft lives in graph[2]
        timer.stop(t)
        t = timer.start("verifier")
        if graph:
            graph[1].replay()
        else:
            self._verify_phase(draft, kv_len)
        timer.stop(t)

    def _mutable(self) -> list[torch.Tensor]:
        return [*self.state.tensors(), *self.stats.tensors(), self.rng.state, *self.strategy.state_tensors()]

    def _capture(self, kv_len: int):
        """Warm up (compiles, cuBLAS handles) on a side stream, undo its effect on the state, capture two graphs."""
        saved = [(t, t.clone()) for t in self._mutable()]
        n_extra = len(self.stats.extra)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            self._verify_phase(self._draft_phase(kv_len), kv_len)
        torch.cuda.current_stream().wait_stream(stream)
        for t, value in saved:
            t.copy_(value)
        for t in list(self.stats.extra.values())[n_extra:]:  # created by the warm-up step
            t.zero_()
        draft_graph, verify_graph = torch.cuda.CUDAGraph(), torch.cuda.CUDAGraph()
        with torch.cuda.graph(draft_graph, pool=self.pool):
            draft = self._draft_phase(kv_len)
        with torch.cuda.graph(verify_graph, pool=self.pool):
            self._verify_phase(draft, kv_len)
        self.graphs[kv_len] = (draft_graph, verify_graph, draft)
        return self.graphs[kv_len]

    def _check(self, prompt_ids: list[int], max_new_tokens: int) -> tuple[int, int]:
        if max_new_tokens <= 0:
            raise ConfigError(f"max_new_tokens={max_new_tokens} must be >= 1; set max_new_tokens")
        n_prompt, cap = len(prompt_ids), self.verifier.max_seq_len
        if n_prompt == 0:
            raise ConfigError("empty prompt: nothing to condition on; drop it from the prompt set")
        if n_prompt + 1 > cap:
            raise ConfigError(f"prompt of {n_prompt} tokens does not fit the context of {cap} tokens; "
                              "raise max_seq_len (up to the model's context) or shorten the prompt")
        return n_prompt, cap

    def _stop_reason(self, out: list[int], max_new: int) -> str:
        if out and out[-1] in self.eos_ids:
            return "eos"
        if len(out) >= max_new:
            return "max_new_tokens"
        return "context"
