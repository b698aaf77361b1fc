"""Issue 13 items 1-2: every decode method near the context limit equals `ar` greedy with the same limit.

Each method is composed through the real conf/decode option (as decode.py does) on the random-init tiny world,
with a static cache of `max_seq_len` slots only a few tokens past the prompt: +1 (room for exactly one token),
+2, +5, +17, and a room smaller than self-selection's trie (K·γ nodes) but larger than its depth γ. No IndexError, prompt + output never passes max_seq_len, and the tokens are `ar`'s with the same
limit (which are the unlimited greedy tokens cut at the limit).
"""

from __future__ import annotations

import pytest
import torch

from specdiff2.bench.common import compose, engine_from_config
from specdiff2.decode.loading import load_verifier
from specdiff2.models.refs import CheckpointRef

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = torch.device("cpu")
TEXTS = ["def add(a, b):\n    return", "import os\nimport sys\n\n"]
K, GAMMA = 4, 6  # self_select: a trie of up to K·γ = 24 nodes
EXTRA_ROOM = (pytest.param(1, marks=pytest.mark.slow), pytest.param(2, marks=pytest.mark.slow),
              pytest.param(5, marks=pytest.mark.slow),
              pytest.param(17, marks=pytest.mark.slow), 2 * GAMMA + 3)  # the last: γ < room < K·γ, the trie must be cut
MAX_NEW = 64  # far past every limit: the context, not max_new_tokens, ends each generation
METHODS = {
    "ar": [],
    "sd_ar": ["decode.strategy.gamma=5"],
    "specdiff": ["decode.strategy.gamma=6"],
    "specdiff_causal": ["decode=specdiff", "decode.strategy.gamma=6", "drafter.path={causal_drafter}"],
    "self_select": [f"decode.strategy.k={K}", f"decode.strategy.gamma={GAMMA}"],
    "self_select_causal": ["decode=self_select", f"decode.strategy.k={K}", f"decode.strategy.gamma={GAMMA}",
                           "drafter.path={causal_drafter}"],
    "diffuspec": ["decode.strategy.gamma=6", "decode.strategy.gamma_min=2", "decode.strategy.gamma_max=8",
                  "decode.strategy.delta=2", "decode/proxy@decode.models.proxy=ngram",
                  "decode.models.proxy.source={tokens}",
                  "decode.models.proxy.cache_path={tmp}/ngram.safetensors"],
}


def overrides(world, tmp, method: str, max_seq_len: int) -> list[str]:
    extra = [o.format(causal_drafter=world.causal_drafter, tokens=world.tokens, tmp=tmp) for o in METHODS[method]]
    if not any(o.startswith("decode=") for o in extra):
        extra.insert(0, f"decode={method}")
    return [f"verifier.path={world.verifier}", "verifier.pocket=false", f"drafter.path={world.drafter}",
            "drafter.pocket=false", f"ar_drafter.path={world.ar_drafter}", "ar_drafter.pocket=false",
            "device=cpu", "temperature=0", f"max_seq_len={max_seq_len}", *extra]


@pytest.fixture(scope="module")
def setup(tiny_world, tmp_path_factory):
    tok = load_verifier(CheckpointRef("verifier", str(tiny_world.verifier)), CPU, 256)[1]
    prompts = [tok(t, add_special_tokens=False)["input_ids"] for t in TEXTS]
    unlimited = engine_from_config(compose("decode", overrides(tiny_world, "", "ar", 256)))
    reference = {tuple(p): unlimited.generate(p, MAX_NEW).token_ids for p in prompts}
    return tiny_world, tmp_path_factory.mktemp("ctx"), prompts, reference


@pytest.mark.parametrize("extra_room", EXTRA_ROOM)
def test_every_method_equals_ar_at_the_context_limit(setup, extra_room):
    world, tmp, prompts, reference = setup
    for prompt in prompts:
        cap = len(prompt) + extra_room
        verifier, tok = load_verifier(CheckpointRef("verifier", str(world.verifier)), CPU, cap)
        outputs = {}
        for method in METHODS:
            cfg = compose("decode", overrides(world, tmp, method, cap))
            eng = engine_from_config(cfg, verifier, tok)
            gen = eng.generate(list(prompt), MAX_NEW)
            assert len(prompt) + len(gen.token_ids) <= cap, (method, cap, len(gen.token_ids))
            outputs[method] = gen.token_ids
        ar = outputs["ar"]
        full = reference[tuple(prompt)]
        assert ar == full[: len(ar)], "ar with a limit must be unlimited ar cut at the limit"
        if tok.eos_token_id not in ar:
            assert len(prompt) + len(ar) == cap, "ar stops only at the limit (no EOS in its output)"
        for method, tokens in outputs.items():
            assert tokens == ar, f"{method} differs from ar at max_seq_len={cap} (prompt {len(prompt)} tokens)"


def test_the_sweep_reaches_accepted_drafts_and_a_cut_trie(setup):
    """The sweep is not vacuous: near the limit drafts are accepted (not only bonus tokens), and the trie of
    self-selection is larger than the room left, so the engine had to cut it."""
    world, tmp, prompts, _ = setup
    prompt = prompts[0]
    cap = len(prompt) + EXTRA_ROOM[-1]
    assert GAMMA < EXTRA_ROOM[-1] < K * GAMMA
    verifier, tok = load_verifier(CheckpointRef("verifier", str(world.verifier)), CPU, cap)
    for method in ("specdiff_causal", "self_select_causal"):
        eng = engine_from_config(compose("decode", overrides(world, tmp, method, cap)), verifier, tok)
        sizes = []  # (nodes drafted, cache slots left after the committed tokens)
        draft = eng.strategy.draft

        def recording(step, sampling, generator, draft=draft, sizes=sizes):
            out = draft(step, sampling, generator)
            sizes.append((out.size, cap - int(step.length)))
            return out

        eng.strategy.draft = recording
        gen = eng.generate(list(prompt), MAX_NEW)
        assert gen.metrics["verifier_steps"] < len(gen.token_ids), (method, gen.metrics)
        if method.startswith("self_select"):
            assert any(nodes > room - 1 for nodes, room in sizes), sizes  # the layout did not fit: depth cut
