"""`tree` (best-first draft tree from one pass) and deterministic candidates: the tree is the N most probable
prefixes (brute force), `sampled_match` has exactly the verifier's law (enumeration), the engine stays lossless
(greedy == `ar`, at the context limit too; χ² at T = 1), and the step never syncs with the host."""

import itertools

import pytest
import torch

from specdiff2.decode.acceptance.rules import RejectionRule, auto_rule, greedy_tree
from specdiff2.decode.draft import Draft, Layout
from specdiff2.decode.engine import DecodeEngine
from specdiff2.decode.loading import engine_context, load_diffusion_drafter, load_verifier
from specdiff2.decode.sampling import SamplingParams
from specdiff2.decode.strategies.ar import Autoregressive
from specdiff2.decode.strategies.specdiff import SpecDiffStrategy
from specdiff2.decode.strategies.tree import TreeStrategy, best_first_tree, sample_trie
from specdiff2.errors import SpecDiffError
from specdiff2.models.masks import tree_ancestors
from specdiff2.models.refs import CheckpointRef
from tests.nosync import engine_step_syncs
from tests.stats import chi2_fits, first_two_counts, first_two_law

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


def test_samples_merge_into_one_trie_of_distinct_children():
    drafts = torch.tensor([[5, 6, 7], [5, 6, 8], [5, 9, 7], [5, 6, 7]])  # (K, γ)
    parents, depth, paths = sample_trie(drafts)
    assert paths.tolist() == [[0, 1, 2], [0, 1, 5], [0, 7, 8], [0, 1, 2]]  # twins share nodes
    assert parents.tolist() == [-1, 0, 1, -1, 0, 1, -1, 0, 7, -1, 0, 1]
    children = {}
    for row, tokens in zip(paths.tolist(), drafts.tolist()):
        for d, node in enumerate(row):
            children.setdefault(row[d - 1] if d else -1, {}).setdefault(tokens[d], set()).add(node)
    assert all(len(nodes) == 1 for kids in children.values() for nodes in kids.values())  # one node per token


def test_the_tree_is_the_most_probable_prefixes():
    """Brute force over every prefix of a γ=3, V=4 window: the tree holds the N best path log-probabilities,
    parents before children; its layout equals the ancestor closure."""
    g = torch.Generator().manual_seed(0)
    for _ in range(60):
        logq = torch.randn(3, 4, generator=g, dtype=torch.float64).log_softmax(-1)  # (γ, V)
        n = int(torch.randint(1, 20, (1,), generator=g))
        tokens, parents, depth, score = best_first_tree(logq, n, 4)
        every = sorted((sum(float(logq[j, t]) for j, t in enumerate(p)) for d in (1, 2, 3)
                        for p in itertools.product(range(4), repeat=d)), reverse=True)
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


@pytest.mark.parametrize("kwargs", [dict(nodes=1), dict(nodes=8), dict(nodes=24),
                                    dict(source="samples", k=3, drafter_temperature=1.5)])
def test_greedy_output_equals_verifier_greedy(world, greedy_reference, kwargs):
    eng = DecodeEngine(world[1], world[2], TreeStrategy(drafter(world), gamma=6, branch=3, **kwargs),
                       auto_rule(SamplingParams()), SamplingParams())
    for p, ref in greedy_reference.items():
        gen = eng.generate(list(p), 24)
        assert gen.token_ids == ref
        assert gen.metrics["verifier_steps"] < len(ref)  # the causal drafter copies the verifier: drafts accepted


def test_the_context_limit_keeps_greedy_output(world, greedy_reference):
    w, _, tok, prompts = world
    prompt = list(next(iter(greedy_reference)))
    for room in (2, 5):
        verifier, _ = load_verifier(CheckpointRef("verifier", str(w.verifier)), CPU, len(prompt) + room)
        gen = DecodeEngine(verifier, tok, TreeStrategy(drafter(world), gamma=6, nodes=16), auto_rule(SamplingParams()),
                           SamplingParams()).generate(prompt, 64)
        assert gen.token_ids == greedy_reference[tuple(prompt)][: len(gen.token_ids)] and len(gen.token_ids) == room


@pytest.mark.parametrize("kind", ["tree", pytest.param("samples_trie", marks=pytest.mark.slow),
                                  pytest.param("specdiff_argmax", marks=pytest.mark.slow)])  # same rule; suite time
def test_sampled_tokens_follow_the_verifier(world, kind):
    """Engine χ² at T = 1, top-k 3 on the first two tokens: deterministic candidates (a tree, or specdiff's argmax
    proposals) verified by sampled matching."""
    _, verifier, tok, prompts = world
    params = SamplingParams(1.0, 3)
    strategy = {"tree": lambda: TreeStrategy(drafter(world), gamma=3, nodes=8, branch=3),
                "samples_trie": lambda: TreeStrategy(drafter(world), gamma=3, source="samples", k=3,
                                                     drafter_temperature=1.5, drafter_top_k=3),
                "specdiff_argmax": lambda: SpecDiffStrategy(drafter(world), gamma=3, proposal="argmax")}[kind]()
    eng = DecodeEngine(verifier, tok, strategy, RejectionRule(), params)
    prompt = prompts[1]
    cells, law = first_two_law(verifier.model, params, prompt)
    counts, gens = first_two_counts(eng, prompt, cells, 300)
    assert sum(g.steps[0][0] > 0 for g in gens) > 30  # drafts are accepted, not only corrections
    assert chi2_fits(counts, law)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_a_tree_step_never_syncs_with_the_host(world, temperature):
    for kwargs in (dict(nodes=12), dict(source="samples", k=3)):
        eng = DecodeEngine(world[1], world[2], TreeStrategy(drafter(world), gamma=4, **kwargs),
                           auto_rule(SamplingParams(temperature)), SamplingParams(temperature))
        assert engine_step_syncs(eng, world[3][0]) == []


def test_bad_inputs_give_one_line_errors():
    for fn, needle in [(lambda: TreeStrategy(None, nodes=0), "nodes=0"), (lambda: TreeStrategy(None, gamma=0), "gamma"),
                       (lambda: TreeStrategy(None, source="beam"), "source='beam'"),
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
