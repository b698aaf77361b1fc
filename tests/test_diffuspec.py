"""DiffuSpec: lattice (τ cut, M_max cap, EOS rules), CPS beam search, ADL, the n-gram proxy, losslessness."""

import itertools
import math
from collections import Counter

import pytest
import torch

from specdiff2.data.token_streams import load_ngram_proxy
from specdiff2.decode.diffuspec.adl import ADLController
from specdiff2.decode.diffuspec.cps import Lattice, beam_search, build_lattice, first_eos
from specdiff2.decode.diffuspec.ngram import NGramModel
from specdiff2.decode.diffuspec.proxies import KenLMProxy, NGramProxy
from specdiff2.decode.diffuspec.strategy import DiffuSpecStrategy
from specdiff2.decode.engine import DecodeEngine
from specdiff2.decode.loading import engine_context, load_ar_proxy, load_diffusion_drafter, load_verifier
from specdiff2.decode.rules import GreedyRule, RejectionRule
from specdiff2.decode.sampling import SamplingParams
from specdiff2.decode.strategies.ar import Autoregressive
from specdiff2.decode.strategies.base import EngineContext
from specdiff2.errors import SpecDiffError
from specdiff2.models.refs import CheckpointRef
from tests.stats import chi2_fits

pytestmark = pytest.mark.usefixtures("one_thread")
EOS = 9


def _logits(rows: list[list[float]], vocab: int = 10) -> torch.Tensor:
    probs = torch.zeros(len(rows), vocab)
    for i, row in enumerate(rows):
        for token, p in row:
            probs[i, token] = p
    return probs.log()  # zeros → −inf: tokens the drafter may not propose


LATTICE = _logits([
    [(0, 0.5), (1, 0.2), (2, 0.15), (3, 0.1), (4, 0.05)],  # τ set {0,1,2}; no EOS anywhere
    [(3, 0.6), (EOS, 0.3), (4, 0.1)],  # EOS inside the τ set: kept
    [(5, 0.85), (EOS, 0.1), (6, 0.05)],  # EOS outside the τ set: not forced in
    [(EOS, 0.85), (7, 0.15)],  # EOS ranks first: the lattice ends after this position
    [(8, 1.0)],
])


def _sets(lattice: Lattice) -> list[list[int]]:
    return [row[ok].tolist() for row, ok in zip(lattice.ids, lattice.valid)]


def test_lattice_cut_cap_and_eos():
    assert first_eos(LATTICE, EOS) == 3 and first_eos(LATTICE[:3], EOS) is None
    end = first_eos(LATTICE, EOS) + 1
    assert _sets(build_lattice(LATTICE[:end], 0.8, 15)) == [[0, 1, 2], [3, EOS], [5], [EOS]]
    assert _sets(build_lattice(LATTICE[:end], 0.8, 2)) == [[0, 1], [3, EOS], [5], [EOS]]  # M_max cap
    # τ = 1 keeps every token the drafter gives mass to, never the q = 0 ones.
    assert _sets(build_lattice(LATTICE[:end], 1.0, 15)) == [[0, 1, 2, 3, 4], [3, EOS, 4], [5, EOS, 6], [EOS, 7]]
    assert _sets(build_lattice(LATTICE[:end], 0.5, 15)) == [[0], [3], [5], [EOS]]  # top token always stays
    lat = build_lattice(LATTICE[:1], 0.8, 15)
    assert torch.allclose(lat.logq[0, :3].exp(), torch.tensor([0.5, 0.2, 0.15]))


def _random_lattice(gen, L=4, M=3, vocab=7) -> Lattice:
    ids = torch.stack([torch.randperm(vocab, generator=gen)[:M] for _ in range(L)])  # (L, M) distinct per row
    logq = torch.rand(L, M, generator=gen).log_softmax(-1).sort(-1, descending=True).values
    valid = torch.rand(L, M, generator=gen) < 0.7
    valid[:, 0] = True
    return Lattice(ids, logq, valid)


def _brute_force(lattice: Lattice, lam: float, proxy_lp):
    """max over every valid path of Σ λ log q + (1−λ) proxy_lp(history, token)."""
    L, M = lattice.ids.shape
    best = (-math.inf, None)
    for path in itertools.product(range(M), repeat=L):
        if not all(lattice.valid[i, a] for i, a in enumerate(path)):
            continue
        tokens = [int(lattice.ids[i, a]) for i, a in enumerate(path)]
        score = sum(lam * float(lattice.logq[i, a]) + (1 - lam) * proxy_lp(tokens[:i], tokens[i])
                    for i, a in enumerate(path))
        best = max(best, (score, tokens))
    return best


@pytest.mark.parametrize("lam", [0.0, 0.5, 1.0])
def test_beam_search_finds_the_best_path(lam):
    gen = torch.Generator().manual_seed(1)
    vocab, prefix = 7, [3, 5]
    trigram = torch.randn(vocab, vocab, vocab, generator=gen).log_softmax(-1)  # log p(c | a, b)
    model = NGramModel.build(torch.randint(0, vocab - 1, (400,), generator=gen), order=3, vocab=vocab)
    seq = torch.tensor(prefix + [0] * 8)
    for trial in range(5):
        lattice = _random_lattice(gen)

        def table_fn(i, idx, tokens, lattice=lattice):
            ctx = torch.cat([torch.tensor(prefix).expand(tokens.shape[0], 2), tokens], 1)[:, -2:]  # (W, 2)
            return trigram[ctx[:, 0], ctx[:, 1]][:, lattice.ids[i]]  # (W, M)

        def table_lp(history, token):
            a, b = (prefix + history)[-2:]
            return float(trigram[a, b, token])

        score, tokens = _brute_force(lattice, lam, table_lp)
        got, idx, got_score = beam_search(lattice, table_fn, lam, beam=3 ** 4)  # beam ≥ #paths: exact
        assert got.tolist() == tokens and math.isclose(float(got_score), score, rel_tol=1e-5, abs_tol=1e-5)
        assert lattice.ids.gather(1, idx[:, None])[:, 0].tolist() == tokens

        # The n-gram proxy scores the same paths whether it precomputes the lattice table or queries per step.
        def ngram_lp(history, token):
            ctx = torch.tensor([(prefix + history)[-2:]])
            return float(model.logprob(ctx, torch.tensor([[token]]))[0, 0])

        score, tokens = _brute_force(lattice, lam, ngram_lp)
        for limit in (1 << 22, 0):
            proxy = NGramProxy(model, table_limit=limit)
            proxy.begin(seq, len(prefix), lattice.ids)
            got, _, got_score = beam_search(lattice, proxy.logprobs, lam, beam=3 ** 4)
            assert got.tolist() == tokens and math.isclose(float(got_score), score, rel_tol=1e-5, abs_tol=1e-5)
    if lam == 1.0:  # no proxy: the argmax of q on every position
        assert beam_search(lattice, None, 1.0, 1)[1].tolist() == [0] * 4


def test_adl_update_rule_by_hand():
    adl = ADLController(k_init=8, k_min=2, k_max=12, delta=4, rho=0.5)
    assert adl.k == 8
    # (L^gen, L^acc) → (L̄^gen, L̄^acc, k_{t+1}), worked out by hand.
    steps = [
        ((8, 8), (4.0, 4.0, 8)),  # acc ≥ gen: ⌊4⌋ + 4
        ((8, 8), (6.0, 6.0, 10)),
        ((10, 3), (8.0, 4.5, 8)),  # acceptance falls behind: no growth
        ((3, 4), (5.5, 4.25, 5)),  # EOS at position 4 of the argmax, EOS accepted too
        ((0, 0), (2.75, 2.125, 2)),  # EOS ranked first: clipped at k_min
        ((2, 3), (2.375, 2.5625, 6)),  # acc ≥ gen again: ⌊2.375⌋ + 4
        ((30, 30), (16.1875, 16.28125, 12)),  # clipped at k_max
    ]
    for (l_gen, l_acc), (gen, acc, k) in steps:
        assert adl.update(l_gen, l_acc) == k
        assert (adl.gen_ema, adl.acc_ema, adl.k) == (gen, acc, k)
    adl.reset()
    assert (adl.k, adl.gen_ema, adl.acc_ema) == (8, 0.0, 0.0)


# --- n-gram model ---------------------------------------------------------------------------------------


def _reference_kn(stream: list[int], order: int, vocab: int):
    """Interpolated Kneser-Ney from Python Counters (the formulas of ngram.py's docstring)."""
    counts = {order: Counter(tuple(stream[i:i + order]) for i in range(len(stream) - order + 1))}
    for k in range(order - 1, 0, -1):
        counts[k] = Counter(g[1:] for g in counts[k + 1])  # continuation counts N1+(• g)
    disc = {}
    for k, c in counts.items():
        n1, n2 = sum(v == 1 for v in c.values()), sum(v == 2 for v in c.values())
        disc[k] = min(1.0, max(0.1, n1 / (n1 + 2 * n2) if n1 + n2 else 0.5))

    def prob(h: tuple, w: int) -> float:
        k = len(h) + 1
        if k == 1:
            c = counts[1]
            return (max(c[(w,)] - disc[1], 0) + disc[1] * len(c) / vocab) / sum(c.values())
        lower = prob(h[1:], w)
        ctx = {g: v for g, v in counts[k].items() if g[:-1] == h}
        total = sum(ctx.values())
        if total == 0:
            return lower
        return (max(counts[k][h + (w,)] - disc[k], 0) + disc[k] * len(ctx) * lower) / total

    return prob, [disc[k] for k in range(1, order + 1)]


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_ngram_normalises_and_matches_counts(order):
    gen = torch.Generator().manual_seed(order)
    vocab = 7  # ids 5 and 6 never occur: they live on the uniform floor
    base = torch.randint(0, 5, (60,), generator=gen)
    stream = torch.cat([base, base[:20], torch.randint(0, 5, (40,), generator=gen)])  # repeats: counts > 1
    model = NGramModel.build(stream, order=order, vocab=vocab)
    prob, disc = _reference_kn(stream.tolist(), order, vocab)
    assert model.discounts == pytest.approx(disc)
    contexts = [list(c) for c in itertools.product(range(-1, vocab), repeat=max(order - 1, 0))]
    ctx = torch.tensor(contexts, dtype=torch.long).view(len(contexts), max(order - 1, 0))  # −1 = before the text
    nxt = torch.arange(vocab).expand(len(contexts), vocab)
    p = model.probs(ctx, nxt)  # (C, V)
    assert torch.allclose(p.sum(-1), torch.ones(len(contexts)), atol=1e-5)
    assert (p > 0).all()
    for c, row in zip(contexts, p):
        h = tuple(c[max((j for j, t in enumerate(c) if t < 0), default=-1) + 1:])  # the known suffix
        want = torch.tensor([prob(h, w) for w in range(vocab)])
        assert torch.allclose(row, want.float(), rtol=1e-5, atol=1e-7), c


def test_ngram_save_load_and_build_once(tmp_path):
    stream = torch.randint(0, 6, (300,), generator=torch.Generator().manual_seed(0))
    calls = []

    def tokens():
        calls.append(1)
        return stream

    path = tmp_path / "ng.safetensors"
    a = NGramModel.build_cached(path, tokens, 3, 8, {"source": "toy"}, log=lambda *_: None)
    b = NGramModel.build_cached(path, tokens, 3, 8, {"source": "toy"}, log=lambda *_: None)
    assert len(calls) == 1 and path.is_file()
    ctx, nxt = torch.randint(0, 8, (5, 2)), torch.randint(0, 8, (5, 4))
    assert torch.equal(a.logprob(ctx, nxt), b.logprob(ctx, nxt))
    NGramModel.build_cached(path, tokens, 2, 8, {"source": "toy"}, log=lambda *_: None)  # other order: rebuilt
    assert len(calls) == 2 and NGramModel.load(path).order == 2


def test_ngram_file_is_safetensors_and_foreign_files_are_refused(tmp_path):
    """The cache holds tensors + JSON only (no pickle); anything else is one clear DataError."""
    model = NGramModel.build(torch.randint(0, 6, (200,), generator=torch.Generator().manual_seed(1)), 3, 8)
    model.save(tmp_path / "ng.safetensors")
    from safetensors import safe_open

    with safe_open(str(tmp_path / "ng.safetensors"), framework="pt") as f:
        assert "ngram" in f.metadata() and set(f.keys()) >= {"unigram_probs", "order3.keys"}
    torch.save({"format": "specdiff2-ngram-v1"}, tmp_path / "old.pt")  # a pickle-based file
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 64)
    for bad in ("old.pt", "junk.safetensors"):
        with pytest.raises(SpecDiffError, match="not a readable n-gram model"):
            NGramModel.load(tmp_path / bad)


# --- the strategy on the tiny random-init checkpoints ------------------------------------------------------


@pytest.fixture(scope="module")
def world(tiny_world):
    # A short static cache: CPU attention cost scales with it, and prompt + 24 tokens + a draft fit in 64.
    verifier, tok = load_verifier(CheckpointRef("verifier", str(tiny_world.verifier)), torch.device("cpu"), 64)
    return tiny_world, verifier, tok


def ctx_of(world) -> EngineContext:
    return engine_context(world[1], world[2])


@pytest.fixture(scope="module")
def ngram_proxy(world, tmp_path_factory):
    w = world[0]
    proxy = load_ngram_proxy(ctx_of(world), str(w.tokens), order=3,
                             cache_path=str(tmp_path_factory.mktemp("ngram") / "tiny.safetensors"))
    proxy.prepare(ctx_of(world), beam=2)
    return proxy


@pytest.fixture(scope="module")
def drafter_of(world):
    ref = CheckpointRef("drafter", str(world[0].drafter), logit_shift=True)
    return lambda: load_diffusion_drafter(ref, ctx_of(world))


def strategy(drafter, proxy, **kw):
    args = {"k": 6, "k_min": 2, "k_max": 8, "delta": 3, "m_max": 4, "beam": 2, "proxy": proxy}
    return DiffuSpecStrategy(drafter, **{**args, **kw})


PROMPTS = ["def add(a, b):\n    return", "import os\nimport sys\n\n", "class Foo:\n    def __init__(self"]


@pytest.fixture(scope="module")
def greedy_reference(world):
    _, verifier, tok = world
    ar = DecodeEngine(verifier, tok, Autoregressive(), GreedyRule(), SamplingParams())
    encoded = [tok(t, add_special_tokens=False)["input_ids"] for t in PROMPTS]
    return {tuple(p): ar.generate(p, 24).token_ids for p in encoded}


@pytest.mark.parametrize("cps,adl,proxy", [(False, False, "ngram"), (True, False, "ngram"), (False, True, "ngram"),
                                           (True, True, "ngram"), (True, True, "ar")])
def test_greedy_output_equals_verifier_greedy(world, ngram_proxy, drafter_of, greedy_reference, cps, adl, proxy):
    w, verifier, tok = world
    chosen = ngram_proxy if proxy == "ngram" else load_ar_proxy(CheckpointRef("ar_drafter", str(w.ar_drafter)),
                                                                ctx_of(world))
    eng = DecodeEngine(verifier, tok, strategy(drafter_of(), chosen, cps=cps, adl=adl), GreedyRule(), SamplingParams())
    for p, ref in greedy_reference.items():
        gen = eng.generate(list(p), 24)
        assert gen.token_ids == ref
        m = gen.metrics
        assert m["mean_draft_len"] <= (8 if adl else 6) and m["mean_lattice_len"] <= m["mean_draft_len"]


def _first_two(tokens, n_acc, nxt):
    """Committed token 1, and token 2 on the rows whose token 1 was the draft's (n_acc ≥ 1)."""
    x1 = torch.where(n_acc >= 1, tokens[0], nxt)
    x2 = torch.where(n_acc >= 2, tokens[1], nxt)[n_acc >= 1]
    return x1, x2


def test_cps_point_mass_is_lossless(world, ngram_proxy, drafter_of):
    """χ² (temperature 1, top-k 3) on the engine's rejection rule fed the strategy's real CPS draft: with
    point-mass q the first committed token follows p_1 and the second, after an accepted first, follows p_2.
    Control: the same path verified with the drafter marginals q_j (the combination diffuspec refuses) drifts
    away from p whenever that q is far from a point mass."""
    from specdiff2.decode.acceptance import rejection_accept

    w, verifier, tok = world
    params, gen = SamplingParams(1.0, 3), torch.Generator().manual_seed(0)
    s = strategy(drafter_of(), ngram_proxy, cps_sampling="point_mass", adl=False)
    DecodeEngine(verifier, tok, s, RejectionRule(), params)  # prepares the strategy
    prompt = tok(PROMPTS[0], add_special_tokens=False)["input_ids"]
    seq = torch.tensor(prompt + [0] * 16)
    draft = s.draft(seq, len(prompt), 4, params, gen)
    n, batch = draft.size, 8000
    assert n >= 2
    with torch.no_grad():
        ids = torch.cat([seq[: len(prompt)], draft.tokens])
        logits = verifier.model(ids[None], torch.arange(ids.shape[0])[None])[0, len(prompt) - 1:]  # (n+1, V)
        q_marginal = params.probs(s.drafter.window_logits(seq, len(prompt), torch.full((n,), s.drafter.mask_token_id)))
    p = params.probs(logits.double())  # (n+1, V)
    vocab = p.shape[-1]

    def run(q):
        n_acc, nxt = rejection_accept(draft.tokens.expand(batch, n), q.double().expand(batch, n, vocab),
                                      p.expand(batch, n + 1, vocab), gen)
        x1, x2 = _first_two(draft.tokens, n_acc, nxt)
        return torch.bincount(x1, minlength=vocab).double(), torch.bincount(x2, minlength=vocab).double()

    c1, c2 = run(draft.q_probs)
    assert chi2_fits(c1, p[0]) and (c2.sum() < 50 or chi2_fits(c2, p[1]))
    # Exact law of token 1 under the marginal q: accept π with min(1, p/q), else the residual of p − q.
    pi, qm = int(draft.tokens[0]), q_marginal[0].double()
    accept = min(1.0, float(p[0, pi] / qm[pi]))
    residual = (p[0] - qm).clamp_min(0)
    law = (1 - accept) * residual / residual.sum()
    law[pi] += accept
    if 0.5 * float((law - p[0]).abs().sum()) > 0.05:
        assert not chi2_fits(run(q_marginal)[0], p[0])


def test_temperature_draft_modes(world, ngram_proxy, drafter_of):
    """T > 0: cps_sampling=sample draws from the warped q and hands that q over (specdiff's lossless path, χ²
    in test_engine.py); point_mass hands over one-hot q at the (T = 0) CPS path."""
    w, verifier, tok = world
    params, gen = SamplingParams(1.0, 3), torch.Generator().manual_seed(0)
    prompt = tok(PROMPTS[1], add_special_tokens=False)["input_ids"]
    seq = torch.tensor(prompt + [0] * 16)
    drafts = {}
    for mode in ("sample", "point_mass"):
        s = strategy(drafter_of(), ngram_proxy, cps_sampling=mode, adl=False)
        DecodeEngine(verifier, tok, s, RejectionRule(), params)  # prepare
        drafts[mode] = s.draft(seq, len(prompt), 6, params, gen)
        drafts[mode + "_greedy"] = s.draft(seq, len(prompt), 6, SamplingParams(), gen)
        logits = s.drafter.window_logits(seq, len(prompt), torch.full((6,), s.drafter.mask_token_id))
    n = drafts["sample"].size
    assert torch.allclose(drafts["sample"].q_probs, params.probs(logits[:n]))
    point = drafts["point_mass"]
    assert torch.equal(point.tokens, drafts["point_mass_greedy"].tokens)
    assert torch.equal(point.q_probs, torch.nn.functional.one_hot(point.tokens, point.q_probs.shape[-1]).float())


TOY_ARPA = """\\data\\
ngram 1=5
ngram 2=3

\\1-grams:
-1.0\t<unk>\t0
-99\t<s>\t-0.3
-0.5\t</s>\t0
-0.6\t5\t-0.2
-0.7\t6\t-0.1

\\2-grams:
-0.2\t5 6
-0.4\t6 5
-0.3\t<s> 5

\\end\\
"""


def test_kenlm_proxy_reads_arpa_with_backoff(tmp_path):
    """Hand-written bigram ARPA: seen bigrams, back-off to unigrams, our EOS as </s> and sentence restarts."""
    pytest.importorskip("kenlm")
    from types import SimpleNamespace

    (tmp_path / "toy.arpa").write_text(TOY_ARPA)
    ctx = EngineContext(SimpleNamespace(eos_token_id=0), 8, torch.device("cpu"), 16)
    proxy = KenLMProxy(str(tmp_path / "toy.arpa"), ctx)
    proxy.prepare(ctx, 2)
    cands, none = torch.tensor([[5, 6, 0], [5, 6, 0]]), torch.zeros(1, 0, dtype=torch.long)

    def log10(i, beam_tokens):
        return (proxy.logprobs(i, beam_tokens, beam_tokens) / math.log(10)).flatten().tolist()

    proxy.begin(torch.tensor([0, 5]), 2, cands)  # "<s> 5": p(5|5) = bo(5)+p(5), p(6|5), p(</s>|5) = bo(5)+p(</s>)
    assert log10(0, none) == pytest.approx([-0.8, -0.2, -0.7])
    assert log10(1, torch.tensor([[6], [5]])) == pytest.approx([-0.4, -0.8, -0.6, -0.8, -0.2, -0.7])
    proxy.begin(torch.tensor([0, 6]), 1, cands)  # context ends in EOS: restart at <s>
    assert log10(0, none) == pytest.approx([-0.3, -1.0, -0.8])


def test_bad_inputs_give_one_line_errors(world, tmp_path):
    proxy = NGramProxy(NGramModel.build(torch.arange(10) % 4, 2, 8))
    ctx = ctx_of(world)
    cases = [
        (lambda: strategy(None, proxy, tau=0.0), "tau"),
        (lambda: strategy(None, proxy, tau=1.5), "tau"),
        (lambda: strategy(None, proxy, k_min=9, k_max=4), "k_min"),
        (lambda: strategy(None, proxy, beam=0), "beam"),
        (lambda: strategy(None, proxy, lam=1.5), "lam"),
        (lambda: strategy(None, proxy, m_max=0), "m_max"),
        (lambda: strategy(None, proxy, rho=0.0), "rho"),
        (lambda: strategy(None, proxy, k=20), "k_max"),
        (lambda: strategy(None, proxy, cps_sampling="marginal"), "cps_sampling"),
        (lambda: strategy(None, None), "proxy"),
        (lambda: load_ngram_proxy(ctx, str(tmp_path), order=0), "order"),
        (lambda: load_ngram_proxy(ctx, str(tmp_path / "nope")), "does not exist"),
        (lambda: load_ngram_proxy(ctx, str(tmp_path)), "token dataset"),
        (lambda: NGramModel.build(torch.tensor([1, 2, 30, 4]), 2, vocab=8), "outside the vocabulary"),
        (lambda: NGramModel.build(torch.arange(10), 4, vocab=152064), "overflows"),
        (lambda: NGramModel.load(tmp_path / "missing.safetensors"), "no n-gram model"),
        (lambda: proxy.prepare(ctx, 2), "smaller than the verifier"),
    ]
    try:
        import kenlm  # noqa: F401
    except ImportError:
        cases.append((lambda: KenLMProxy(str(tmp_path / "lm.arpa"), ctx), "kenlm"))
    for fn, needle in cases:
        with pytest.raises(SpecDiffError) as err:
            fn()
        assert needle in str(err.value) and "\n" not in str(err.value), (needle, str(err.value))
