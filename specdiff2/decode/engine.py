"""The one decode loop: prefill, draft (strategy plug-in), verify, accept (rule plug-in), commit, stats.

Strategies only draft; rules only accept. The loop owns the token buffer, the verifier cache and
the stop conditions. One host sync per step: the committed tokens come back to check EOS/limits.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from specdiff2.decode.metrics import DecodeStats, PhaseTimer
from specdiff2.decode.rules import AcceptanceRule
from specdiff2.decode.sampling import SamplingParams
from specdiff2.decode.strategies.base import DraftStrategy, EngineContext
from specdiff2.decode.verifier import Verifier
from specdiff2.errors import ConfigError
from specdiff2.models.tokenizer import stop_ids


@dataclass
class Generation:
    token_ids: list[int]
    stop_reason: str  # "eos", "max_new_tokens" or "context"
    metrics: dict
    steps: list[tuple[int, int]] = field(default_factory=list)  # (accepted drafts, committed) per verifier step


class DecodeEngine:
    def __init__(self, verifier: Verifier, tokenizer, strategy: DraftStrategy, rule: AcceptanceRule,
                 sampling: SamplingParams, seed: int = 0, max_positions: int = 64):
        self.verifier, self.tokenizer, self.strategy, self.sampling = verifier, tokenizer, strategy, sampling
        self.rule = rule  # built and checked against the temperature by conf/acceptance (decode/rules.py)
        self.device = verifier.device
        self.seed, self.max_positions = seed, max_positions
        self.eos_ids = stop_ids(tokenizer)  # EOS + generation_config.json's (Qwen2.5-Instruct: <|im_end|>, <|endoftext|>)
        strategy.prepare(EngineContext(tokenizer, verifier.vocab_rows, self.device, verifier.max_seq_len))

    def generate(self, prompt_ids: list[int], max_new_tokens: int, seed: int | None = None) -> Generation:
        if max_new_tokens <= 0:
            raise ConfigError(f"max_new_tokens={max_new_tokens} must be >= 1; set max_new_tokens")
        n_prompt, cap = len(prompt_ids), self.verifier.max_seq_len
        if n_prompt == 0:
            raise ConfigError("empty prompt: nothing to condition on; drop it from the prompt set")
        if n_prompt + 1 > cap:
            raise ConfigError(f"prompt of {n_prompt} tokens does not fit the context of {cap} tokens; "
                              "raise max_seq_len (up to the model's context) or shorten the prompt")
        gen = torch.Generator(device=self.device).manual_seed(self.seed if seed is None else seed)
        seq = torch.zeros(cap, dtype=torch.long, device=self.device)  # (S,) committed tokens
        seq[:n_prompt] = torch.tensor(prompt_ids, dtype=torch.long, device=self.device)
        timer, stats = PhaseTimer(self.device), DecodeStats(self.max_positions)
        self.strategy.reset()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        self.verifier.prefill(seq[: n_prompt - 1])
        length, out, stop = n_prompt, [], None
        while stop is None:
            committed, n_acc, depth, info = self._step(seq, length, max_new_tokens - len(out), gen, timer)
            committed = committed[: max_new_tokens - len(out)]
            stop = self._stop_reason(committed, len(out) + len(committed), max_new_tokens, length, cap)
            if stop == "eos":
                committed = committed[: next(i for i, t in enumerate(committed) if t in self.eos_ids) + 1]
            stats.record(depth, n_acc, len(committed), info)
            out.extend(committed)
            length += len(committed)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        wall = time.perf_counter() - t0
        return Generation(out, stop, stats.summary(wall, timer.totals()), stats.trace)

    def _step(self, seq, length, remaining, gen, timer):
        start = length - 1  # slot of the root: the last committed token
        room = self.verifier.max_seq_len - length  # cache slots left after the committed tokens
        # Drafts + the bonus may commit budget + 1 tokens, and must not pass max_new_tokens or the context.
        budget = min(remaining - 1, room - 1)
        t = timer.start("drafter")
        draft = self.strategy.draft(seq, length, budget, self.sampling, gen)
        if draft.size > room - 1:  # a tree writes every node: K drafts of depth d need up to K·d slots
            draft = draft.truncated(max(0, (room - 1) // draft.paths.shape[0]))
        timer.stop(t)
        t = timer.start("verifier")
        logits = self.verifier.verify(seq[start], draft, start)  # (N+1, V)
        timer.stop(t)
        path, next_token = self.rule(draft, logits, self.sampling, gen)
        if draft.is_chain:  # path is the 0-d accepted count
            values = torch.cat([path.view(1), draft.tokens, next_token.view(1)]).tolist()  # the one host sync
            n = values[0]
            committed = values[1: 1 + n] + values[-1:]
            accepted = draft.tokens[:n]
        else:
            accepted = draft.tokens[path]
            committed = accepted.tolist() + [int(next_token)]
            self.verifier.commit(start, path)
        room = min(len(committed), self.verifier.max_seq_len - length)
        seq[length: length + room] = torch.cat([accepted, next_token.view(1)])[:room]
        self.strategy.observe(len(committed) - 1)
        depth = int(draft.paths.shape[1]) if draft.size else 0
        return committed, len(committed) - 1, depth, draft.info

    def _stop_reason(self, committed, produced, max_new, length, cap) -> str | None:
        if any(t in self.eos_ids for t in committed):
            return "eos"
        if produced >= max_new:
            return "max_new_tokens"
        if length + len(committed) >= cap:
            return "context"
        return None
