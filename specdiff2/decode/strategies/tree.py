"""`tree`: a draft tree under a node budget, verified in one tree pass (DDTree, arXiv 2604.12989), from one of four
sources of candidate prefixes (`source`), all fixed before the verifier's p is seen:

- best_first (DDTree): one diffusion pass gives the window marginals q_1..q_γ; a node is a prefix (x_1..x_d) and the
  tree holds the `nodes` best prefixes, which is what best-first expansion under the budget reaches. Built on the
  device at fixed shapes: per depth the `nodes` best prefixes of the previous depth times each position's
  top-`branch` tokens, then the best `nodes` over all depths.
- ar_topk: the AR drafter (conf/ar_drafter) drafts its greedy chain of depth γ, one AR step per depth as sd_ar does;
  the top-`branch` tokens of its conditionals along that chain serve as the per-depth marginals of the same
  best-first expansion (DDTree's AR-drafter comparison row).
- samples: self-selection's k draws from the (warped) marginals of one diffusion pass, merged into one trie.
- cps: DiffuSpec's causal path search (decode/diffuspec/cps.py): the k beams over the τ lattice of one diffusion
  pass, scored by λ log q + (1 − λ) log p_proxy, merged into one trie.
For the two trie sources, twins share their nodes and the budget keeps the trie's `nodes` best nodes.

How nodes compete for the budget (`score`), both in the source's q:
- path: the path probability Π_{j≤d} q_j(x_j) (DDTree).
- streak: the node's expected streak Σ_m Π_{j≤m} q_j along its path continued by the argmax of each later position:
  Π q · C_d with C_d = 1 + M_{d+1} + M_{d+1}M_{d+2} + … (M_j = max q_j), so a node opening a confident continuation
  ranks higher. Under either score a child never outranks its parent (C_{d−1} ≥ M_d·C_d), so the kept set is
  prefix-closed; ties go to the shallower node.

The candidates are deterministic given the committed text (or drawn from q only, never from p), so temperature > 0
verifies them by `rules.sampled_match` (draw from p at each node, follow the matching child): lossless, no q, for any
candidate set. Temperature 0 takes the longest greedy path. The budget and depth are fixed before anything is drawn,
also near the context limit.
"""

from __future__ import annotations

import torch

from specdiff2.decode.diffuspec.cps import beam_paths, build_lattice
from specdiff2.decode.draft import Draft, Layout
from specdiff2.decode.sampling import warp_probs
from specdiff2.decode.strategies.base import EngineContext, OneDrafter, Stateless, StepInput
from specdiff2.decode.strategies.self_select import draft_stats, first_twins, sample_drafts
from specdiff2.errors import ConfigError
from specdiff2.models.drafters import ARDrafter

SOURCES = ("best_first", "ar_topk", "samples", "cps")
SCORES = ("path", "streak")


def log_streak_factor(logq: torch.Tensor) -> torch.Tensor:
    """(γ,) log C_d for log-marginals logq (γ, V): C_d = Σ_{m≥d} Π_{d<j≤m} M_j, M_j = max q_j (C_{γ−1} = 1)."""
    prefix = logq.max(-1).values.cumsum(0)  # (γ,) Σ_{j≤m} log M_j
    return torch.logcumsumexp(prefix.flip(0), 0).flip(0) - prefix


def keep_best(rank: torch.Tensor, tokens: torch.Tensor, parent: torch.Tensor, depth: torch.Tensor, nodes: int):
    """The `nodes` best entries of a candidate pool in topological order, as a tree in topological order.

    rank, tokens, parent (pool index, −1 = child of the root), depth (P,). A rank under which no child beats its parent
    keeps the set prefix-closed (a stable sort puts the earlier, shallower entry first on ties). An entry whose parent
    was not kept (only −inf padding, when the pool has fewer than `nodes` wanted entries) becomes a child of the root.
    Returns tokens, parents (node index), depth (N,) and the kept pool indices (N,).
    """
    chosen = rank.sort(descending=True, stable=True).indices[:nodes].sort().values  # (N,) topological
    where = torch.full_like(parent, -1).scatter(0, chosen, torch.arange(nodes, device=rank.device))  # pool -> node
    up = parent[chosen]  # (N,)
    node_parent = torch.where(up >= 0, where[up.clamp_min(0)], -1)
    node_depth = torch.where(node_parent >= 0, depth[chosen], 0)
    return tokens[chosen], node_parent, node_depth, chosen


def best_first_tree(logq: torch.Tensor, nodes: int, branch: int, score: str = "path"):
    """The `nodes` best prefixes of the window (logq (γ, V) log-marginals), in topological order.

    Returns tokens (N,), parents (N,) (−1 = child of the root), depth (N,) 0-based, path log-prob (N,).
    """
    gamma, vocab = logq.shape
    branch = min(branch, vocab)
    top_lq, top_id = logq.topk(branch, dim=-1)  # (γ, b) best first
    pad = logq.new_full((max(0, nodes - branch),), float("-inf"))
    first = torch.cat([top_lq[0], pad])[:nodes]  # (N,) depth-0 prefixes, padded with impossible ones
    scores, picks = [first], []
    for d in range(1, gamma):  # only the top-k is sequential: ids and parents are decoded once, after the loop
        cand = scores[-1][:, None] + top_lq[d][None]  # (N, b) every kept prefix times this depth's best tokens
        best = cand.flatten().topk(nodes)  # N best prefixes of length d+1
        scores.append(best.values)
        picks.append(best.indices)  # flat (kept prefix, branch) index
    dev = logq.device
    tokens = torch.cat([top_id[0], top_id.new_zeros(pad.shape)])[:nodes]  # (N,) depth 0
    parents = torch.full((nodes,), -1, dtype=torch.long, device=dev)  # pool index of each prefix's parent
    if picks:
        picks = torch.stack(picks)  # (γ-1, N)
        tokens = torch.cat([tokens, top_id[1:].gather(1, picks % branch).flatten()])  # (γ·N,)
        parents = torch.cat([parents, (torch.arange(gamma - 1, device=dev)[:, None] * nodes
                                       + picks // branch).flatten()])  # (γ·N,)
    pool = torch.stack(scores).flatten()  # (γ·N,) depth-major: parents before children
    depth = torch.arange(gamma, device=dev).repeat_interleave(nodes)  # (γ·N,)
    rank = pool + log_streak_factor(logq)[depth] if score == "streak" else pool
    tokens, parent, depth, chosen = keep_best(rank, tokens, parents, depth, nodes)
    return tokens, parent, depth, pool[chosen]


def paths_tree(paths: torch.Tensor, logq: torch.Tensor, nodes: int, score: str = "path",
               alive: torch.Tensor | None = None):
    """K token paths (K, γ) merged into one trie (twins share nodes), of which the `nodes` best nodes are kept.

    logq (γ, V): the log-marginals that rank nodes; alive (K,) bool (default all): paths that may add nodes.
    Returns tokens (N,), parents (N,), depth (N,), path log-prob (N,) as `best_first_tree` (−inf: padding, a twin
    of a kept node, when the trie has fewer than N nodes).
    """
    k, gamma = paths.shape
    twins = first_twins(paths)  # (K, γ) the first path sharing each prefix: its node is the canonical one
    d = torch.arange(gamma, device=paths.device)
    own = twins == torch.arange(k, device=paths.device)[:, None]  # (K, γ) canonical entries
    if alive is not None:
        own = own & alive[:, None]
    # Σ_{j≤d} log q_j(x_j) of the canonical entries; −inf for twins (and dead paths): chosen only as padding.
    path_lq = torch.where(own, logq.gather(1, paths.T).T.cumsum(1), float("-inf"))  # (K, γ)
    parent = torch.where(d[None] > 0, (d[None] - 1) * k + torch.roll(twins, 1, dims=1), -1)  # pool index (d, k)
    rank = path_lq + log_streak_factor(logq)[None] if score == "streak" else path_lq
    flat = lambda x: x.T.flatten()  # (K, γ) → depth-major pool (γ·K,): parents before children
    tokens, parents, depth, chosen = keep_best(flat(rank), flat(paths), flat(parent), flat(d.expand(k, -1)),
                                               min(nodes, k * gamma))
    return tokens, parents, depth, flat(path_lq)[chosen]


class TreeStrategy(OneDrafter, Stateless):
    """One drafter pass (or γ AR steps) → the `nodes` best candidate prefixes → one tree verify (module docstring).

    drafter: a diffusion drafter, or the AR drafter for source=ar_topk (conf/decode/tree.yaml loads the one the
    source needs). k: the paths merged into the trie (samples: draws; cps: beam width). tau, m_max, lam: CPS's
    lattice and path score (DiffuSpec's Eq. 7–8); proxy: the causal proxy when source=cps and lam < 1.
    """

    name = "tree"

    def __init__(self, drafter, gamma: int = 16, nodes: int = 32, branch: int = 4, source: str = "best_first",
                 score: str = "path", k: int = 4, drafter_temperature: float = 1.0, drafter_top_k: int = 0,
                 tau: float = 0.8, m_max: int = 15, lam: float = 0.5, proxy=None):
        super().__init__(drafter, gamma)
        s = "decode.strategy"
        if nodes < 1 or branch < 1 or k < 1 or m_max < 1:
            raise ConfigError(f"nodes={nodes}, branch={branch}, k={k} and m_max={m_max} must be >= 1; set {s}.nodes /"
                              f" {s}.branch / {s}.k / {s}.m_max")
        for key, value, allowed in (("source", source, SOURCES), ("score", score, SCORES)):
            if value not in allowed:
                raise ConfigError(f"{s}.{key}={value!r} is unknown; use one of {allowed}")
        if drafter_temperature < 0 or drafter_top_k < 0 or not 0 < tau <= 1 or not 0 <= lam <= 1:
            raise ConfigError(f"{s}: drafter_temperature={drafter_temperature} and drafter_top_k={drafter_top_k} "
                              f"must be >= 0, tau={tau} in (0, 1], lam={lam} in [0, 1]")
        if drafter is not None and (source == "ar_topk") != isinstance(drafter, ARDrafter):
            raise ConfigError(f"{s}.source={source} drafts with the {'AR' if source == 'ar_topk' else 'diffusion'} "
                              "drafter; build the strategy from conf/decode/tree.yaml, which loads the one it needs")
        self.nodes, self.branch, self.source, self.score, self.k = nodes, branch, source, score, k
        self.drafter_temperature, self.drafter_top_k = drafter_temperature, drafter_top_k
        self.tau, self.m_max, self.lam, self.proxy = tau, m_max, lam, proxy
        if self.uses_proxy and proxy is None:
            raise ConfigError(f"{s}.source=cps with lam={lam} < 1 needs a causal proxy; set decode.models.proxy "
                              f"or {s}.lam=1")
        self.capturable = not self.uses_proxy or getattr(proxy, "capturable", True)
        self.candidates = {"best_first": self._best_first, "ar_topk": self._ar_topk, "samples": self._samples,
                           "cps": self._cps}[source]

    @property
    def uses_proxy(self) -> bool:
        return self.source == "cps" and self.lam < 1

    def prepare(self, ctx: EngineContext) -> None:
        super().prepare(ctx)
        if self.uses_proxy:
            self.proxy.prepare(ctx, self.k, self.gamma)
        # The engine reads the sizes (nodes, depth) once; every step brings its own tree.
        size = self.nodes if self.source in ("best_first", "ar_topk") else min(self.nodes, self.k * self.gamma)
        self.layout = Layout.tree(torch.full((size,), -1, dtype=torch.long, device=ctx.device),
                                  torch.zeros(size, dtype=torch.long, device=ctx.device), self.gamma)

    def reset(self, prompt: torch.Tensor) -> None:
        super().reset(prompt)
        if self.uses_proxy:
            self.proxy.reset(prompt)

    def draft(self, step: StepInput, sampling, generator) -> Draft:
        tokens, parents, depth, path_lq, info = self.candidates(step, generator)
        info = {**info, "tree_depth": depth.max().float() + 1, "tree_path_mass": path_lq.exp().sum()}  # Σ_nodes Π q
        return Draft(tokens, Layout.tree(parents, depth, self.gamma), None, self.limit(step), info, fixed=True)

    # --- sources: (tokens, parents, depth, path log-prob) of the budgeted tree, and statistics ----------------

    def _best_first(self, step: StepInput, generator):
        logq = self.window_logits(step).float().log_softmax(-1)  # (γ, V) one pass over an all-MASK window
        return *best_first_tree(logq, self.nodes, self.branch, self.score), {}

    def _ar_topk(self, step: StepInput, generator):
        logits = self.drafter.catch_up(step.seq, step.length, step.kv_len, self.gamma + 1)  # (V,)
        rows = [logits]
        for i in range(self.gamma - 1):  # the greedy chain: each depth's conditional given the argmax before it
            logits = self.drafter.step_logits(logits.argmax(-1), step.length + i, step.kv_len)
            rows.append(logits)
        logq = torch.stack(rows).float().log_softmax(-1)  # (γ, V)
        return *best_first_tree(logq, self.nodes, self.branch, self.score), {}

    def _samples(self, step: StepInput, generator):
        q_probs = warp_probs(self.window_logits(step), self.drafter_temperature, self.drafter_top_k)  # (γ, V)
        drafts = sample_drafts(q_probs, self.k, generator)  # (K, γ)
        return *paths_tree(drafts, q_probs.log(), self.nodes, self.score), draft_stats(drafts)

    def _cps(self, step: StepInput, generator):
        logits = self.window_logits(step)  # (γ, V)
        lattice = build_lattice(logits, self.tau, self.m_max)
        if self.uses_proxy:
            self.proxy.begin(step, lattice.ids)
        idx, score = beam_paths(lattice, self.proxy.logprobs if self.uses_proxy else None, self.lam, self.k)
        beams = lattice.ids.T.gather(0, idx)  # (B, γ) best beam first
        logq = logits.float().log_softmax(-1)  # (γ, V)
        alive = score > float("-inf")  # (B,) beams that reached a full path
        return *paths_tree(beams, logq, self.nodes, self.score, alive), draft_stats(beams)
