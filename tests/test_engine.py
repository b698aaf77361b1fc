"""The decode engine is lossless: greedy output == verifier greedy; sampled output ~ verifier p.

Runs on random-init tiny checkpoints (specdiff2/bench/random_world.py): drafters that copy the verifier's weights (with
noise, or exactly with a causal prefix) give acceptance > 0, so both accept and reject paths are exercised.
"""

import shutil

import pytest
import torch
from hydra.utils import instantiate

from specdiff2.bench.common import ROOT, compose, engine_from_config
from specdiff2.cli import _user_error
from specdiff2.decode.acceptance.rules import (
    AcceptanceRule,
    GreedyRule,
    RejectionRule,
    StreakProxyRule,
    TreeRule,
    auto_rule,
)
from specdiff2.decode.diffuspec.ngram import NGramModel
from specdiff2.decode.diffuspec.proxies import NGramProxy
from specdiff2.decode.diffuspec.strategy import DiffuSpecStrategy
from specdiff2.decode.draft import Draft, Layout
from specdiff2.decode.engine import DecodeEngine
from specdiff2.decode.loading import engine_context, load_ar_drafter, load_diffusion_drafter, load_verifier
from specdiff2.decode.sampling import SamplingParams
from specdiff2.decode.strategies.ar import ARDraftStrategy, Autoregressive
from specdiff2.decode.strategies.base import DraftStrategy, Stateless, StepInput, clamp_limit
from specdiff2.decode.strategies.self_select import SelfSelectStrategy
from specdiff2.decode.strategies.specdiff import SpecDiffStrategy
from specdiff2.errors import ConfigError, SpecDiffError
from specdiff2.models.refs import CheckpointRef
from tests.nosync import engine_step_syncs
from tests.stats import chi2_fits, first_two_counts, first_two_law

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = torch.device("cpu")
TEXTS = ["def add(a, b):\n    return", "import os\nimport sys\n\n", "class Foo:\n    def __init__(self",
         "for i in range(10):\n", "    x = [", "# comment\n"]


@pytest.fixture(scope="module")
def world(tiny_world):
    verifier, tok = load_verifier(CheckpointRef("verifier", str(tiny_world.verifier)), CPU, 256)
    return tiny_world, verifier, tok


def ref(w, name: str) -> CheckpointRef:
    return CheckpointRef(name, str(getattr(w, name)), logit_shift=None if name == "ar_drafter" else True)


def ctx_of(world):
    return engine_context(world[1], world[2])


def engine(world, strategy, temperature=0.0, top_k=0, seed=0):
    _, verifier, tok = world
    return DecodeEngine(verifier, tok, strategy, auto_rule(SamplingParams(temperature)), SamplingParams(temperature, top_k), seed=seed)


def prompts(tok, n=4):
    return [tok(t, add_special_tokens=False)["input_ids"] for t in TEXTS[:n]]


@pytest.fixture(scope="module")
def greedy_reference(world):
    ar = engine(world, Autoregressive())
    return {tuple(p): ar.generate(p, 24).token_ids for p in prompts(world[2])}


STRATEGIES = [
    ("sd_ar", dict(gamma=1)), ("sd_ar", dict(gamma=3)), ("sd_ar", dict(gamma=6)),
    ("specdiff", dict(gamma=1, steps=1)), ("specdiff", dict(gamma=4, steps=1)), ("specdiff", dict(gamma=7, steps=3)),
    ("specdiff", dict(gamma=5, steps=2, cache="prefix")),
    pytest.param("specdiff", dict(gamma=8, steps=8), marks=pytest.mark.slow),  # T = γ: the (7, 3) case covers T > 1
    ("specdiff", dict(gamma=4, steps=1, drafter="causal_drafter")),
    ("specdiff", dict(gamma=6, steps=2, cache="prefix", drafter="causal_drafter")),
]


def make(world, kind, kwargs):
    kwargs = dict(kwargs)
    if kind == "sd_ar":
        return ARDraftStrategy(load_ar_drafter(ref(world[0], "ar_drafter"), ctx_of(world)), **kwargs)
    cache, name = kwargs.pop("cache", "exact"), kwargs.pop("drafter", "drafter")
    return SpecDiffStrategy(load_diffusion_drafter(ref(world[0], name), ctx_of(world), cache), **kwargs)


@pytest.mark.parametrize("kind,kwargs", STRATEGIES)
def test_greedy_output_equals_verifier_greedy(world, greedy_reference, kind, kwargs):
    eng = engine(world, make(world, kind, kwargs))
    for p, reference in greedy_reference.items():
        gen = eng.generate(list(p), 24)
        assert gen.token_ids == reference
        assert gen.metrics["verifier_steps"] <= len(reference)


def test_copied_drafters_get_drafts_accepted(world, greedy_reference):
    """The fixture's point: drafters that copy the verifier have drafts accepted (and rejected) at T=0."""
    for kind, kwargs in [("sd_ar", dict(gamma=3)), ("specdiff", dict(gamma=4, drafter="causal_drafter"))]:
        eng = engine(world, make(world, kind, kwargs))
        m = [eng.generate(list(p), 24).metrics for p in greedy_reference]
        alpha_1 = sum(x["alpha_1"] for x in m) / len(m)
        assert 0.3 < alpha_1 and sum(x["mean_accept_len"] for x in m) / len(m) > 1.3


class OracleTree(Stateless):
    """Test strategy: K chains, one of them the verifier's own greedy continuation (host-side: eager engines only)."""

    name = "oracle_tree"

    def __init__(self, reference, k=3, gamma=4):
        self.reference, self.k, self.gamma = reference, k, gamma

    def prepare(self, ctx):
        self.gen = torch.Generator().manual_seed(0)
        self.layout = Layout.chains(self.k + 1, self.gamma, ctx.device)

    def reset(self, prompt):
        pass

    def draft(self, step, sampling, generator):
        length, gamma = int(step.length), self.gamma
        ctx = tuple(step.seq[:length].tolist())
        prompt = next(p for p in self.reference if ctx[: len(p)] == p)
        done = length - len(prompt)
        truth = (list(self.reference[prompt]) + [0] * 8)[done: done + gamma]
        noise = torch.randint(3, 200, (self.k, gamma), generator=self.gen)  # (K, γ)
        noise[0, :2] = torch.tensor(truth[:2])  # shares a prefix with the oracle, then branches
        drafts = torch.cat([noise[:1], torch.tensor([truth]), noise[1:]])  # oracle is draft 1: not the first path
        return Draft(drafts.flatten(), self.layout, None, clamp_limit(gamma, step))


def test_tree_verification_and_commit(world, greedy_reference):
    eng = engine(world, OracleTree(greedy_reference))
    for p, reference in greedy_reference.items():
        gen = eng.generate(list(p), 24)
        assert gen.token_ids == reference
        assert gen.metrics["mean_accept_len"] > 2.0  # the oracle branch was found inside the tree


def test_chains_layout_is_k_independent_chains():
    layout = Layout.chains(3, 2, CPU)
    assert layout.parents.tolist() == [-1, 0, -1, 2, -1, 4]
    assert layout.paths.tolist() == [[0, 1], [2, 3], [4, 5]]
    assert layout.depth.tolist() == [0, 1, 2, 1, 2, 1, 2]
    assert layout.intra[4].tolist() == [True, False, False, True, True, False, False]  # node 3: root, 2, itself


# Slow: the default suite keeps an engine χ² through the tree (test_tree_sources) and the exact chain-rule laws
# (test_acceptance); every conf/decode option gets its χ² under -m slow.
@pytest.mark.slow
@pytest.mark.parametrize("samples", [1200, 300])
@pytest.mark.parametrize("kind,kwargs", [("sd_ar", dict(gamma=3)), ("specdiff", dict(gamma=4, steps=2))])
def test_sampled_tokens_follow_the_verifier(world, kind, kwargs, samples):
    """χ² on the joint of the first two committed tokens against p(x1)·p(x2|x1), top-k 3 on both."""
    _, verifier, tok = world
    params = SamplingParams(1.0, 3)
    eng = DecodeEngine(verifier, tok, make(world, kind, kwargs), RejectionRule(), params, seed=0)
    prompt = prompts(tok, 1)[0]
    cells, law = first_two_law(verifier.model, params, prompt)
    counts, _ = first_two_counts(eng, prompt, cells, samples)
    assert chi2_fits(counts, law)


def test_bad_inputs_give_one_line_errors(world, tmp_path):
    eng = engine(world, Autoregressive())
    cases = [
        (lambda: eng.generate([5] * 300, 4), "does not fit the context"),
        (lambda: eng.generate([5, 6], 0), "max_new_tokens"),
        (lambda: SpecDiffStrategy(None, gamma=0), "gamma"),
        (lambda: ARDraftStrategy(None, gamma=-1), "gamma"),
        (lambda: load_diffusion_drafter(CheckpointRef("drafter", str(tmp_path / "nope")), ctx_of(world)),
         "does not exist"),
        (lambda: CheckpointRef("verifier", "Qwen/Qwen2.5-72B-Instruct").resolve(), "huggingface-cli download"),
    ]
    for fn, needle in cases:
        with pytest.raises(SpecDiffError) as err:
            fn()
        assert needle in str(err.value) and "\n" not in str(err.value)


def test_mismatched_tokenizers_are_refused(world, tmp_path):
    """A drafter whose tokenizer maps ids to other tokens: one error naming the first differing ids."""
    from specdiff2.pocket.tokenizer import train_tokenizer

    w = world[0]
    bad = tmp_path / "drafter"
    shutil.copytree(w.drafter, bad)
    for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (bad / f).unlink(missing_ok=True)
    texts = ["zzz yyy xxx " * 50, "print('other corpus')\n" * 40]
    train_tokenizer(texts, 300, bad)
    with pytest.raises(SpecDiffError, match="tokenizers disagree") as err:
        load_diffusion_drafter(CheckpointRef("drafter", str(bad), logit_shift=True), ctx_of(world))
    assert "first:" in str(err.value) and "\n" not in str(err.value)


def test_drafter_only_ids_are_never_proposed(world):
    w, _, tok = world
    strategy = SpecDiffStrategy(load_diffusion_drafter(ref(w, "drafter"), ctx_of(world)), gamma=6)
    eng = engine(world, strategy)
    prop = strategy.drafter.proposable
    assert not prop[tok.mask_token_id] and prop[tok.pad_token_id]  # pad is a verifier token too: proposable
    assert prop.shape[0] > len(tok) and not prop[len(tok):].any()  # embedding rows beyond the tokenizer
    seq = torch.tensor(prompts(tok, 1)[0] + [0] * 32)
    n = len(prompts(tok, 1)[0])
    strategy.reset(seq[:n])
    step = StepInput(seq, torch.tensor(n), torch.tensor(6), 64)
    draft = strategy.draft(step, SamplingParams(1.0), torch.Generator().manual_seed(0))
    assert prop[draft.tokens].all() and eng is not None


# --- plug-in protocols and their configs ---------------------------------------------------------------------


def test_strategies_and_rules_conform_to_their_protocols(world):
    w = world[0]
    ctx = ctx_of(world)
    drafter = load_diffusion_drafter(ref(w, "drafter"), ctx)
    proxy = NGramProxy(NGramModel.build(torch.arange(40) % 7, 2, world[1].vocab_rows))
    strategies = [Autoregressive(), ARDraftStrategy(load_ar_drafter(ref(w, "ar_drafter"), ctx)),
                  SpecDiffStrategy(drafter), SelfSelectStrategy(drafter), DiffuSpecStrategy(drafter, proxy=proxy)]
    assert all(isinstance(s, DraftStrategy) for s in strategies)
    assert [s.name for s in strategies] == ["ar", "sd_ar", "specdiff", "self_select", "diffuspec"]

    class NoObserve:
        name = "broken"

        def prepare(self, ctx): ...
        def reset(self, prompt): ...
        def draft(self, step, sampling, generator): ...
        def state_tensors(self): ...

    assert not isinstance(NoObserve(), DraftStrategy)
    assert all(isinstance(r, AcceptanceRule) for r in (GreedyRule(), RejectionRule(), TreeRule(), StreakProxyRule()))


def _tiny_overrides(w) -> list[str]:
    return [f"verifier.path={w.verifier}", "verifier.pocket=false", f"drafter.path={w.drafter}", "drafter.pocket=false",
            f"ar_drafter.path={w.ar_drafter}", "ar_drafter.pocket=false", "max_seq_len=128", "device=cpu"]


DECODE_OPTIONS = sorted(p.stem for p in (ROOT / "conf" / "decode").glob("*.yaml"))  # a new strategy YAML is tested


def _method_overrides(w, method: str, tmp_path) -> list[str]:
    """A conf/decode option at a small size for the tiny world (DiffuSpec: the corpus n-gram proxy, ADL in [2, 6])."""
    if method != "diffuspec":
        return [f"decode={method}"]
    return [f"decode={method}", "decode/proxy@decode.models.proxy=ngram", f"decode.models.proxy.source={w.tokens}",
            f"decode.models.proxy.cache_path={tmp_path / 'ng.safetensors'}",
            "decode.strategy.gamma=4", "decode.strategy.gamma_min=2", "decode.strategy.gamma_max=6"]


@pytest.mark.parametrize("method", DECODE_OPTIONS)
def test_every_decode_config_builds_an_engine_with_built_models(world, greedy_reference, method, tmp_path):
    """Every conf/decode option + its conf/acceptance default: the factory builds the models, the strategy receives
    them, and the output is the verifier's greedy output."""
    w = world[0]
    cfg = compose("decode", [*_tiny_overrides(w), *_method_overrides(w, method, tmp_path)])
    eng = engine_from_config(cfg)
    assert isinstance(eng.strategy, DraftStrategy) and eng.strategy.name == cfg.decode.method
    assert isinstance(eng.rule, TreeRule if method == "self_select" else GreedyRule)
    p, reference = next(iter(greedy_reference.items()))
    assert eng.generate(list(p), 12).token_ids == reference[:12]


@pytest.mark.slow
@pytest.mark.parametrize("method", DECODE_OPTIONS)
def test_every_decode_config_samples_the_verifier_law(world, method, tmp_path):
    """Every conf/decode option + its conf/acceptance default at T = 1, top-k 3, with the copying (causal-prefix)
    drafter so that drafts are accepted: χ² on the joint of the first two committed tokens against p(x1)·p(x2|x1).
    A new strategy YAML is tested here too, or fails."""
    w, verifier, tok = world
    over = [*_tiny_overrides(w), f"drafter.path={w.causal_drafter}", *_method_overrides(w, method, tmp_path),
            "temperature=1.0", "top_k=3"]
    if method in ("specdiff", "self_select", "tree"):  # the full window (16) costs time, not coverage
        over.append("decode.strategy.gamma=4")
    eng = engine_from_config(compose("decode", over), verifier, tok)
    prompt = prompts(tok, 1)[0]
    cells, law = first_two_law(verifier.model, eng.sampling, prompt)
    counts, gens = first_two_counts(eng, prompt, cells, 300)
    assert chi2_fits(counts, law)
    if method != "ar":
        assert sum(g.steps[0][0] > 0 for g in gens) > 30  # drafts were accepted, not only corrections


@pytest.mark.parametrize("overrides,needle", [
    (["acceptance=greedy", "temperature=0.7"], "acceptance=rejection"),
    (["acceptance=streak_proxy", "temperature=0.7"], "temperature 0.7 is biased"),
    (["decode=self_select", "acceptance=streak_proxy", "temperature=0.5"], "is biased"),
])
def test_acceptance_configs_refuse_lossy_combinations_at_build_time(overrides, needle):
    cfg = compose("decode", overrides)
    with pytest.raises(Exception) as err:
        instantiate(cfg.job)  # what decode.py does first: the rule is built from the job's SamplingParams
    user = _user_error(err.value)
    assert user is not None and needle in str(user) and "\n" not in str(user)


def test_engine_refuses_a_hand_built_greedy_rule_at_positive_temperature(world):
    """Temperature enters once (SamplingParams); a greedy-only rule paired with T > 0 by hand fails in one line."""
    verifier, tok = world[1], world[2]
    for rule, needle in ((GreedyRule(), "acceptance=greedy"), (StreakProxyRule(), "acceptance=streak_proxy")):
        with pytest.raises(ConfigError, match=f"{needle} at temperature 0.5 is biased"):
            DecodeEngine(verifier, tok, Autoregressive(), rule, SamplingParams(0.5))


@pytest.mark.parametrize("option,rule", [("auto", GreedyRule), ("tiny", GreedyRule), ("greedy", GreedyRule),
                                         ("rejection", RejectionRule), ("tree", TreeRule),
                                         ("streak_proxy", StreakProxyRule)])
def test_acceptance_options_build_their_rule(option, rule):
    assert type(instantiate(compose("decode", [f"acceptance={option}"]).job).rule) is rule
    if option == "auto":
        assert type(instantiate(compose("decode", ["acceptance=auto", "temperature=0.5"]).job).rule) is RejectionRule


@pytest.mark.parametrize("kind,kwargs", [("sd_ar", dict(gamma=3)), ("specdiff", dict(gamma=4, steps=2)),
                                         ("specdiff", dict(gamma=4, cache="prefix", drafter="causal_drafter"))])
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_a_step_never_syncs_with_the_host(world, kind, kwargs, temperature):
    """What makes the step capturable as CUDA graphs: no .item()/nonzero anywhere in draft → commit."""
    eng = engine(world, make(world, kind, kwargs), temperature=temperature)
    assert engine_step_syncs(eng, prompts(world[2], 1)[0]) == []
    assert engine_step_syncs(engine(world, Autoregressive(), temperature=temperature), [5, 6]) == []
    tree = SelfSelectStrategy(load_diffusion_drafter(ref(world[0], "causal_drafter"), ctx_of(world)), gamma=3, k=3)
    tree_engine = DecodeEngine(world[1], world[2], tree, TreeRule(), SamplingParams(temperature))
    assert engine_step_syncs(tree_engine, prompts(world[2], 1)[0]) == []  # K chains, commit by copy


def test_every_generation_carries_its_acceptance_statistics(world, greedy_reference):
    """Per request, as vLLM reports them: τ (bonus included), the histogram of accepted drafts per step, the
    per-position and conditional α_j, the acceptance rate and the step count, consistent with the step trace."""
    eng = engine(world, make(world, "specdiff", dict(gamma=4, drafter="causal_drafter")))
    gen = eng.generate(list(next(iter(greedy_reference))), 24)
    m, trace = gen.metrics, gen.steps
    assert sum(m["accept_hist"]) == m["verifier_steps"] == len(trace)
    assert m["accept_hist"] == [sum(1 for a, _ in trace if a == n) for n in range(len(m["accept_hist"]))]
    assert m["mean_accept_len"] == pytest.approx(sum(c for _, c in trace) / len(trace))
    assert m["alpha_cond_1"] == m["alpha_1"] and 0 <= m["draft_acceptance_rate"] <= 1
    produced = [sum(c for _, c in trace[:t]) for t in range(len(trace))]
    limits = [max(0, min(4, 24 - p - 1)) for p in produced]  # γ, or less near max_new_tokens (24)
    for j in range(1, 5):
        reached = sum(1 for (a, _), lim in zip(trace, limits) if a >= j - 1 and lim >= j)
        accepted = sum(1 for a, _ in trace if a >= j)
        if reached:
            assert m[f"alpha_cond_{j}"] == pytest.approx(accepted / reached)


def test_prepare_covers_every_bucket_a_generation_uses(world, greedy_reference):
    """engine.prepare captures the step graph of every live-cache bucket a timed generation of its prompts can
    pick (a first-use capture inside a timed prompt once cost ~0.5 s of `other_s` on an H200): every bucket the
    loop picks is in `reachable_buckets`, at small kv_step and a deep draft, and prepare leaves the outputs alone."""
    eng = engine(world, make(world, "sd_ar", dict(gamma=6)))
    eng.kv_step = 16  # many buckets over 24 new tokens
    ps = [list(p) for p in greedy_reference]
    used, run_step = [], eng._run_step
    eng._run_step = lambda kv_len, timer: (used.append(kv_len), run_step(kv_len, timer))
    assert eng.prepare(ps, 24) == 0  # eager on CPU: no graphs, only the prefills ran
    used.clear()
    for p, reference in greedy_reference.items():
        assert eng.generate(list(p), 24).token_ids == reference
    reachable = eng.reachable_buckets([len(p) for p in ps], 24)
    assert set(used) <= set(reachable) and len(set(used)) > 2
