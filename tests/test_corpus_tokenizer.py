import pytest

from specdiff2.errors import DataError, TokenizerError
from specdiff2.models.tokenizer import load_tokenizer
from specdiff2.pocket.corpus import read_corpus
from specdiff2.pocket.tokenizer import EOS_TOKEN, MASK_TOKEN, PAD_TOKEN, train_tokenizer


@pytest.mark.slow  # reads and hashes the stdlib twice (~7 s)
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


def _fake_install(root):
    """A stdlib-like root with a nested site-packages: modules, packages, a vendored copy and a test dir."""
    fn = 'def area(w, h):\n    """Area of a w x h rectangle.\n\n    >>> area(2, 3)\n    6\n    """\n    ' \
         'result = w * h\n    assert result >= 0, \"negative size\"\n    return result\n'
    files = {
        "held.py": fn + "\n\ndef _private(x):\n    \"\"\"Hidden.\"\"\"\n    return x + 1000000000000000000000\n",
        "site-packages/heldpkg/__init__.py": "@decorate(1)\n" + fn.replace("area", "size") + "# padding " * 20,
        "site-packages/heldpkg/tests/test_x.py": fn.replace("area", "volume") + "# test " * 20,
        "site-packages/heldpkg/stub.py": 'def stub(x):\n    """Not written yet."""\n    raise NotImplementedError\n'
                                         + "# stub " * 20,
        "site-packages/other/copy_of_held.py": "",  # filled below: byte-identical copy of held.py
        "site-packages/other/keep.py": "def keep():\n    return 1\n" + "# keep " * 20,
        **{f"plain{i}.py": f"x = {i}\n" + "# plain " * 20 for i in range(8)},
    }
    files["site-packages/other/copy_of_held.py"] = files["held.py"]
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return files


def test_heldout_packages_never_enter_the_corpus(tmp_path):
    import hashlib

    files = _fake_install(tmp_path)
    corpus = read_corpus(roots=[str(tmp_path)], validation_fraction=0.5, min_file_bytes=1,
                         heldout_packages=["held", "heldpkg"])
    texts = {f.text for f in corpus.train + corpus.validation}
    assert files["site-packages/other/keep.py"] in texts and files["plain0.py"] in texts
    assert not any("def area" in t or "def size" in t or "def stub" in t for t in texts)  # copy dropped too
    held = {hashlib.sha256(files[k].encode()).hexdigest() for k in files if k.startswith(("held", "site-packages/held"))}
    assert corpus.heldout_shas == held and corpus.stats()["heldout_files"] == len(held)
    with pytest.raises(DataError, match="none of heldout_packages") as err:
        read_corpus(roots=[str(tmp_path)], min_file_bytes=1, heldout_packages=["not_installed"])
    assert "\n" not in str(err.value)


def test_heldout_prompts_are_signature_and_docstring(tmp_path):
    from specdiff2.data.prompts import PromptSource, load_prompts

    _fake_install(tmp_path)
    source = PromptSource(name="heldout", packages=["held", "heldpkg"], roots=[str(tmp_path)])
    prompts = load_prompts(source)
    # Public, documented, non-trivial, outside tests: area (module) and size (package, decorator kept).
    assert sorted(p.id for p in prompts) == ["held.py:area", "heldpkg/__init__.py:size"]
    by_id = {p.id: p.text for p in prompts}
    assert by_id["held.py:area"].startswith("def area(w, h):\n") and by_id["held.py:area"].endswith('    """\n')
    assert "result" not in by_id["held.py:area"]
    assert by_id["heldpkg/__init__.py:size"].startswith("@decorate(1)\ndef size(")
    assert load_prompts(source) == prompts  # deterministic
    assert [p.id for p in load_prompts(PromptSource(name="heldout", packages=["held", "heldpkg"],
                                                    roots=[str(tmp_path)], limit=1, offset=1))] == [prompts[1].id]
    with pytest.raises(DataError, match="needs package names"):
        load_prompts(PromptSource(name="heldout", roots=[str(tmp_path)]))
