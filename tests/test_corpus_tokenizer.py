import pytest

from specdiff2.errors import DataError, TokenizerError
from specdiff2.models.tokenizer import load_tokenizer
from specdiff2.pocket.corpus import read_corpus
from specdiff2.pocket.tokenizer import EOS_TOKEN, MASK_TOKEN, PAD_TOKEN, train_tokenizer


def test_corpus_is_deterministic_and_split_by_hash():
    a = read_corpus(max_bytes=300_000)
    b = read_corpus(max_bytes=300_000)
    assert [f.sha for f in a.train] == [f.sha for f in b.train]
    assert [f.sha for f in a.validation] == [f.sha for f in b.validation]
    train, val = {f.sha for f in a.train}, {f.sha for f in a.validation}
    assert not train & val and len(train) == len(a.train)  # dedup by content hash
    # A larger corpus keeps each file on the same side of the split.
    big = read_corpus(max_bytes=600_000)
    assert train <= {f.sha for f in big.train} and val <= {f.sha for f in big.validation}


def test_missing_and_empty_corpus_roots(tmp_path):
    with pytest.raises(DataError, match="not a directory") as err:
        read_corpus(roots=[str(tmp_path / "nope")])
    assert "\n" not in str(err.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no usable Python source files"):
        read_corpus(roots=[str(tmp_path / "empty")])


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    corpus = read_corpus(max_bytes=400_000)
    out = tmp_path_factory.mktemp("tok")
    train_tokenizer((f.text for f in corpus.train), 600, out)
    return load_tokenizer(out, require_mask=True), corpus


def test_tokenizer_round_trip_with_special_tokens(tokenizer):
    tok, corpus = tokenizer
    for f in corpus.validation[:5]:
        ids = tok(f.text, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == f.text
    text = f"def f(x):\n    return x{MASK_TOKEN}{MASK_TOKEN}\t  é😀{EOS_TOKEN}{PAD_TOKEN}"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert ids.count(tok.mask_token_id) == 2 and tok.eos_token_id in ids and tok.pad_token_id in ids
    assert tok.decode(ids) == text
    assert len({tok.eos_token_id, tok.mask_token_id, tok.pad_token_id}) == 3


def test_tokenizer_without_mask_token_is_refused(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<|endoftext|>").save_pretrained(tmp_path)
    with pytest.raises(TokenizerError, match="no mask token") as err:
        load_tokenizer(tmp_path, require_mask=True)
    assert "\n" not in str(err.value)
