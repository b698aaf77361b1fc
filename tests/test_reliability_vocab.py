"""Issue 13 item 7: training refuses, in one line, a drafter that does not speak the verifier's vocabulary, and
corpus prompts (pocket-tokenizer ids) for a verifier with another tokenizer."""

import json
import shutil

import pytest

from specdiff2.errors import ConfigError, SpecDiffError
from specdiff2.training.pipeline import check_corpus_tokenizer, check_vocabularies


def other_tokenizer(src, out):
    from specdiff2.pocket.tokenizer import train_tokenizer

    shutil.copytree(src, out)
    for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt"):
        (out / f).unlink(missing_ok=True)
    train_tokenizer(["zzz yyy xxx " * 50, "print('other corpus')\n" * 40], 300, out)
    return out


def test_a_drafter_with_the_verifiers_tokenizer_passes(tiny_world):
    check_vocabularies(tiny_world.verifier, tiny_world.drafter)


def swapped_tokens(src, dst, at: int):
    """A copy of checkpoint `src` whose tokenizer swaps the ids at ranks `at` and `at` + 1."""
    bad = shutil.copytree(src, dst)
    tok = json.loads((bad / "tokenizer.json").read_text())
    vocab = tok["model"]["vocab"]
    a, b = sorted(vocab, key=vocab.get)[at: at + 2]
    vocab[a], vocab[b] = vocab[b], vocab[a]
    (bad / "tokenizer.json").write_text(json.dumps(tok))
    return bad


def test_a_drafter_with_two_swapped_tokens_is_refused(tiny_world, tmp_path):
    bad = swapped_tokens(tiny_world.drafter, tmp_path / "drafter", 100)
    with pytest.raises(SpecDiffError, match="tokenizers disagree on 2 ids") as err:
        check_vocabularies(tiny_world.verifier, bad)
    assert "\n" not in str(err.value)


def test_a_drafter_with_another_tokenizer_is_refused(tiny_world, tmp_path):
    bad = other_tokenizer(tiny_world.drafter, tmp_path / "drafter")
    with pytest.raises(SpecDiffError, match="tokenizer") as err:
        check_vocabularies(tiny_world.verifier, bad)
    assert "\n" not in str(err.value)


def test_corpus_prompts_need_the_verifier_to_read_pocket_token_ids(tiny_world, tmp_path):
    pocket = tmp_path / "pocket"
    shutil.copytree(tiny_world.root / "tokenizer", pocket / "tokenizer")  # the tokenizer that wrote the ids
    tokens = pocket / "tokens"
    check_corpus_tokenizer(tokens, tiny_world.verifier)  # same tokenizer: fine
    other = other_tokenizer(tiny_world.verifier, tmp_path / "verifier")
    with pytest.raises(ConfigError, match="data.generation.source=prompts"):
        check_corpus_tokenizer(tokens, other)


def test_train_pipeline_refuses_a_swapped_token_drafter_before_any_work(micro_world, tmp_path):
    from hydra.utils import instantiate

    from specdiff2.training.pipeline import run_distillation
    from tests.test_training import micro_cfg

    bad = swapped_tokens(micro_world.drafter, tmp_path / "drafter", 200)
    cfg = micro_cfg(micro_world, tmp_path / "cache", tmp_path / "run", f"drafter.path={bad}")
    with pytest.raises(SpecDiffError, match="tokenizers disagree"):
        run_distillation(instantiate(cfg.job))
    assert not (tmp_path / "cache" / "trajectories").exists()  # refused before sampling any trajectory
