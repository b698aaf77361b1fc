"""Checkpoints as users download them (Qwen2.5, Dream, DiffuCoder, LLaDA; tests/real_layouts.py): they load without
remote code, their logits equal an independent reference forward, and every decode method equals verifier greedy."""

import json
import shutil

import pytest
import torch

from specdiff2.bench.common import compose, engine_from_config
from specdiff2.decode.acceptance.rules import GreedyRule
from specdiff2.decode.engine import DecodeEngine
from specdiff2.decode.loading import engine_context, load_diffusion_drafter, load_verifier
from specdiff2.decode.sampling import SamplingParams
from specdiff2.decode.strategies.ar import Autoregressive
from specdiff2.errors import CheckpointError, TokenizerError
from specdiff2.models.checkpoint import load_transformer
from specdiff2.models.refs import CheckpointRef
from specdiff2.models.tokenizer import encode_prompt, load_tokenizer, stop_ids
from tests import real_layouts as RL

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = torch.device("cpu")
TEXTS = ["def add(x, y):\n    return", "import os\nimport sys\n\n", "class Foo:\n    def __init__(self"]
MAX_LOGIT_DIFF = 1e-4  # fp32


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    return RL.write_real_layouts(tmp_path_factory.mktemp("real"))


@pytest.fixture(autouse=True)
def no_prompts(monkeypatch):
    """transformers must never ask [y/N] (trust_remote_code prompts read stdin)."""
    def refuse(*_):
        raise AssertionError("something asked for terminal input")
    monkeypatch.setattr("builtins.input", refuse)


# --- logits against an independent reference -----------------------------------------------------------------

def _ids(n=12, seed=0):
    return torch.randint(0, 380, (2, n), generator=torch.Generator().manual_seed(seed))


def _hf_logits(cls_name, path, ids, bidirectional):
    import transformers

    model = getattr(transformers, cls_name).from_pretrained(str(path), dtype=torch.float32).eval()
    b, n = ids.shape
    mask = torch.ones(b, 1, n, n, dtype=torch.bool) if bidirectional else None
    kwargs = {"attention_mask": mask} if mask is not None else {}
    with torch.no_grad():
        return model(input_ids=ids, position_ids=torch.arange(n)[None].expand(b, -1), **kwargs).logits


def _llada_reference(path, ids):
    """LLaDA's forward written out from its modelling code's maths, on its own tensor names (no shared code)."""
    from safetensors.torch import load_file

    cfg = json.loads((path / "config.json").read_text())
    w = {}
    for f in sorted(path.glob("*.safetensors")):
        w.update(load_file(f))
    d, h = cfg["d_model"], cfg["n_heads"]
    hd, eps, theta = d // h, cfg["rms_norm_eps"], cfg["rope_theta"]

    def rms(x, weight):
        return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))

    def rope(t):  # (B, H, T, hd): rotate_half over two halves, as LLaDA's RotaryEmbedding
        inv = 1.0 / theta ** (torch.arange(0, hd, 2).float() / hd)
        pos = torch.cat([torch.arange(t.shape[2]).float()[:, None] * inv] * 2, -1)
        x1, x2 = t[..., : hd // 2], t[..., hd // 2:]
        return t * pos.cos() + torch.cat([-x2, x1], -1) * pos.sin()

    x = w["model.transformer.wte.weight"][ids]
    b, n, _ = x.shape
    for i in range(cfg["n_layers"]):
        p = f"model.transformer.blocks.{i}."
        a = rms(x, w[p + "attn_norm.weight"])
        q, k, v = (a @ w[p + f"{m}_proj.weight"].T for m in "qkv")
        q, k, v = (t.view(b, n, h, hd).transpose(1, 2) for t in (q, k, v))
        att = torch.softmax(rope(q) @ rope(k).transpose(-1, -2) / hd ** 0.5, -1) @ v  # no mask: bidirectional
        x = x + att.transpose(1, 2).reshape(b, n, d) @ w[p + "attn_out.weight"].T
        f = rms(x, w[p + "ff_norm.weight"])
        gate = torch.nn.functional.silu(f @ w[p + "ff_proj.weight"].T) * (f @ w[p + "up_proj.weight"].T)
        x = x + gate @ w[p + "ff_out.weight"].T
    return rms(x, w["model.transformer.ln_f.weight"]) @ w["model.transformer.ff_out.weight"].T


FAMILIES = {  # name -> (reference, bidirectional)
    "qwen7b": ("Qwen2ForCausalLM", False), "qwen05b": ("Qwen2ForCausalLM", False),
    "dream": ("Qwen2ForCausalLM", True), "diffucoder": ("Qwen2ForCausalLM", True),
    "llama": ("LlamaForCausalLM", False), "llada": (None, True),
}


def max_logit_diff(layouts, name: str) -> float:
    path = getattr(layouts, name)
    reference, bidirectional = FAMILIES[name]
    ids = _ids()
    model, _ = load_transformer(path)
    pos = torch.arange(ids.shape[1])[None].expand(2, -1)
    full = torch.ones(2, 1, ids.shape[1], ids.shape[1], dtype=torch.bool)
    with torch.no_grad():
        ours = model(ids, pos, attn_mask=full if bidirectional else None)
        ref = _llada_reference(path, ids) if reference is None else _hf_logits(reference, path, ids, bidirectional)
    return float((ours - ref).abs().max())


@pytest.mark.parametrize("name", list(FAMILIES))
def test_logits_equal_reference_forward(layouts, name):
    assert max_logit_diff(layouts, name) < MAX_LOGIT_DIFF


def test_layouts_are_the_public_ones(layouts):
    """What the loader sees is what the hub serves: sharded index, tied 0.5B, remote-code tokenizer, LLaDA names."""
    assert (layouts.qwen7b / "model.safetensors.index.json").is_file()
    from safetensors import safe_open

    with safe_open(str(layouts.qwen05b / "model.safetensors"), "pt") as f:
        assert "lm_head.weight" not in f.keys()
    model, _ = load_transformer(layouts.qwen05b)
    assert model.lm_head.weight is model.model.embed_tokens.weight and model.args.vocab_size == 151936
    assert not (layouts.dream / "tokenizer.json").exists()
    assert json.loads((layouts.dream / "tokenizer_config.json").read_text())["tokenizer_class"] == "DreamTokenizer"
    index = json.loads((layouts.llada / "model.safetensors.index.json").read_text())["weight_map"]
    assert "model.transformer.blocks.1.ff_proj.weight" in index and "model.transformer.ff_out.weight" in index


# --- tokenizers ---------------------------------------------------------------------------------------------------

def test_dream_tokenizers_load_without_remote_code(layouts):
    from transformers import AutoTokenizer

    with pytest.raises(ValueError):  # what the old loader did: transformers insists on the remote code
        AutoTokenizer.from_pretrained(str(layouts.dream), trust_remote_code=False)
    qwen = load_tokenizer(layouts.qwen7b)
    text = "def add(x, y):\n    return x + y  # <|endoftext|>"
    for name, pad in (("dream", "<|endoftext|>"), ("diffucoder", "<|dlm_pad|>")):
        tok = load_tokenizer(getattr(layouts, name))
        config = json.loads((getattr(layouts, name) / "config.json").read_text())
        assert tok(text, add_special_tokens=False)["input_ids"] == qwen(text, add_special_tokens=False)["input_ids"]
        assert tok.mask_token == "<|mask|>" and tok.mask_token_id == config["mask_token_id"] == 151666
        assert tok.pad_token == pad and tok.pad_token_id == config["pad_token_id"]
        assert (tok.bos_token_id, tok.eos_token_id) == (151665, 151643)
        assert tok.convert_tokens_to_ids("<|im_end|>") == 151645
        assert tok.decode(tok("x = 1", add_special_tokens=False)["input_ids"]) == "x = 1"


def test_other_remote_code_tokenizers_are_one_line(layouts, tmp_path):
    bad = tmp_path / "custom"
    shutil.copytree(layouts.dream, bad)
    config = json.loads((bad / "tokenizer_config.json").read_text())
    config.update(tokenizer_class="MyTokenizer", auto_map={"AutoTokenizer": ["tokenization_my.MyTokenizer", None]})
    (bad / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(TokenizerError, match="remote code .* set \"tokenizer_class\"") as err:
        load_tokenizer(bad)
    assert "\n" not in str(err.value)


def test_stop_ids_come_from_generation_config(layouts):
    qwen = load_tokenizer(layouts.qwen7b)
    assert qwen.eos_token_id == RL.IM_END and stop_ids(qwen) == {RL.IM_END, RL.ENDOFTEXT}
    assert stop_ids(load_tokenizer(layouts.llada)) == {RL.LLADA_EOS}


def test_chat_template_is_qwen_instruct(layouts):
    qwen = load_tokenizer(layouts.qwen7b)
    ids = encode_prompt(qwen, "Write add.", chat_template=True)
    assert qwen.decode(ids) == ("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
                                "assistant.<|im_end|>\n<|im_start|>user\nWrite add.<|im_end|>\n<|im_start|>assistant\n")
    assert encode_prompt(qwen, "Write add.") == qwen("Write add.", add_special_tokens=False)["input_ids"]
    with pytest.raises(TokenizerError, match="no chat template"):
        encode_prompt(load_tokenizer(layouts.llama), "x", chat_template=True)


# --- drafter conventions against a verifier ------------------------------------------------------------------

@pytest.fixture(scope="module")
def qwen_verifier(layouts):
    return load_verifier(CheckpointRef("verifier", str(layouts.qwen7b)), CPU, 256)


def _drafter(path, **kw):
    return CheckpointRef("drafter", str(path), **kw)


def test_drafter_conventions_and_proposable_ids(layouts, qwen_verifier):
    ctx = engine_context(*qwen_verifier)
    for name in ("dream", "diffucoder"):
        d = load_diffusion_drafter(_drafter(getattr(layouts, name)), ctx)
        assert d.shifted and d.mask_token_id == RL.DREAM_MASK and not d.causal
        prop = d.proposable
        assert prop[RL.ENDOFTEXT] and prop[RL.IM_END]  # EOS (= Dream's pad) is proposable: the verifier emits it
        assert not prop[RL.DREAM_MASK] and not prop[RL.DLM_PAD] and not prop[151665:].any()  # drafter-only ids


def test_mask_id_is_validated_in_one_line(layouts, qwen_verifier):
    ctx = engine_context(*qwen_verifier)
    with pytest.raises(CheckpointError, match="outside the drafter's embedding table of 152064 rows") as err:
        load_diffusion_drafter(_drafter(layouts.dream, mask_token_id=200000), ctx)
    assert "\n" not in str(err.value)
    with pytest.raises(CheckpointError, match="contradicts the config.json mask_token_id 151666"):
        load_diffusion_drafter(_drafter(layouts.dream, mask_token_id=126336), ctx)


def test_llada_with_a_qwen_verifier_is_refused_in_one_line(layouts, qwen_verifier):
    with pytest.raises(TokenizerError, match="no vocabulary translation") as err:
        load_diffusion_drafter(_drafter(layouts.llada), engine_context(*qwen_verifier))
    assert "\n" not in str(err.value)


def test_mismatched_vocabularies_fail_before_any_weights_load(layouts, monkeypatch):
    from specdiff2.decode import loading

    monkeypatch.setattr(loading, "load_transformer", lambda *a, **k: pytest.fail("weights loaded"))
    verifier = CheckpointRef("verifier", str(layouts.qwen7b))
    loading.check_vocabularies(verifier, [_drafter(layouts.dream), CheckpointRef("ar", str(layouts.qwen05b))])
    with pytest.raises(TokenizerError, match="no vocabulary translation"):
        loading.check_vocabularies(verifier, [_drafter(layouts.llada)])


def test_llada_conventions(layouts):
    verifier = load_verifier(CheckpointRef("verifier", str(layouts.llama)), CPU, 128)
    d = load_diffusion_drafter(_drafter(layouts.llada), engine_context(*verifier))
    assert not d.shifted and d.mask_token_id == RL.LLADA_MASK  # from config.json: its tokenizer names no mask
    assert d.proposable[RL.LLADA_EOS] and not d.proposable[RL.LLADA_MASK]


def test_engine_stops_on_generation_config_stop_ids(layouts, tmp_path):
    """<|endoftext|> is a stop id only through generation_config.json (the Instruct tokenizer's EOS is <|im_end|>)."""
    from safetensors.torch import load_file, save_file

    path = tmp_path / "qwen"
    shutil.copytree(layouts.qwen7b, path)
    prompt = load_tokenizer(path)(TEXTS[0], add_special_tokens=False)["input_ids"]
    verifier, tok = load_verifier(CheckpointRef("verifier", str(path)), CPU, 128)
    free = DecodeEngine(verifier, tok, Autoregressive(), GreedyRule(), SamplingParams(0.0)).generate(prompt, 12)
    third = free.token_ids[2]
    for shard in path.glob("*.safetensors"):  # the head row of <|endoftext|> above the third token's: it wins there
        state = load_file(shard)
        if "lm_head.weight" in state:
            state["lm_head.weight"][RL.ENDOFTEXT] = 1.5 * state["lm_head.weight"][third]
            save_file(state, shard, metadata={"format": "pt"})
    verifier, tok = load_verifier(CheckpointRef("verifier", str(path)), CPU, 128)
    gen = DecodeEngine(verifier, tok, Autoregressive(), GreedyRule(), SamplingParams(0.0)).generate(prompt, 12)
    assert gen.stop_reason == "eos" and gen.token_ids[-1] == RL.ENDOFTEXT and len(gen.token_ids) <= 3


# --- every method equals verifier greedy, per family -----------------------------------------------------------

PAIRS = {  # verifier, diffusion drafter, AR drafter, drafter config
    "qwen+dream": ("qwen7b", "dream", "qwen05b", "dream"),
    "qwen+diffucoder": ("qwen7b", "diffucoder", "qwen05b", "diffucoder"),
    "llama+llada": ("llama", "llada", "llama", "llada"),
}
METHODS = ["ar", "sd_ar", "specdiff", "self_select", "diffuspec"]


def _overrides(layouts, pair, method):
    v, d, a, conf = PAIRS[pair]
    out = [f"decode={method}", f"drafter={conf}", f"drafter.path={getattr(layouts, d)}", "verifier=qwen7b",
           f"verifier.path={getattr(layouts, v)}", "ar_drafter=qwen05b", f"ar_drafter.path={getattr(layouts, a)}",
           "max_seq_len=128", "device=cpu", "drafter.dtype=float32", "verifier.dtype=float32",
           "ar_drafter.dtype=float32"]
    if method == "diffuspec":
        out += ["decode.strategy.gamma=6", "decode.strategy.gamma_min=2", "decode.strategy.gamma_max=8"]
    if method in ("specdiff", "self_select"):
        out += ["decode.strategy.gamma=5"]
    if method == "self_select":
        out += ["decode.strategy.k=2"]
    return out


@pytest.fixture(scope="module")
def greedy(layouts):
    """Verifier greedy continuations (the `ar` engine, checked against transformers' generate for Qwen)."""
    out = {}
    for v in ("qwen7b", "llama"):
        verifier, tok = load_verifier(CheckpointRef("verifier", str(getattr(layouts, v))), CPU, 128)
        engine = DecodeEngine(verifier, tok, Autoregressive(), GreedyRule(), SamplingParams(0.0))
        out[v] = (verifier, tok, {t: engine.generate(encode_prompt(tok, t), 16).token_ids for t in TEXTS})
    return out


def test_ar_equals_transformers_generate(layouts, greedy):
    from transformers import Qwen2ForCausalLM

    _, tok, reference = greedy["qwen7b"]
    model = Qwen2ForCausalLM.from_pretrained(str(layouts.qwen7b), dtype=torch.float32).eval()
    for text, ids in reference.items():
        prompt = torch.tensor([encode_prompt(tok, text)])
        out = model.generate(prompt, max_new_tokens=16, do_sample=False, eos_token_id=sorted(stop_ids(tok)),
                             pad_token_id=RL.ENDOFTEXT)
        assert out[0, prompt.shape[1]:].tolist() == ids


# diffuspec's real-layout case is slow-only: its engine path is the same as on the tiny world (test_diffuspec), and
# the Dream loader is covered by qwen+dream's other methods.
# The other families' decode runs are slow-only (default suite time); their loaders and logits stay in the default
# suite (test_logits_equal_reference_forward, test_drafter_conventions_and_proposable_ids).
FAST = {("qwen+dream", m) for m in METHODS if m not in ("self_select", "diffuspec")}
CASES = [pytest.param(p, m, marks=() if (p, m) in FAST else pytest.mark.slow) for p in PAIRS for m in METHODS]


@pytest.mark.parametrize("pair,method", CASES)
def test_every_method_equals_verifier_greedy(layouts, greedy, pair, method):
    verifier, tok, reference = greedy[PAIRS[pair][0]]
    eng = engine_from_config(compose("decode", _overrides(layouts, pair, method)), verifier, tok)
    for text, ids in list(reference.items())[:2]:
        assert eng.generate(encode_prompt(tok, text), 16).token_ids == ids


def test_data_chat_template_applies_at_decode_time(layouts, greedy, tmp_path):
    """decode.py's path: data.chat_template=true -> each prompt is a user turn in the verifier's chat template."""
    from hydra.utils import instantiate

    from specdiff2.data.prompts import load_prompts
    from specdiff2.decode.run import run_prompts

    file = tmp_path / "p.jsonl"
    file.write_text(json.dumps({"prompt": TEXTS[0]}) + "\n")
    verifier, tok, _ = greedy["qwen7b"]
    overrides = _overrides(layouts, "qwen+dream", "ar") + ["data=jsonl", f"data.prompts.path={file}"]
    for chat in (False, True):
        cfg = compose("decode", [*overrides, f"data.chat_template={str(chat).lower()}"])
        prompts = load_prompts(instantiate(cfg.data.prompts))
        assert [p.chat for p in prompts] == [chat]
        eng = engine_from_config(cfg, verifier, tok)
        run_prompts(eng, prompts, 8, tmp_path / str(chat), "ar", warmup=False)
        row = json.loads((tmp_path / str(chat) / "generations.jsonl").read_text())
        assert row["token_ids"] == eng.generate(encode_prompt(tok, TEXTS[0], chat), 8).token_ids
    assert cfg.data.generation.chat_template  # the same switch encodes trajectory prompts


def test_export_copies_the_tokenizer_files_or_fails_in_one_line(layouts, qwen_verifier, tmp_path):
    from specdiff2.models.checkpoint import read_config
    from specdiff2.models.hf import load_hf_drafter, save_hf_drafter

    model = load_hf_drafter(layouts.diffucoder)
    out = save_hf_drafter(model, tmp_path / "export", None, read_config(layouts.diffucoder), layouts.diffucoder)
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json", "tokenization_dream.py"):
        assert (out / name).read_bytes() == (layouts.diffucoder / name).read_bytes()  # as downloaded
    drafter = load_diffusion_drafter(_drafter(out), engine_context(*qwen_verifier))
    assert drafter.mask_token_id == RL.DREAM_MASK
    bare = tmp_path / "bare"
    bare.mkdir()
    for f in layouts.diffucoder.iterdir():
        if f.name in ("config.json", "model.safetensors.index.json") or f.suffix == ".safetensors":
            shutil.copy(f, bare / f.name)
    with pytest.raises(TokenizerError, match="no tokenizer files in .* to export") as err:
        save_hf_drafter(model, tmp_path / "export2", None, read_config(bare), bare)
    assert "\n" not in str(err.value) and not (tmp_path / "export2").exists()  # refused before writing
