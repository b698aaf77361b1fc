"""`diffuspec`: DiffuSpec (arXiv 2510.02358), a training-free diffusion drafter with CPS and ADL.

In the paper's letters (k_t: the draft length of step t; its arguments here are gamma = k_1, gamma_min = k_min,
gamma_max = k_max, as γ names the draft length everywhere else in the framework). Per step t:
1. One drafter pass over prefix ‖ MASK×k_t gives the marginals q_1..q_k (raw drafter softmax).
2. Lattice (Eq. 7): per position the smallest top set whose mass reaches τ, at most M_max tokens. EOS is an
   ordinary candidate: kept when it is in that set, never forced in. The lattice ends after the first position
   whose top token is EOS. (The public reproduction only applies the τ cut once EOS is in the set, so sets
   grow to M_max everywhere else; here the cut always applies.)
3. CPS (Eq. 8): left-to-right beam search (width B) for the path maximising
   S(π) = Σ_i [λ log q_i(π_i) + (1 − λ) log p_proxy(π_i | x ∘ π_<i)], batched over beams × candidates.
   Every path takes one token per lattice position, so paths are compared at equal length. A path through an
   EOS before the lattice end keeps its later tokens, which are never committed (the engine stops at EOS).
   Freezing the score of EOS-finished beams instead, as the reproduction does, favours early EOS: each later
   term is ≤ 0.
4. ADL (Eq. 9–11): L^gen_t = min(s_t − 1, k_t) with s_t the 1-based first EOS of the raw argmax (k_t when
   none), L^acc_t = accepted draft tokens; EMAs with ρ starting at 0 and k_1 = gamma (paper: k_max);
   k_{t+1} = clip(⌊L̄^gen⌋ + δ·1[L̄^acc ≥ L̄^gen], k_min, k_max).
cps=False drafts the argmax of q (fixed-length argmax drafting when adl=False too); with adl=True or cps=True the
draft also ends at the lattice end (nothing after an EOS the drafter ranks first can be committed).

When it is lossless:
- Temperature 0 (greedy verification): always; the output is the verifier's greedy text for any draft.
- Temperature > 0 (rejection sampling, `acceptance=rejection`): lossless when each drafted token is drawn from
  the q handed to the rule, given the prefix and the earlier draft tokens.
  * cps=False: tokens are sampled from the warped q_j (the verifier's temperature / top-k / top-p), which
    depends on the prefix only: lossless.
  * cps=True, cps_sampling="sample" (default): CPS acts only at temperature 0; at T > 0 tokens are sampled
    from q as with cps=False: lossless.
  * cps=True, cps_sampling="point_mass": the CPS path is verified with q_j = one-hot(π_j). The path is a
    deterministic function of the prefix, so the point mass is exactly its law: lossless, but π_j is
    accepted with probability p_j(π_j) only.
  * Not offered: verifying the CPS path with the drafter marginals q_j(π_j) — the path is not a sample from
    q, so min(1, p/q) with that q biases the output (a token CPS always picks but q rates at 0.5 would be
    accepted with min(1, 2p)).
The lattice end depends on the prefix only, so cutting the draft there keeps every case above lossless.

At fixed shapes (the step is device code, captured as CUDA graphs): the verify layout is a chain of gamma_max
tokens (adl) or gamma (no adl), and the drafter pass always has that many MASKs. Under ADL the window rows see only the first
k_t of them (`DiffusionDrafter.window_logits_at(visible=k_t)`), which gives exactly the marginals of a k_t-window
pass. The lattice end n ≤ k_t and k_t itself are 0-d device tensors; the draft carries all gamma_max tokens, with
`limit` = min(n, the step's budget): tokens past it are drafted but never accepted. CPS keeps B beams over every
window position, and positions ≥ n leave the beams untouched, so the path < n is the search over lattice[:n].
Near max_new_tokens / the context the window stays k_t and only `limit` shrinks (the host version shortened the
window to the budget); ADL folds in every live step.
"""

from __future__ import annotations

import torch

from specdiff2.decode.diffuspec.adl import ADL
from specdiff2.decode.diffuspec.cps import beam_search, build_lattice, lattice_end
from specdiff2.decode.draft import Draft
from specdiff2.decode.strategies.base import EngineContext, OneDrafter, StepInput, pick_tokens
from specdiff2.errors import ConfigError
from specdiff2.models.drafters import DiffusionDrafter
from specdiff2.models.tokenizer import stop_ids

CPS_SAMPLING = ("sample", "point_mass")


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


class DiffuSpecStrategy(OneDrafter):
    """See the module docstring. The paper's letters → this class's arguments (γ is the draft length everywhere else
    in the framework): k_1 (or the fixed k) → gamma, k_min → gamma_min, k_max → gamma_max, δ → delta, ρ → rho,
    τ → tau, M_max → m_max, B → beam, λ → lam. Paper defaults: k_min 20, k_max 30, δ 10, ρ 0.5, M_max 15, τ 0.8,
    B 3, λ 0.5.

    drafter: the built diffusion drafter (`decode.loading.load_diffusion_drafter`).
    gamma: the draft length when adl=False, the first one (k_1) when adl=True.
    proxy: a built causal proxy (`diffuspec/proxies.py`); needed when cps=True and lam < 1. A host proxy (KenLM,
        the context n-gram) makes the strategy non-capturable (`capturable`): the engine then runs eager steps.
    cps_sampling: what cps=True does at temperature > 0 ("sample" or "point_mass"; see the module docstring).
    """

    name = "diffuspec"

    def __init__(self, drafter: DiffusionDrafter, gamma: int = 30, cps: bool = True, adl: bool = True,
                 tau: float = 0.8, m_max: int = 15, beam: int = 3, lam: float = 0.5, gamma_min: int = 20,
                 gamma_max: int = 30, delta: int = 10, rho: float = 0.5, proxy=None, cps_sampling: str = "sample"):
        s = "decode.strategy"
        _check(0 < tau <= 1, f"{s}.tau={tau} must be in (0, 1]; the paper uses 0.8")
        _check(m_max >= 1, f"{s}.m_max={m_max} must be >= 1; the paper uses 15")
        _check(beam >= 1, f"{s}.beam={beam} must be >= 1; the paper uses 3")
        _check(0 <= lam <= 1, f"{s}.lam={lam} must be in [0, 1]; the paper uses 0.5")
        _check(gamma >= 1, f"{s}.gamma={gamma} must be >= 1")
        _check(1 <= gamma_min <= gamma_max, f"{s}.gamma_min={gamma_min} and gamma_max={gamma_max} need "
               "1 <= gamma_min <= gamma_max")
        _check(not adl or gamma_min <= gamma <= gamma_max, f"{s}.gamma={gamma} (the first draft length under adl) "
               f"must lie in [gamma_min={gamma_min}, gamma_max={gamma_max}]")
        _check(delta >= 0, f"{s}.delta={delta} must be >= 0; the paper uses 10")
        _check(0 < rho <= 1, f"{s}.rho={rho} must be in (0, 1]; the paper uses 0.5")
        _check(cps_sampling in CPS_SAMPLING, f"{s}.cps_sampling={cps_sampling!r} is unknown; use one of {CPS_SAMPLING}")
        _check(not (cps and lam < 1 and proxy is None), f"{s}.cps=true with lam={lam} < 1 needs a causal proxy; "
               "set decode.models.proxy or lam=1")
        # The window L (MASKs per pass, draft tokens per step) is OneDrafter's γ: gamma_max under ADL, else gamma.
        super().__init__(drafter, gamma_max if adl else gamma)
        self.gamma_1, self.cps, self.adl, self.tau, self.m_max = gamma, cps, adl, tau, m_max
        self.beam, self.lam, self.proxy, self.cps_sampling = beam, lam, proxy, cps_sampling
        self.adl_args = (gamma, gamma_min, gamma_max, delta, rho)
        self.capturable = not self.uses_proxy or getattr(proxy, "capturable", True)

    @property
    def uses_proxy(self) -> bool:
        return self.cps and self.lam < 1

    def prepare(self, ctx: EngineContext) -> None:
        super().prepare(ctx)
        stops = sorted(stop_ids(ctx.verifier_tokenizer))  # EOS + generation_config.json's (<|im_end|>, ...)
        if (self.cps or self.adl) and not stops:
            raise ConfigError("diffuspec's lattice end and ADL need the verifier tokenizer's EOS token; set eos_token "
                              "or use decode.strategy.cps=false decode.strategy.adl=false")
        self.stop_ids = torch.tensor(stops or [-1], dtype=torch.long, device=ctx.device)  # (E,)
        self.controller = ADL(*self.adl_args, ctx.device) if self.adl else None
        self.fixed_gamma = torch.full((), self.gamma_1, dtype=torch.long, device=ctx.device)  # k_t without ADL
        self.l_gen = torch.zeros((), dtype=torch.long, device=ctx.device)  # this step's L^gen, for observe
        if self.uses_proxy:
            self.proxy.prepare(ctx, self.beam, self.gamma)

    def reset(self, prompt: torch.Tensor) -> None:
        super().reset(prompt)
        if self.uses_proxy:
            self.proxy.reset(prompt)
        if self.controller is not None:
            self.controller.reset()

    def draft(self, step: StepInput, sampling, generator) -> Draft:
        # k_t: a copy, so the step's statistics are not the length that observe() writes for the next step.
        k_t = self.controller.gamma.clone() if self.adl else self.fixed_gamma
        logits = self.window_logits(step, visible=k_t if self.adl else None)  # (L, V) L = γ
        n = self.fixed_gamma
        if self.cps or self.adl:  # both need where the drafter ends the text
            n, l_gen = lattice_end(logits, self.stop_ids, k_t)
            if self.adl:
                self.l_gen.copy_(l_gen)
        greedy = sampling.temperature == 0
        if self.cps and (greedy or self.cps_sampling == "point_mass"):
            tokens = self._search(logits, step, n)  # (L,)
            q_probs = None if greedy else self._point_masses(tokens, logits.shape[-1])  # (L, V)
        else:
            tokens, q_probs = pick_tokens(logits, sampling, generator)  # (L,), (L, V) | None
        limit = torch.minimum(n, step.budget)  # the lattice end, or less near max_new_tokens / the context
        return Draft(tokens, self.layout, q_probs, limit, {"draft_len": k_t, "lattice_len": n})

    @staticmethod
    def _point_masses(tokens: torch.Tensor, vocab: int) -> torch.Tensor:
        # scatter, not F.one_hot: one_hot checks the ids' range on the host (a sync).
        return torch.zeros(tokens.shape[0], vocab, device=tokens.device).scatter_(1, tokens[:, None], 1.0)  # (L, V)

    def _search(self, logits: torch.Tensor, step: StepInput, n: torch.Tensor) -> torch.Tensor:
        lattice = build_lattice(logits, self.tau, self.m_max)
        if self.uses_proxy:
            self.proxy.begin(step, lattice.ids)
        tokens, _, _ = beam_search(lattice, self.proxy.logprobs if self.uses_proxy else None, self.lam, self.beam, n)
        return tokens

    def observe(self, n_accepted: torch.Tensor, live: torch.Tensor) -> None:
        if self.controller is not None:
            self.controller.update(self.l_gen, n_accepted, live)

    def state_tensors(self) -> list[torch.Tensor]:
        return [*self.controller.tensors(), self.l_gen] if self.controller is not None else []
