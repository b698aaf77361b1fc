"""`tree` and deterministic candidates, the pieces: the best-first tree is the N most probable prefixes (or the N best
expected streaks), the trie of K paths keeps its N best nodes (brute force), `sampled_match` has exactly the verifier's
law (enumeration). Every source on the engine (greedy, context limit, χ², no host sync): tests/test_tree_sources.py."""

import itertools
import math

import pytest
import torch

from specdiff2.decode.acceptance.rules import auto_rule, greedy_tree
from specdiff2.decode.draft import Draft, Layout
from specdiff2.decode.engine import DecodeEngine
from specdiff2.decode.loading import engine_context, load_diffusion_drafter, load_verifier
from specdiff2.decode.sampling import SamplingParams
from specdiff2.decode.strategies.ar import Autoregressive
from specdiff2.decode.strategies.specdiff import SpecDiffStrategy
from specdiff2.decode.strategies.tree import TreeStrategy, best_first_tree, paths_tree
from specdiff2.errors import SpecDiffError
from specdiff2.models.masks import tree_ancestors
from specdiff2.models.refs import CheckpointRef

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = torch.device("cpu")
TEXTS = ["def add(a, b):\n    return", "import os\nimport sys\n\n", "class Foo:\n    def __init__(self"]


@pytest.fixture(scope="module")
def world(tiny_world):
    verifier, tok = load_verifier(CheckpointRef("verifier", str(tiny_world.verifier)), CPU, 256)
    prompts = [tok(t, add_special_tokens=False)["input_ids"] for t in TEXTS]
    return tiny_world, verifier, tok, prompts


def drafter(world, name="causal_drafter"):
    return load_diffusion_drafter(CheckpointRef("drafter", str(getattr(world[0], name)), logit_shift=True),
                                  engine_context(world[1], world[2]))


@pytest.fixture(scope="module")
def greedy_reference(world):
    ar = DecodeEngine(world[1], world[2], Autoregressive(), auto_rule(SamplingParams()), SamplingParams())
    return {tuple(p): ar.generate(p, 24).token_ids for p in world[3]}


def prefixes(tokens, parents):
    out = []
    for k in range(len(tokens)):
        node, seq = k, []
        while node >= 0:
            seq.append(int(tokens[node]))
            node = int(parents[node])
        out.append(tuple(reversed(seq)))
    return out


def every_prefix(gamma: int, vocab: int):
    return [p for d in range(1, gamma + 1) for p in itertools.product(range(vocab), repeat=d)]


def streak(logq: torch.Tensor, prefix: tuple) -> float:
    """Brute force: Σ_m Π_{j≤m} q_j(x_j) along `prefix` continued by each later position's argmax, from its end."""
    x = list(prefix) + [int(logq[j].argmax()) for j in range(len(prefix), logq.shape[0])]
    lq = [float(logq[j, t]) for j, t in enumerate(x)]
    return sum(math.exp(sum(lq[: m + 1])) for m in range(len(prefix) - 1, len(x)))


def ranked(logq: torch.Tensor, prefix: tuple, score: str) -> float:
    return streak(logq, prefix) if score == "streak" else sum(float(logq[j, t]) for j, t in enumerate(prefix))


def test_twins_share_their_node_in_the_trie_of_paths():
    drafts = torch.tensor([[5, 6, 7], [5, 6, 8], [5, 9, 7], [5, 6, 7]])  # (K, γ)
    logq = torch.zeros(3, 10).log_softmax(-1)
    tokens, parents, _, score = paths_tree(drafts, logq, 12)
    real = score > float("-inf")
    pre = prefixes(tokens, parents)
    want = {tuple(d[: j + 1]) for d in drafts.tolist() for j in range(3)}
    assert sorted(p for p, r in zip(pre, real.tolist()) if r) == sorted(want)  # one node per distinct prefix
    assert int(real.sum()) == 6 and len(pre) == 12 and set(pre) == set(want)  # the rest: padding twins
    tokens, parents, _, score = paths_tree(drafts, logq, 12, alive=torch.tensor([True, True, False, True]))
    real = [p for p, lq in zip(prefixes(tokens, parents), score.tolist()) if lq > float("-inf")]
    assert sorted(real) == sorted(want - {(5, 9), (5, 9, 7)})  # a dead path (a CPS beam never live) adds no node


@pytest.mark.parametrize("score", ["path", "streak"])
def test_the_trie_of_paths_keeps_its_best_nodes(score):
    """Brute force: K random paths over V=3 (twins are common) merged and cut to N nodes hold the N best distinct
    prefixes by path probability (score=streak: by the brute-force streak), parents first; all of them when fewer."""
    g = torch.Generator().manual_seed(1)
    for _ in range(60):
        logq = torch.randn(3, 3, generator=g, dtype=torch.float64).log_softmax(-1)  # (γ, V)
        paths = torch.randint(0, 3, (5, 3), generator=g)  # (K, γ)
        n = int(torch.randint(1, 16, (1,), generator=g))
        tokens, parents, depth, path_lq = paths_tree(paths, logq, n, score)
        distinct = {tuple(p[: j + 1]) for p in paths.tolist() for j in range(3)}
        want = sorted(distinct, key=lambda p, lq=logq: ranked(lq, p, score), reverse=True)[: min(n, 15)]
        pre = prefixes(tokens, parents)
        real = [p for p, lq in zip(pre, path_lq.tolist()) if lq > float("-inf")]
        assert sorted(real) == sorted(want) and len(pre) == min(n, 15)
        assert (parents < torch.arange(len(pre))).all() and all(len(p) == d + 1 for p, d in zip(pre, depth.tolist()))
        for p, lq in zip(pre, path_lq.tolist()):
            if lq > float("-inf"):
                assert lq == pytest.approx(sum(float(logq[j, t]) for j, t in enumerate(p)))


def test_the_streak_score_keeps_the_best_expected_streaks():
    """score=streak: the tree holds the N prefixes with the highest Σ_m Π q along the prefix and the argmax after it
    (brute force over every prefix of a γ=3, V=4 window), and is prefix-closed."""
    g = torch.Generator().manual_seed(2)
    for _ in range(60):
        logq = torch.randn(3, 4, generator=g, dtype=torch.float64).log_softmax(-1)  # (γ, V)
        n = int(torch.randint(1, 20, (1,), generator=g))
        tokens, parents, _, _ = best_first_tree(logq, n, 4, "streak")
        want = sorted(every_prefix(3, 4), key=lambda p: streak(logq, p), reverse=True)[:n]
        pre = prefixes(tokens, parents)
        assert sorted(pre) == sorted(want) and (parents < torch.arange(n)).all()


def test_the_tree_is_the_most_probable_prefixes():
    """Brute force over every prefix of a γ=3, V=4 window: the tree holds the N best path log-probabilities,
    parents before children; its layout equals the ancestor closure."""
    g = torch.Generator().manual_seed(0)
    for _ in range(60):
        logq = torch.randn(3, 4, generator=g, dtype=torch.float64).log_softmax(-1)  # (γ, V)
        n = int(torch.randint(1, 20, (1,), generator=g))
        tokens, parents, depth, score = best_first_tree(logq, n, 4)
        every = sorted((sum(float(logq[j, t]) for j, t in enumerate(p)) for p in every_prefix(3, 4)), reverse=True)
        torch.testing.assert_close(score.sort(descending=True).values, torch.tensor(every[:n], dtype=torch.float64))
        pre = prefixes(tokens, parents)
        assert len(set(pre)) == n and all(len(p) == d + 1 for p, d in zip(pre, depth.tolist()))
        assert (parents < torch.arange(n)).all()  # topological order
        layout = Layout.tree(parents, depth, 3)
        full = torch.cat([parents.new_full((1,), -1), torch.where(parents >= 0, parents + 1, 0)])  # root = row 0
        assert torch.equal(layout.intra, tree_ancestors(full))  # the walk equals the ancestor closure


V = 3
P = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3], [0.3, 0.3, 0.4], [0.2, 0.2, 0.6]], dtype=torch.float64)


def test_sampled_match_has_the_verifier_law_for_any_fixed_tree():
    """Enumerate every draw at every row of a fixed tree: the law of the first two committed tokens is
    p(x1)·p(x2|x1) exactly (the next step draws x2 when only one token was committed)."""
    def row_p(prefix):  # the verifier's p after the committed prefix (a deterministic function of it)
        return P[(sum(prefix) + len(prefix)) % 4]

    for tokens, parents in [([0, 1, 2, 0], [-1, -1, 0, 0]), ([1, 1, 0], [-1, 0, 1]), ([2, 0, 1], [-1, -1, -1])]:
        tokens, parents = torch.tensor(tokens), torch.tensor(parents)
        depth = torch.tensor([len(p) - 1 for p in prefixes(tokens, parents)])
        draft = Draft(tokens, Layout.tree(parents, depth, 3), None, torch.tensor(3), fixed=True)
        rows = [()] + prefixes(tokens, parents)  # the prefix each verified row conditions on
        law = torch.zeros(V, V, dtype=torch.float64)
        for draws in itertools.product(range(V), repeat=len(rows)):
            weight = torch.prod(torch.stack([row_p(r)[x] for r, x in zip(rows, draws)]))
            winner, n, nxt = greedy_tree(draft, torch.tensor(draws))
            out = [int(t) for t in tokens[draft.paths[int(winner), : int(n)]]] + [int(nxt)]
            if len(out) == 1:
                law[out[0]] += weight * row_p(tuple(out))
            else:
                law[out[0], out[1]] += weight
        want = torch.stack([row_p(())[a] * row_p((a,)) for a in range(V)])
        torch.testing.assert_close(law, want, rtol=0, atol=1e-12)


def test_bad_inputs_give_one_line_errors(world):
    for fn, needle in [(lambda: TreeStrategy(None, nodes=0), "nodes=0"), (lambda: TreeStrategy(None, gamma=0), "gamma"),
                       (lambda: TreeStrategy(None, source="beam"), "source='beam'"),
                       (lambda: TreeStrategy(None, score="best"), "score='best'"),
                       (lambda: TreeStrategy(None, tau=0.0), "tau=0.0"),
                       (lambda: TreeStrategy(None, source="cps"), "needs a causal proxy"),
                       (lambda: TreeStrategy(drafter(world), source="ar_topk"), "AR drafter"),
                       (lambda: SpecDiffStrategy(None, proposal="best"), "proposal")]:
        with pytest.raises(SpecDiffError) as err:
            fn()
        assert needle in str(err.value) and "\n" not in str(err.value)


def test_a_small_tree_with_an_exact_cache_drafter_sees_every_committed_token(world, greedy_reference):
    """nodes < depth with a re-encoding (cache=exact) drafter: the live-cache bucket must still hold the whole
    context plus the window, or the drafter would silently drop committed tokens (greedy output stays exact either
    way, so compare the drafter's q with a fresh pass)."""
    w, verifier, tok, prompts = world
    strategy = TreeStrategy(load_diffusion_drafter(CheckpointRef("drafter", str(w.drafter), logit_shift=True),
                                                   engine_context(verifier, tok), "exact"), gamma=6, nodes=2)
    eng = DecodeEngine(verifier, tok, strategy, auto_rule(SamplingParams()), SamplingParams(), kv_step=8)
    for length in range(7, 40):
        kv = eng._bucket(length)
        assert kv - strategy.gamma >= length and kv <= verifier.cache_len
    assert eng.generate(list(prompts[0]), 24).token_ids == greedy_reference[tuple(prompts[0])]
