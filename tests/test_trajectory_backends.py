"""The vLLM trajectory backend's contract, on CPU against a stand-in with vLLM's API (tests/vllm_standin.py):
the arguments it passes, per-request seeds, the log-prob format it reads, and the store it writes."""

import sys

import pytest
import torch

from specdiff2.data.trajectories import GenerationSpec, generate_trajectories, load_trajectories
from specdiff2.errors import ConfigError
from specdiff2.models.checkpoint import load_transformer
from tests import vllm_standin

SPEC = {"num_prompts": 4, "prompt_tokens": 12, "prompts_per_shard": 2, "samples_per_prompt": 3,
        "max_new_tokens": 10, "topk_logprobs": 3, "temperature": 0.9, "top_p": 0.95, "backend": "vllm",
        "tensor_parallel_size": 2, "dtype": "float32", "seed": 5}


@pytest.fixture
def vllm(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", vllm_standin)
    monkeypatch.setattr(vllm_standin.LLM, "instances", [])
    monkeypatch.setattr(vllm_standin.LLM, "keep_stop_token", True)
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    return vllm_standin


def _store(world, path, **over):
    spec = GenerationSpec(**{**SPEC, **over})
    return load_trajectories(generate_trajectories(spec, world.verifier, path, tokens_dir=world.tokens,
                                                   log=lambda *_: None)).to_dict()


def test_vllm_arguments_and_per_request_seeds(micro_world, tmp_path, vllm):
    rows = _store(micro_world, tmp_path / "a")
    (llm,) = vllm.LLM.instances  # one engine for the whole run, loaded lazily
    assert llm.kwargs == {"model": str(micro_world.verifier), "tensor_parallel_size": 2, "dtype": "float32",
                          "seed": 5, "max_logprobs": 20}
    p = llm.params[0]
    assert (p.n, p.temperature, p.top_p, p.top_k, p.max_tokens, p.logprobs) == (3, 0.9, 0.95, -1, 10, 3)
    assert 0 in p.stop_token_ids  # the tokenizer's EOS (and generation_config.json's stop ids)
    # n samples of a request are n child requests seeded seed + j: no two samples of the run share a seed
    assert len(llm.child_seeds) == 12 and len(set(llm.child_seeds)) == 12
    assert len(rows["prompt_id"]) == 12 and rows["sample"][:3] == [0, 1, 2]
    assert rows == _store(micro_world, tmp_path / "b")  # per-request seeds: a rerun is identical
    other = _store(micro_world, tmp_path / "c", seed=6)
    assert other["continuation_ids"] != rows["continuation_ids"]


def test_vllm_logprobs_are_the_raw_top_k_in_rank_order(micro_world, tmp_path, vllm):
    """Stored top-k = the verifier's own top-k at each continuation position (teacher-forced here), ordered by
    vLLM's rank, without the sampled token vLLM adds when it ranks below k; the stop token ends each finished row."""
    rows = _store(micro_world, tmp_path / "s", temperature=1.5)  # T > 1: sampled tokens often rank below k
    model, _ = load_transformer(micro_world.verifier)
    outside = 0
    for prompt, cont, done, ids, lps in zip(rows["prompt_ids"], rows["continuation_ids"], rows["finished"],
                                            rows["topk_ids"], rows["topk_logprobs"]):
        assert (cont[-1] == 0) == done and 0 not in cont[:-1] and len(ids) == len(lps) == len(cont)
        seq = torch.tensor([prompt + cont])
        raw = torch.log_softmax(model(seq, torch.arange(seq.shape[1])[None])[0].float(), dim=-1)  # (T, V)
        for pos, token in enumerate(cont):
            want_lp, want_ids = raw[len(prompt) - 1 + pos].topk(3)
            assert ids[pos] == want_ids.tolist()
            assert torch.allclose(torch.tensor(lps[pos]), want_lp, atol=1e-5)
            outside += token not in ids[pos]
    assert outside > 0  # the case where vLLM lists a 4th entry (the sampled token) was exercised


def test_vllm_stop_token_left_out_is_restored(micro_world, tmp_path, vllm, monkeypatch):
    """A generation_config.json stop id (here the micro verifier's most frequent token, so rows do stop) that a
    vLLM version leaves out of token_ids comes back from stop_reason; its position has no log-probs (-inf)."""
    import collections

    from specdiff2.data import trajectories

    tokens = collections.Counter(t for c in _store(micro_world, tmp_path / "a")["continuation_ids"] for t in c)
    stop = tokens.most_common(1)[0][0]
    monkeypatch.setattr(trajectories, "stop_ids", lambda tokenizer: [stop])
    vllm.LLM.keep_stop_token = False
    rows = _store(micro_world, tmp_path / "s")
    assert stop in vllm.LLM.instances[-1].params[0].stop_token_ids
    finished = [(c, lp) for c, d, lp in zip(rows["continuation_ids"], rows["finished"], rows["topk_logprobs"]) if d]
    assert finished
    for cont, lps in finished:
        assert cont[-1] in (stop, 0) and len(lps) == len(cont)
        assert lps[-1] == [float("-inf")] * 3  # no log-probs for a position vLLM did not return: no mass
    assert any(c[-1] == stop for c, _ in finished)


@pytest.mark.parametrize("over,env,needle", [
    ({"logprob_temperature": 0.5}, {}, "data.generation.logprob_temperature=0.5"),
    ({}, {"WORLD_SIZE": "2"}, "launch with python, not torchrun"),
])
def test_vllm_refusals_are_one_line(micro_world, tmp_path, vllm, monkeypatch, over, env, needle):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ConfigError) as err:
        _store(micro_world, tmp_path / "s", **over)
    assert needle in str(err.value) and "\n" not in str(err.value)
    assert not vllm.LLM.instances
