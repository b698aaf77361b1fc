"""DiffuSpec on the tiny random-init checkpoints: greedy == verifier greedy, losslessness at T > 0, ADL's window,
host proxies in eager steps, and no host sync in a captured step. Toy-input tests of the pieces (lattice, search,
ADL update, n-gram): tests/test_diffuspec_cps.py."""

import pytest
import torch

from specdiff2.data.token_streams import load_ngram_proxy
from specdiff2.decode.acceptance.rules import GreedyRule, RejectionRule, auto_rule
from specdiff2.decode.diffuspec.ngram import NGramModel
from specdiff2.decode.diffuspec.proxies import ARProxy, ContextNGramProxy, KenLMProxy, NGramProxy
from specdiff2.decode.diffuspec.strategy import DiffuSpecStrategy
from specdiff2.decode.engine import DecodeEngine
from specdiff2.decode.loading import engine_context, load_ar_proxy, load_diffusion_drafter, load_verifier
from specdiff2.decode.sampling import SamplingParams
from specdiff2.decode.strategies.ar import Autoregressive
from specdiff2.decode.strategies.base import StepInput
from specdiff2.errors import SpecDiffError
from specdiff2.models.refs import CheckpointRef
from tests.nosync import engine_step_syncs
from tests.stats import chi2_fits, first_two_counts, first_two_law

pytestmark = pytest.mark.usefixtures("one_thread")
KV_LEN = 64  # the static cache bucket of the hand-driven steps below


@pytest.fixture(scope="module")
def world(tiny_world):
    # A short static cache: CPU attention cost scales with it, and prompt + 24 tokens + a draft fit in 64.
    verifier, tok = load_verifier(CheckpointRef("verifier", str(tiny_world.verifier)), torch.device("cpu"), 64)
    return tiny_world, verifier, tok


def ctx_of(world):
    return engine_context(world[1], world[2])


@pytest.fixture(scope="module")
def ngram_proxy(world, tmp_path_factory):
    return load_ngram_proxy(ctx_of(world), str(world[0].tokens), order=3,
                            cache_path=str(tmp_path_factory.mktemp("ngram") / "tiny.safetensors"))


@pytest.fixture(scope="module")
def proxy_of(world, ngram_proxy):
    def make(kind):  # a fresh AR proxy each time: its cache belongs to one engine
        if kind == "ar":
            return load_ar_proxy(CheckpointRef("ar_drafter", str(world[0].ar_drafter)), ctx_of(world))
        return {"ngram": ngram_proxy, "context": ContextNGramProxy(3),
                "ngram_per_step": NGramProxy(ngram_proxy.model, table_limit=0)}[kind]
    return make


@pytest.fixture(scope="module")
def drafter_of(world):
    ref = CheckpointRef("drafter", str(world[0].drafter), logit_shift=True)
    return lambda: load_diffusion_drafter(ref, ctx_of(world))


def strategy(drafter, proxy, **kw):
    args = {"gamma": 6, "gamma_min": 2, "gamma_max": 8, "delta": 3, "m_max": 4, "beam": 2, "proxy": proxy}
    return DiffuSpecStrategy(drafter, **{**args, **kw})


GREEDY = SamplingParams()


def prepared(world, s, params=GREEDY):
    """`s` prepared by an engine (the verifier's stop ids, layout, proxy) and the engine itself."""
    return DecodeEngine(world[1], world[2], s, auto_rule(params), params)


def step_of(s, prompt: list[int], budget: int) -> StepInput:
    """Hand-drive one step after `prompt`, as the engine would (reset, then a StepInput of device tensors)."""
    seq = torch.tensor(prompt + [0] * 32)
    s.reset(seq[: len(prompt)])
    return StepInput(seq, torch.tensor(len(prompt)), torch.tensor(budget), KV_LEN)


PROMPTS = ["def add(a, b):\n    return", "import os\nimport sys\n\n", "class Foo:\n    def __init__(self"]


def encoded(tok, i: int) -> list[int]:
    return tok(PROMPTS[i], add_special_tokens=False)["input_ids"]


@pytest.fixture(scope="module")
def greedy_reference(world):
    _, verifier, tok = world
    ar = DecodeEngine(verifier, tok, Autoregressive(), GreedyRule(), SamplingParams())
    return {tuple(encoded(tok, i)): ar.generate(encoded(tok, i), 24).token_ids for i in range(len(PROMPTS))}


@pytest.mark.parametrize("cps,adl,proxy", [(False, False, "ngram"), (True, False, "ngram"), (False, True, "ngram"),
                                           (True, True, "ngram"), (True, True, "ar"), (True, True, "context")])
def test_greedy_output_equals_verifier_greedy(world, proxy_of, drafter_of, greedy_reference, cps, adl, proxy):
    s = strategy(drafter_of(), proxy_of(proxy), cps=cps, adl=adl)
    assert s.capturable == (proxy != "context" or not cps)  # a host proxy in use: eager steps
    eng = prepared(world, s)
    for p, ref in greedy_reference.items():
        gen = eng.generate(list(p), 24)
        assert gen.token_ids == ref
        m = gen.metrics
        assert m["mean_draft_len"] <= (8 if adl else 6) and m["mean_lattice_len"] <= m["mean_draft_len"]
        assert (2 if adl else 6) <= m["mean_draft_len"]


def test_adl_state_lives_on_the_device(world, proxy_of, drafter_of, greedy_reference):
    """γ_t (the paper's k_t), the EMAs and L^gen are the strategy's state tensors (saved around graph warm-up); the
    engine moves them, reset() restores k_1 in place."""
    s = strategy(drafter_of(), proxy_of("ngram"))
    eng = prepared(world, s)
    state = s.state_tensors()
    gamma_t, gen_ema, acc_ema, l_gen = state
    eng.generate(list(next(iter(greedy_reference))), 24)
    assert 2 <= int(gamma_t) <= 8 and float(gen_ema) > 0 and 0 <= int(l_gen) <= 8
    s.reset(torch.tensor(next(iter(greedy_reference))))
    assert (int(gamma_t), float(gen_ema), float(acc_ema)) == (6, 0.0, 0.0)
    assert all(a is b for a, b in zip(s.state_tensors(), state))


@pytest.mark.parametrize("cps", [False, True])
def test_adl_window_is_a_k_t_window(world, proxy_of, drafter_of, cps):
    """Under ADL the pass has gamma_max MASKs but its first k_t rows are exactly a k_t-window pass: the same draft as
    fixed gamma = k_t (greedy tokens up to the limit, q at T > 0), the same lattice end."""
    tok = world[2]
    prompt = encoded(tok, 0)
    adaptive = strategy(drafter_of(), proxy_of("ngram"), cps=cps, gamma=6)
    fixed = strategy(drafter_of(), proxy_of("ngram"), cps=cps, adl=False, gamma=4)
    for params in (SamplingParams(), SamplingParams(1.0, 3)):
        prepared(world, adaptive, params), prepared(world, fixed, params)
        drafts = []
        for s in (adaptive, fixed):
            step = step_of(s, prompt, 16)
            if s.adl:
                s.controller.gamma.fill_(4)
            drafts.append(s.draft(step, params, torch.Generator().manual_seed(0)))
        a, f = drafts
        n = int(f.limit)
        assert a.tokens.shape == (8,) and f.tokens.shape == (4,) and int(a.limit) == n <= 4
        assert int(a.info["draft_len"]) == 4 and int(a.info["lattice_len"]) == int(f.info["lattice_len"])
        if params.greedy or cps:
            assert torch.equal(a.tokens[:n], f.tokens[:n])
        else:
            assert torch.allclose(a.q_probs[:4], f.q_probs, atol=1e-5)


def test_limit_is_the_lattice_end_or_the_budget(world, proxy_of, drafter_of):
    s = strategy(drafter_of(), proxy_of("ngram"), adl=False)
    prepared(world, s)
    prompt = encoded(world[2], 1)
    full = s.draft(step_of(s, prompt, 16), SamplingParams(), None)
    n = int(full.info["lattice_len"])
    assert int(full.limit) == n and full.size == 6
    for budget in (0, 1, 3):
        draft = s.draft(step_of(s, prompt, budget), SamplingParams(), None)
        assert int(draft.limit) == min(n, budget) and torch.equal(draft.tokens, full.tokens)


def _first_two(tokens, n_acc, nxt):
    """Committed token 1, and token 2 on the rows whose token 1 was the draft's (n_acc ≥ 1)."""
    x1 = torch.where(n_acc >= 1, tokens[0], nxt)
    x2 = torch.where(n_acc >= 2, tokens[1], nxt)[n_acc >= 1]
    return x1, x2


def test_cps_point_mass_is_lossless(world, proxy_of, drafter_of):
    """χ² (temperature 1, top-k 3) on the engine's rejection rule fed the strategy's real CPS draft: with
    point-mass q the first committed token follows p_1 and the second, after an accepted first, follows p_2.
    Control: the same path verified with the drafter marginals q_j (the combination diffuspec refuses) drifts
    away from p whenever that q is far from a point mass."""
    from specdiff2.decode.acceptance.core import rejection_accept

    _, verifier, tok = world
    params, gen = SamplingParams(1.0, 3), torch.Generator().manual_seed(0)
    s = strategy(drafter_of(), proxy_of("ngram"), cps_sampling="point_mass", adl=False)
    prepared(world, s, params)
    prompt = encoded(tok, 0)
    step = step_of(s, prompt, 4)
    draft = s.draft(step, params, gen)
    n, batch = int(draft.limit), 8000  # only the first `limit` tokens can be accepted
    assert n >= 2
    tokens, q_point = draft.tokens[:n], draft.q_probs[:n]
    with torch.no_grad():
        ids = torch.cat([step.seq[: len(prompt)], tokens])
        logits = verifier.model(ids[None], torch.arange(ids.shape[0])[None])[0, len(prompt) - 1:]  # (n+1, V)
        window = torch.full((draft.size,), s.drafter.mask_token_id)
        q_marginal = params.probs(s.drafter.window_logits(step.seq, len(prompt), window))[:n]
    p = params.probs(logits.double())  # (n+1, V)
    vocab = p.shape[-1]

    def run(q):
        n_acc, nxt = rejection_accept(tokens.expand(batch, n), q.double().expand(batch, n, vocab),
                                      p.expand(batch, n + 1, vocab), gen)
        x1, x2 = _first_two(tokens, n_acc, nxt)
        return torch.bincount(x1, minlength=vocab).double(), torch.bincount(x2, minlength=vocab).double()

    c1, c2 = run(q_point)
    assert chi2_fits(c1, p[0]) and (c2.sum() < 50 or chi2_fits(c2, p[1]))
    # Exact law of token 1 under the marginal q: accept π with min(1, p/q), else the residual of p − q.
    pi, qm = int(tokens[0]), q_marginal[0].double()
    accept = min(1.0, float(p[0, pi] / qm[pi]))
    residual = (p[0] - qm).clamp_min(0)
    law = (1 - accept) * residual / residual.sum()
    law[pi] += accept
    if 0.5 * float((law - p[0]).abs().sum()) > 0.05:
        assert not chi2_fits(run(q_marginal)[0], p[0])


def test_temperature_draft_modes(world, proxy_of, drafter_of):
    """T > 0: cps_sampling=sample draws from the warped q and hands that q over (specdiff's lossless path, χ²
    in test_engine.py); point_mass hands over one-hot q at the (T = 0) CPS path."""
    params, gen = SamplingParams(1.0, 3), torch.Generator().manual_seed(0)
    prompt = encoded(world[2], 1)
    drafts = {}
    for mode in ("sample", "point_mass"):
        s = strategy(drafter_of(), proxy_of("ngram"), cps_sampling=mode, adl=False)
        prepared(world, s, params)
        step = step_of(s, prompt, 6)
        drafts[mode] = s.draft(step, params, gen)
        drafts[mode + "_greedy"] = s.draft(step, SamplingParams(), gen)
        logits = s.drafter.window_logits(step.seq, len(prompt), torch.full((6,), s.drafter.mask_token_id))
    assert torch.allclose(drafts["sample"].q_probs, params.probs(logits))
    point = drafts["point_mass"]
    assert torch.equal(point.tokens, drafts["point_mass_greedy"].tokens)
    assert torch.equal(point.q_probs, torch.nn.functional.one_hot(point.tokens, point.q_probs.shape[-1]).float())


@pytest.mark.slow  # ~3 s each; the every-option engine χ² (test_engine, slow) and the rule laws cover it too
@pytest.mark.parametrize("cps_sampling", ["point_mass", "sample"])
def test_sampled_tokens_follow_the_verifier(world, proxy_of, drafter_of, cps_sampling):
    """The whole engine at T = 1 (ADL, CPS, lattice end, limit < window): χ² on the joint of the first two committed
    tokens against p(x1)·p(x2|x1), top-k 3. Three new tokens: a budget of 2, so both may be draft tokens."""
    _, verifier, tok = world
    params = SamplingParams(1.0, 3)
    # λ = 0.9 and this prompt: the CPS path's first token is often the verifier's (on the other prompts the tiny
    # n-gram leads the path elsewhere, and a point mass is then never accepted).
    s = strategy(drafter_of(), proxy_of("ngram"), cps_sampling=cps_sampling, lam=0.9)
    eng = DecodeEngine(verifier, tok, s, RejectionRule(), params)
    prompt = encoded(tok, 1)
    cells, law = first_two_law(verifier.model, params, prompt)
    counts, gens = first_two_counts(eng, prompt, cells, 200, max_new=3)
    assert sum(g.steps[0][0] for g in gens) > 0  # drafts were accepted: the test exercises the draft, not only the bonus token
    assert chi2_fits(counts, law)


NOSYNC = [  # (cps, adl, proxy, temperature, cps_sampling)
    (False, False, "ngram", 0.0, "sample"), (True, False, "ngram", 0.0, "sample"),
    (False, True, "ngram", 0.0, "sample"), (True, True, "ngram", 0.0, "sample"),
    (True, True, "ngram_per_step", 0.0, "sample"), (True, True, "ar", 0.0, "sample"),
    (True, True, "ngram", 1.0, "point_mass"), (True, True, "ar", 1.0, "point_mass"),
    (True, False, "ngram", 1.0, "point_mass"), (True, True, "ngram", 1.0, "sample"),
]


@pytest.mark.parametrize("cps,adl,proxy,temperature,cps_sampling", NOSYNC)
def test_a_step_never_syncs_with_the_host(world, proxy_of, drafter_of, cps, adl, proxy, temperature, cps_sampling):
    """What makes the step capturable as CUDA graphs: no .item()/nonzero anywhere in draft → commit."""
    s = strategy(drafter_of(), proxy_of(proxy), cps=cps, adl=adl, cps_sampling=cps_sampling)
    assert s.capturable
    eng = prepared(world, s, SamplingParams(temperature))
    assert engine_step_syncs(eng, encoded(world[2], 0)) == []


def test_bad_inputs_give_one_line_errors(world, tmp_path):
    proxy = NGramProxy(NGramModel.build(torch.arange(10) % 4, 2, 8))
    ctx = ctx_of(world)
    cases = [
        (lambda: strategy(None, proxy, tau=0.0), "tau"),
        (lambda: strategy(None, proxy, tau=1.5), "tau"),
        (lambda: strategy(None, proxy, gamma_min=9, gamma_max=4), "gamma_min"),
        (lambda: strategy(None, proxy, beam=0), "beam"),
        (lambda: strategy(None, proxy, lam=1.5), "lam"),
        (lambda: strategy(None, proxy, m_max=0), "m_max"),
        (lambda: strategy(None, proxy, rho=0.0), "rho"),
        (lambda: strategy(None, proxy, gamma=20), "gamma_max"),
        (lambda: strategy(None, proxy, cps_sampling="marginal"), "cps_sampling"),
        (lambda: strategy(None, None), "proxy"),
        (lambda: load_ngram_proxy(ctx, str(tmp_path), order=0), "order"),
        (lambda: load_ngram_proxy(ctx, str(tmp_path / "nope")), "does not exist"),
        (lambda: load_ngram_proxy(ctx, str(tmp_path)), "token dataset"),
        (lambda: proxy.prepare(ctx, 2, 8), "smaller than the verifier"),
        (lambda: ARProxy(torch.nn.Linear(1, 1), None).prepare(ctx, 16, 30), "draft slots"),
    ]
    try:
        import kenlm  # noqa: F401
    except ImportError:
        cases.append((lambda: KenLMProxy(str(tmp_path / "lm.arpa"), ctx), "kenlm"))
    for fn, needle in cases:
        with pytest.raises(SpecDiffError) as err:
            fn()
        assert needle in str(err.value) and "\n" not in str(err.value), (needle, str(err.value))
