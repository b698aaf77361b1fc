"""Every `tree` source on the engine (tests/test_tree.py has the pieces): greedy == `ar`, at the context limit too;
χ² at T = 1 (sampled matching of deterministic candidates); no host sync in a step. ar_topk expands sd_ar's greedy
chain, cps's trie holds DiffuSpec's beams, and every source composes from conf/decode/tree.yaml with the drafter it
needs."""

import pytest
import torch

from specdiff2.bench.common import compose, engine_from_config
from specdiff2.data.token_streams import load_ngram_proxy
from specdiff2.decode.acceptance.rules import RejectionRule, auto_rule
from specdiff2.decode.diffuspec.cps import beam_paths, build_lattice
from specdiff2.decode.engine import DecodeEngine
from specdiff2.decode.loading import engine_context, load_ar_drafter, load_diffusion_drafter, load_verifier
from specdiff2.decode.sampling import GREEDY, SamplingParams
from specdiff2.decode.strategies.ar import ARDraftStrategy, Autoregressive
from specdiff2.decode.strategies.base import StepInput
from specdiff2.decode.strategies.specdiff import SpecDiffStrategy
from specdiff2.decode.strategies.tree import TreeStrategy, best_first_tree
from specdiff2.models.drafters import ARDrafter, DiffusionDrafter
from specdiff2.models.refs import CheckpointRef
from tests.nosync import engine_step_syncs
from tests.stats import chi2_fits, first_two_counts, first_two_law

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = torch.device("cpu")
TEXTS = ["def add(a, b):\n    return", "import os\nimport sys\n\n", "class Foo:\n    def __init__(self"]
SOURCES = {  # TreeStrategy knobs per case (gamma, nodes, branch set by each test)
    "best_first": {},
    "streak": {"score": "streak"},
    "ar_topk": {"source": "ar_topk"},
    "samples": {"source": "samples", "k": 3, "drafter_temperature": 1.5},
    "cps": {"source": "cps", "k": 3, "m_max": 4},  # the corpus n-gram proxy, lam 0.5
    "cps_no_proxy": {"source": "cps", "k": 3, "m_max": 4, "lam": 1.0},
}


@pytest.fixture(scope="module")
def world(tiny_world, tmp_path_factory):
    verifier, tok = load_verifier(CheckpointRef("verifier", str(tiny_world.verifier)), CPU, 256)
    prompts = [tok(t, add_special_tokens=False)["input_ids"] for t in TEXTS]
    proxy = load_ngram_proxy(engine_context(verifier, tok), str(tiny_world.tokens), order=3,
                             cache_path=str(tmp_path_factory.mktemp("ngram") / "tiny.safetensors"))
    return tiny_world, verifier, tok, prompts, proxy


def tree(world, case: str, **kwargs) -> TreeStrategy:
    """A fresh strategy (drafter caches belong to one engine): the copying causal drafter, or the AR drafter."""
    w, verifier, tok, _, proxy = world
    ctx, knobs = engine_context(verifier, tok), {**SOURCES[case], **kwargs}
    if knobs.get("source") == "ar_topk":
        drafter = load_ar_drafter(CheckpointRef("ar_drafter", str(w.ar_drafter)), ctx)
    else:
        drafter = load_diffusion_drafter(CheckpointRef("drafter", str(w.causal_drafter), logit_shift=True), ctx)
    return TreeStrategy(drafter, proxy=proxy, **knobs)


def engine(world, strategy, params=GREEDY, verifier=None):
    return DecodeEngine(verifier or world[1], world[2], strategy, auto_rule(params), params)


@pytest.fixture(scope="module")
def greedy_reference(world):
    ar = engine(world, Autoregressive())
    return {tuple(p): ar.generate(p, 24).token_ids for p in world[3]}


@pytest.mark.parametrize("case,nodes", [("best_first", 1), ("best_first", 8), ("best_first", 24), ("streak", 12),
                                        ("ar_topk", 12), ("samples", 12), ("samples", 64), ("cps", 12),
                                        ("cps_no_proxy", 24)])
def test_greedy_output_equals_verifier_greedy(world, greedy_reference, case, nodes):
    eng = engine(world, tree(world, case, gamma=6, nodes=nodes, branch=3))
    for p, ref in greedy_reference.items():
        gen = eng.generate(list(p), 24)
        assert gen.token_ids == ref
        assert gen.metrics["verifier_steps"] < len(ref)  # copying drafters: drafts accepted


@pytest.mark.parametrize("case", SOURCES)
def test_the_context_limit_keeps_greedy_output(world, greedy_reference, case):
    """A static cache 2 or 5 tokens past the prompt: the budget, fixed before anything is drawn, cuts the tree."""
    w = world[0]
    prompt = list(next(iter(greedy_reference)))
    for room in (2, 5):
        verifier, _ = load_verifier(CheckpointRef("verifier", str(w.verifier)), CPU, len(prompt) + room)
        gen = engine(world, tree(world, case, gamma=6, nodes=16), verifier=verifier).generate(prompt, 64)
        assert gen.token_ids == greedy_reference[tuple(prompt)][: len(gen.token_ids)] and len(gen.token_ids) == room


SAMPLED = ["best_first"] + [pytest.param(c, marks=pytest.mark.slow) for c in SOURCES if c != "best_first"]


@pytest.mark.parametrize("case", [*SAMPLED, pytest.param("specdiff_argmax", marks=pytest.mark.slow)])  # one rule
def test_sampled_tokens_follow_the_verifier(world, case):
    """Engine χ² at T = 1, top-k 3 on the first two tokens: deterministic candidates (a tree from any source, or
    specdiff's argmax proposals) verified by sampled matching (`rules.sampled_match`, enumerated in test_tree.py)."""
    _, verifier, tok, prompts, _ = world
    params = SamplingParams(1.0, 3)
    if case == "specdiff_argmax":
        strategy = SpecDiffStrategy(tree(world, "best_first").drafter, gamma=3, proposal="argmax")
    else:
        strategy = tree(world, case, gamma=3, nodes=8, branch=3)
    eng = DecodeEngine(verifier, tok, strategy, RejectionRule(), params)
    prompt = prompts[1]
    cells, law = first_two_law(verifier.model, params, prompt)
    counts, gens = first_two_counts(eng, prompt, cells, 300)
    assert sum(g.steps[0][0] > 0 for g in gens) > 30  # drafts are accepted, not only corrections
    assert chi2_fits(counts, law)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_a_tree_step_never_syncs_with_the_host(world, temperature):
    """What makes each source capturable as CUDA graphs (the n-gram proxy of cps is device code too)."""
    params = SamplingParams(temperature)
    for case in SOURCES:
        strategy = tree(world, case, gamma=4, nodes=12)
        assert strategy.capturable
        assert engine_step_syncs(engine(world, strategy, params), world[3][0]) == [], case


def hand_step(strategy, prompt: list[int]) -> StepInput:
    """One step after `prompt`, driven by hand as the engine would (the strategy prepared by an engine)."""
    seq = torch.tensor(prompt + [0] * 32)
    strategy.reset(seq[: len(prompt)])
    return StepInput(seq, torch.tensor(len(prompt)), torch.tensor(16), 64)


def test_ar_topk_expands_the_ar_drafters_greedy_chain(world):
    """branch=1, nodes=γ: the tree is exactly sd_ar's greedy draft (one AR step per depth). branch=3: the best-first
    tree over the AR conditionals along that chain, read off the drafter step by step here."""
    prompt = world[3][0]
    chain = tree(world, "ar_topk", gamma=5, nodes=5, branch=1)
    sd = ARDraftStrategy(chain.drafter, gamma=5)
    for s in (chain, sd):
        engine(world, s)
    want = sd.draft(hand_step(sd, prompt), GREEDY, None).tokens
    got = chain.draft(hand_step(chain, prompt), GREEDY, None)
    assert torch.equal(got.tokens, want) and got.parents.tolist() == [-1, 0, 1, 2, 3]
    wide = tree(world, "ar_topk", gamma=5, nodes=12, branch=3)
    engine(world, wide)
    step = hand_step(wide, prompt)
    rows = [wide.drafter.catch_up(step.seq, step.length, step.kv_len, 6)]  # (V,) after the prompt
    for i, token in enumerate(want[:-1]):
        rows.append(wide.drafter.step_logits(token, step.length + i, step.kv_len))
    tokens, parents, _, _ = best_first_tree(torch.stack(rows).log_softmax(-1), 12, 3)
    got = wide.draft(hand_step(wide, prompt), GREEDY, None)
    assert torch.equal(got.tokens, tokens) and torch.equal(got.parents, parents)


def test_the_cps_trie_holds_diffuspecs_beams(world):
    """nodes = k·γ, lam = 1: the depth-γ paths of the tree are the k beams of DiffuSpec's search over the same
    pass's lattice (twins merged); tau = 1 keeps the lattice wide enough for three live beams."""
    strategy = tree(world, "cps_no_proxy", gamma=5, nodes=15, tau=1.0)
    engine(world, strategy)
    step = hand_step(strategy, world[3][0])
    lattice = build_lattice(strategy.window_logits(step), strategy.tau, strategy.m_max)
    idx, score = beam_paths(lattice, None, 1.0, 3)
    assert (score > float("-inf")).all()  # three live beams: the test compares real paths
    beams = lattice.ids.T.gather(0, idx)  # (B, γ)
    draft = strategy.draft(step, GREEDY, None)
    leaves = draft.layout.paths[draft.layout.depth[1:] == 5]  # (leaves, γ) root-to-leaf nodes
    assert {tuple(draft.tokens[p].tolist()) for p in leaves} == {tuple(b) for b in beams.tolist()}


@pytest.mark.parametrize("source", ["best_first", "ar_topk", "samples", "cps"])
def test_every_source_composes_from_the_tree_config(world, greedy_reference, source):
    """decode=tree decode.strategy.source=X: conf/decode/tree.yaml loads the drafter the source needs (the AR drafter
    for ar_topk, through decode.checkpoint_of_source), and the output is the verifier's greedy output."""
    w = world[0]
    cfg = compose("decode", [f"verifier.path={w.verifier}", "verifier.pocket=false", f"drafter.path={w.causal_drafter}",
                             "drafter.pocket=false", f"ar_drafter.path={w.ar_drafter}", "ar_drafter.pocket=false",
                             "max_seq_len=128", "device=cpu", "decode=tree", f"decode.strategy.source={source}",
                             "decode.strategy.gamma=4", "decode.strategy.nodes=8"])
    eng = engine_from_config(cfg, world[1], world[2])
    assert isinstance(eng.strategy.drafter, ARDrafter if source == "ar_topk" else DiffusionDrafter)
    p, reference = next(iter(greedy_reference.items()))
    assert eng.generate(list(p), 12).token_ids == reference[:12]
