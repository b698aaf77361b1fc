"""The decode engine is lossless: greedy output == verifier greedy; sampled output ~ verifier p."""

import math

import pytest
import torch

from specdiff2.decode.draft import Draft
from specdiff2.decode.engine import DecodeEngine
from specdiff2.decode.rules import SamplingParams
from specdiff2.decode.strategies.ar import ARDraftStrategy, Autoregressive
from specdiff2.decode.strategies.specdiff import SpecDiffStrategy
from specdiff2.decode.verifier import Verifier
from specdiff2.errors import SpecDiffError
from specdiff2.models.checkpoint import load_transformer
from specdiff2.models.refs import CheckpointRef
from specdiff2.models.tokenizer import load_tokenizer

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def world(micro_world):
    model, _ = load_transformer(micro_world.verifier)
    tok = load_tokenizer(micro_world.verifier)
    return micro_world, Verifier(model, 256), tok


def refs(w):
    return (CheckpointRef("drafter", str(w.drafter), logit_shift=True),
            CheckpointRef("ar_drafter", str(w.ar_drafter)))


def engine(world, strategy, temperature=0.0, top_k=0, seed=0):
    w, verifier, tok = world
    return DecodeEngine(verifier, tok, strategy, SamplingParams(temperature, top_k), seed=seed)


def prompts(tok, n=4):
    texts = ["def add(a, b):\n    return", "import os\nimport sys\n\n", "class Foo:\n    def __init__(self",
             "for i in range(10):\n", "    x = [", "# comment\n"]
    return [tok(t, add_special_tokens=False)["input_ids"] for t in texts[:n]]


@pytest.fixture(scope="module")
def greedy_reference(world):
    ar = engine(world, Autoregressive())
    return {tuple(p): ar.generate(p, 24).token_ids for p in prompts(world[2])}


STRATEGIES = [
    ("sd_ar", dict(gamma=1)), ("sd_ar", dict(gamma=3)), ("sd_ar", dict(gamma=6)),
    ("specdiff", dict(gamma=1, steps=1)), ("specdiff", dict(gamma=4, steps=1)), ("specdiff", dict(gamma=7, steps=3)),
    ("specdiff", dict(gamma=5, steps=2, cache="prefix")), ("specdiff", dict(gamma=8, steps=8)),
]


def make(world, kind, kwargs):
    drafter, ar_drafter = refs(world[0])
    return ARDraftStrategy(ar_drafter, **kwargs) if kind == "sd_ar" else SpecDiffStrategy(drafter, **kwargs)


@pytest.mark.parametrize("kind,kwargs", STRATEGIES)
def test_greedy_output_equals_verifier_greedy(world, greedy_reference, kind, kwargs):
    eng = engine(world, make(world, kind, kwargs))
    for p, ref in greedy_reference.items():
        gen = eng.generate(list(p), 24)
        assert gen.token_ids == ref
        assert gen.metrics["verifier_steps"] <= len(ref)


class OracleTree:
    """Test strategy: a trie of K drafts, one of them the verifier's own greedy continuation."""

    def __init__(self, reference, k=3):
        self.reference, self.k = reference, k

    def prepare(self, ctx):
        self.gen = torch.Generator().manual_seed(0)

    def reset(self):
        pass

    def observe(self, n):
        pass

    def draft(self, seq, length, budget, sampling, generator):
        gamma = min(4, budget)
        if gamma <= 0:
            return Draft.empty(CPU)
        ctx = tuple(seq[:length].tolist())
        prompt = next(p for p in self.reference if ctx[: len(p)] == p)
        done = length - len(prompt)
        truth = (list(self.reference[prompt]) + [0] * 8)[done: done + gamma]
        noise = torch.randint(3, 200, (self.k, gamma), generator=self.gen)  # (K, γ)
        noise[0, :2] = torch.tensor(truth[:2])  # shares a prefix with the oracle, then branches
        drafts = torch.cat([noise[:1], torch.tensor([truth]), noise[1:]])  # oracle is draft 1: not node 0's path
        return Draft.from_drafts(drafts)


def test_tree_verification_and_commit(world, greedy_reference):
    eng = engine(world, OracleTree(greedy_reference))
    for p, ref in greedy_reference.items():
        gen = eng.generate(list(p), 24)
        assert gen.token_ids == ref
        assert gen.metrics["mean_accept_len"] > 2.0  # the oracle branch was found inside the tree


def test_trie_merges_shared_prefixes():
    drafts = torch.tensor([[5, 6, 7], [5, 6, 8], [5, 9, 7], [5, 6, 7]])
    d = Draft.from_drafts(drafts)
    assert d.tokens.tolist() == [5, 6, 7, 8, 9, 7]
    assert d.parents.tolist() == [-1, 0, 1, 1, 0, 4]
    assert d.paths.tolist() == [[0, 1, 2], [0, 1, 3], [0, 4, 5], [0, 1, 2]]
    assert d.info["distinct_drafts"] == 3 and d.info["tree_size"] == 6


def _chi2_ok(counts: torch.Tensor, probs: torch.Tensor) -> bool:
    expected = probs * counts.sum()
    keep = expected > 5
    stat = (((counts - expected) ** 2) / expected.clamp_min(1e-9))[keep].sum()
    dof = int(keep.sum()) - 1
    critical = dof + 3.29 * math.sqrt(2 * dof) + 4  # ≈ p < 0.001 upper tail (Wilson-Hilferty scale)
    return float(stat) < critical


@pytest.mark.parametrize("kind,kwargs", [("sd_ar", dict(gamma=3)), ("specdiff", dict(gamma=4, steps=2))])
def test_sampled_tokens_follow_the_verifier(world, kind, kwargs):
    """χ² on the joint of the first two committed tokens against p(x1)·p(x2|x1), top-k 3 on both."""
    w, verifier, tok = world
    params = SamplingParams(1.0, 3)
    eng = DecodeEngine(verifier, tok, make(world, kind, kwargs), params, seed=0)
    prompt = prompts(tok, 1)[0]
    model = verifier.model
    with torch.no_grad():
        def p_next(ids):
            t = torch.tensor([ids])
            return params.probs(model(t, torch.arange(len(ids))[None])[0, -1].double())
        p1 = p_next(prompt)
        firsts = p1.nonzero()[:, 0].tolist()
        joint = {(a, b): float(p1[a] * pb) for a in firsts for b, pb in enumerate(p_next(prompt + [a])) if pb > 0}
    cells = sorted(joint)
    counts = torch.zeros(len(cells), dtype=torch.float64)
    for s in range(1200):
        out = eng.generate(prompt, 2, seed=s).token_ids
        counts[cells.index(tuple(out[:2]))] += 1
    assert _chi2_ok(counts, torch.tensor([joint[c] for c in cells], dtype=torch.float64))


def test_bad_inputs_give_one_line_errors(world, tmp_path):
    w, verifier, tok = world
    drafter, _ = refs(w)
    eng = engine(world, Autoregressive())
    cases = [
        (lambda: eng.generate([5] * 300, 4), "does not fit the context"),
        (lambda: eng.generate([5, 6], 0), "max_new_tokens"),
        (lambda: SpecDiffStrategy(drafter, gamma=0), "gamma"),
        (lambda: ARDraftStrategy(drafter, gamma=-1), "gamma"),
        (lambda: engine(world, SpecDiffStrategy(CheckpointRef("drafter", str(tmp_path / "nope")))), "does not exist"),
        (lambda: CheckpointRef("verifier", "Qwen/Qwen2.5-72B-Instruct").resolve(), "huggingface-cli download"),
    ]
    for fn, needle in cases:
        with pytest.raises(SpecDiffError) as err:
            fn()
        assert needle in str(err.value) and "\n" not in str(err.value)


def test_mismatched_tokenizers_are_refused(world, tmp_path):
    """A drafter whose tokenizer maps ids to other tokens: one error naming the first differing ids."""
    import shutil

    from specdiff2.pocket.tokenizer import train_tokenizer

    w, verifier, tok = world
    bad = tmp_path / "drafter"
    shutil.copytree(w.drafter, bad)
    for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (bad / f).unlink(missing_ok=True)
    texts = ["zzz yyy xxx " * 50, "print('other corpus')\n" * 40]
    train_tokenizer(texts, 300, bad)
    with pytest.raises(SpecDiffError, match="tokenizers disagree") as err:
        engine(world, SpecDiffStrategy(CheckpointRef("drafter", str(bad), logit_shift=True)))
    assert "first:" in str(err.value) and "\n" not in str(err.value)


def test_drafter_only_ids_are_never_proposed(world):
    w, verifier, tok = world
    strategy = SpecDiffStrategy(refs(w)[0], gamma=6)
    eng = engine(world, strategy)
    prop = strategy.drafter.proposable
    assert not prop[tok.mask_token_id] and not prop[tok.pad_token_id]
    assert not prop[len(tok):].any()  # embedding rows beyond the tokenizer
    seq = torch.tensor(prompts(tok, 1)[0] + [0] * 32)
    draft = strategy.draft(seq, len(prompts(tok, 1)[0]), 6, SamplingParams(1.0), torch.Generator().manual_seed(0))
    assert prop[draft.tokens].all() and eng is not None
