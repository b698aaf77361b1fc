"""DiffuSpec's pieces on toy inputs: lattice (τ cut, M_max cap, EOS rules), the fixed-shape CPS beam search (against
brute force and against the previous host search), the device ADL, the n-gram model and the KenLM proxy."""

import itertools
import math
from collections import Counter

import pytest
import torch

from specdiff2.decode.diffuspec.adl import ADL
from specdiff2.decode.diffuspec.cps import Lattice, beam_search, build_lattice, lattice_end
from specdiff2.decode.diffuspec.ngram import NGramModel
from specdiff2.decode.diffuspec.proxies import KenLMProxy, NGramProxy
from specdiff2.decode.strategies.base import EngineContext, StepInput
from specdiff2.errors import SpecDiffError

EOS, OTHER_STOP = 9, 8


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
    [(OTHER_STOP, 1.0)],
])


def _sets(lattice: Lattice) -> list[list[int]]:
    return [row[ok].tolist() for row, ok in zip(lattice.ids, lattice.valid)]


def _end(logits, stops, k) -> tuple[int, int]:
    n, l_gen = lattice_end(logits, torch.tensor(stops), torch.tensor(k))
    return int(n), int(l_gen)


def test_lattice_end_on_the_device():
    """n = first stop argmax + 1 (else k), L^gen = its index (else k); only positions < k count."""
    assert _end(LATTICE, [EOS], 5) == (4, 3)
    assert _end(LATTICE, [EOS, OTHER_STOP], 5) == (4, 3)  # the first stop of any id
    assert _end(LATTICE, [OTHER_STOP], 5) == (5, 4)
    assert _end(LATTICE, [EOS], 3) == (3, 3)  # past k_t: not a lattice end
    assert _end(LATTICE, [OTHER_STOP], 4) == (4, 4)
    assert _end(LATTICE[3:], [EOS], 2) == (1, 0)  # EOS ranked first: an empty L^gen, one lattice position


def test_lattice_cut_cap_and_eos():
    end = _end(LATTICE, [EOS], 5)[0]
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


def _step(seq, length) -> StepInput:
    return StepInput(seq, torch.tensor(length), torch.tensor(0), 0)


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
            proxy.begin(_step(seq, len(prefix)), lattice.ids)
            got, _, got_score = beam_search(lattice, proxy.logprobs, lam, beam=3 ** 4)
            assert got.tolist() == tokens and math.isclose(float(got_score), score, rel_tol=1e-5, abs_tol=1e-5)
    if lam == 1.0:  # no proxy: the argmax of q on every position
        assert beam_search(lattice, None, 1.0, 1)[1].tolist() == [0] * 4


def _previous_beam_search(lattice: Lattice, proxy_fn, lam: float, beam: int):
    """The host search this module replaced (beams grow from 1 to B), verbatim: the reference."""
    L, M = lattice.ids.shape
    dev = lattice.ids.device
    q_term = torch.where(lattice.valid, lam * lattice.logq.masked_fill(~lattice.valid, 0.0), float("-inf"))  # (L, M)
    idx = torch.zeros(1, 0, dtype=torch.long, device=dev)  # (W, i) candidate index per position
    tokens = torch.zeros(1, 0, dtype=torch.long, device=dev)  # (W, i)
    score = torch.zeros(1, device=dev)  # (W,)
    for i in range(L):
        step = q_term[i][None]  # (1, M)
        if lam < 1:
            step = step + (1 - lam) * proxy_fn(i, idx, tokens)  # (W, M)
        total = (score[:, None] + step).flatten()  # (W·M,)
        top = total.topk(min(beam, total.numel()))  # sorted: beam 0 is the best
        parent, child = top.indices // M, top.indices % M  # (W',)
        idx = torch.cat([idx[parent], child[:, None]], 1)
        tokens = torch.cat([tokens[parent], lattice.ids[i][child][:, None]], 1)
        score = top.values
    return tokens[0], idx[0], score[0]


@pytest.mark.parametrize("lam", [0.0, 0.5, 1.0])
def test_fixed_shape_search_equals_the_previous_search(lam):
    """Any beam width (narrower than the path count: not exact, but the same heuristic), any lattice end n: the
    path < n is the previous search's over lattice[:n], and positions ≥ n hold the argmax candidate. Lattices
    without tied scores (where the previous result is defined)."""
    gen = torch.Generator().manual_seed(2)
    vocab, L, M = 9, 6, 4
    bigram = torch.randn(vocab, vocab, generator=gen).log_softmax(-1)
    model = NGramModel.build(torch.randint(0, vocab, (300,), generator=gen), order=3, vocab=vocab)
    seq = torch.tensor([4, 7] + [0] * 8)
    for trial in range(6):
        lattice = _random_lattice(gen, L, M, vocab)

        def table_fn(i, idx, tokens, lattice=lattice):
            last = tokens[:, -1] if tokens.shape[1] else torch.full((tokens.shape[0],), 7)  # (W,)
            return bigram[last][:, lattice.ids[i]]  # (W, M)

        proxy = NGramProxy(model)
        proxy.begin(_step(seq, 2), lattice.ids)
        # At λ = 0 the n-gram alone ties unseen tokens, and topk breaks ties in no defined order: left out.
        fns = (table_fn, proxy.logprobs) if lam > 0 else (table_fn,)
        for fn, beam in itertools.product(fns, (1, 2, 3, 5)):
            for n in range(1, L + 1):
                cut = Lattice(lattice.ids[:n], lattice.logq[:n], lattice.valid[:n])
                want, want_idx, want_score = _previous_beam_search(cut, fn, lam, beam)
                got, got_idx, got_score = beam_search(lattice, fn, lam, beam, torch.tensor(n))
                assert got[:n].tolist() == want.tolist() and got_idx[:n].tolist() == want_idx.tolist()
                assert got[n:].tolist() == lattice.ids[n:, 0].tolist() and torch.isfinite(got_score)
                assert math.isclose(float(got_score), float(want_score), rel_tol=1e-5, abs_tol=1e-5)
            assert beam_search(lattice, fn, lam, beam)[0].tolist() == want.tolist()  # n = L, as the default


def test_dead_beams_never_make_nan():
    """λ = 0 with −inf q entries, more beams than paths, dead beams from position 0: finite best score."""
    lattice = Lattice(torch.tensor([[1, 2], [3, 4]]), torch.tensor([[0.0, float("-inf")], [-0.1, float("-inf")]]),
                      torch.tensor([[True, False], [True, False]]))
    for lam in (0.0, 0.5, 1.0):
        tokens, _, score = beam_search(lattice, lambda i, idx, tok: torch.zeros(idx.shape[0], 2), lam, 4)
        assert tokens.tolist() == [1, 3] and torch.isfinite(score)


def test_adl_update_rule_by_hand():
    adl = ADL(gamma_init=8, gamma_min=2, gamma_max=12, delta=4, rho=0.5, device="cpu")
    assert int(adl.gamma) == 8
    live, stopped = torch.tensor(True), torch.tensor(False)
    # (L^gen, L^acc) → (L̄^gen, L̄^acc, k_{t+1}), worked out by hand.
    steps = [
        ((8, 8), (4.0, 4.0, 8)),  # acc ≥ gen: ⌊4⌋ + 4
        ((8, 8), (6.0, 6.0, 10)),
        ((10, 3), (8.0, 4.5, 8)),  # acceptance falls behind: no growth
        ((3, 4), (5.5, 4.25, 5)),  # EOS at position 4 of the argmax, EOS accepted too
        ((0, 0), (2.75, 2.125, 2)),  # EOS ranked first: clipped at gamma_min (k_min)
        ((2, 3), (2.375, 2.5625, 6)),  # acc ≥ gen again: ⌊2.375⌋ + 4
        ((30, 30), (16.1875, 16.28125, 12)),  # clipped at gamma_max (k_max)
    ]
    k = adl.gamma
    for (l_gen, l_acc), (gen, acc, k_next) in steps:
        adl.update(torch.tensor(l_gen), torch.tensor(l_acc), live)
        assert (float(adl.gen_ema), float(adl.acc_ema), int(adl.gamma)) == (gen, acc, k_next)
        adl.update(torch.tensor(0), torch.tensor(0), stopped)  # a step after the stop: no change
        assert (float(adl.gen_ema), float(adl.acc_ema), int(adl.gamma)) == (gen, acc, k_next)
    assert adl.gamma is k and adl.tensors()[0] is k  # updated in place: captured steps hold these addresses
    adl.reset()
    assert (int(adl.gamma), float(adl.gen_ema), float(adl.acc_ema)) == (8, 0.0, 0.0) and adl.gamma is k


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
    proxy.prepare(ctx, 2, 2)
    assert not proxy.capturable  # a host library: the engine steps eagerly
    cands, none = torch.tensor([[5, 6, 0], [5, 6, 0]]), torch.zeros(1, 0, dtype=torch.long)

    def log10(i, beam_tokens):
        return (proxy.logprobs(i, beam_tokens, beam_tokens) / math.log(10)).flatten().tolist()

    proxy.begin(_step(torch.tensor([0, 5]), 2), cands)  # "<s> 5": p(5|5) = bo(5)+p(5), p(6|5), p(</s>|5)
    assert log10(0, none) == pytest.approx([-0.8, -0.2, -0.7])
    assert log10(1, torch.tensor([[6], [5]])) == pytest.approx([-0.4, -0.8, -0.6, -0.8, -0.2, -0.7])
    proxy.begin(_step(torch.tensor([0, 6]), 1), cands)  # context ends in EOS: restart at <s>
    assert log10(0, none) == pytest.approx([-0.3, -1.0, -0.8])


def test_ngram_errors_are_one_line(tmp_path):
    cases = [
        (lambda: NGramModel.build(torch.tensor([1, 2, 30, 4]), 2, vocab=8), "outside the vocabulary"),
        (lambda: NGramModel.build(torch.arange(10), 4, vocab=152064), "overflows"),
        (lambda: NGramModel.load(tmp_path / "missing.safetensors"), "no n-gram model"),
    ]
    for fn, needle in cases:
        with pytest.raises(SpecDiffError) as err:
            fn()
        assert needle in str(err.value) and "\n" not in str(err.value), (needle, str(err.value))
