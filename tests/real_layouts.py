"""Tiny checkpoints in the exact public layouts of the families users download, with random weights.

    qwen7b      Qwen2.5-7B-Instruct: model_type qwen2, 152064 embedding rows, untied, 2 safetensors shards +
                model.safetensors.index.json, vocab.json + merges.txt + tokenizer.json + tokenizer_config.json
                (the real chat_template, eos <|im_end|>), generation_config.json eos [151645, 151643]
    qwen05b     Qwen2.5-0.5B-Instruct: 151936 rows, tie_word_embeddings (no lm_head tensor), one model.safetensors
    dream       Dream-v0-Instruct-7B: model_type "Dream", architectures DreamModel, auto_map to remote code,
                mask_token_id 151666, pad = eos = 151643; tokenizer vocab.json + merges.txt + tokenizer_config.json
                with tokenizer_class DreamTokenizer and auto_map, NO tokenizer.json (the hub repo's files)
    diffucoder  DiffuCoder-7B: the Dream layout plus <|dlm_pad|> 151667 as pad
    llama       a LLaMA-layout verifier sharing LLaDA's tokenizer (126464 rows)
    llada       LLaDA-8B-Instruct: model_type llada, OLMo-style config (d_model, n_layers, ...), tensors
                model.transformer.{wte, blocks.N.{attn_norm, q_proj, k_proj, v_proj, attn_out, ff_norm, ff_proj,
                up_proj, ff_out}, ln_f, ff_out}, mask 126336, eos 126081, tokenizer.json (PreTrainedTokenizerFast)
The Qwen-family vocabulary is a small byte-level BPE padded with never-produced filler entries up to 151643, so every
special token has its real id; LLaDA's likewise up to 126080 (its reserved-token block is approximated).
Width is tiny (hidden 32); the drafters copy their verifier's weights plus noise (so drafts are sometimes accepted);
the head rows of fillers and special tokens are zero, like a trained model's unused rows.

`python -m tests.real_layouts DIR` writes them all under DIR (the closing-note commands use it).
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from specdiff2.bench.random_world import corpus

QWEN_BASE = 151643  # ids below: the BPE vocabulary (vocab.json); from here: added special tokens
QWEN_SPECIALS = [  # (token, special) in id order from 151643, as in Qwen2.5's tokenizer_config.json
    ("<|endoftext|>", True), ("<|im_start|>", True), ("<|im_end|>", True), ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True), ("<|box_start|>", True), ("<|box_end|>", True), ("<|quad_start|>", True),
    ("<|quad_end|>", True), ("<|vision_start|>", True), ("<|vision_end|>", True), ("<|vision_pad|>", True),
    ("<|image_pad|>", True), ("<|video_pad|>", True), ("<tool_call>", False), ("</tool_call>", False),
    ("<|fim_prefix|>", False), ("<|fim_middle|>", False), ("<|fim_suffix|>", False), ("<|fim_pad|>", False),
    ("<|repo_name|>", False), ("<|file_sep|>", False),
]
DREAM_EXTRA = [("<|beginoftext|>", True), ("<|mask|>", True)]  # 151665, 151666
DIFFUCODER_EXTRA = DREAM_EXTRA + [("<|dlm_pad|>", True)]  # 151667
ENDOFTEXT, IM_END, DREAM_MASK, DLM_PAD = 151643, 151645, 151666, 151667
LLADA_BASE, LLADA_BOS, LLADA_EOS, LLADA_MASK, LLADA_ROWS = 126080, 126080, 126081, 126336, 126464
QWEN_CHAT_TEMPLATE = (  # Qwen2.5-Instruct's tokenizer_config.json chat_template
    "{%- if tools %}\n    {{- '<|im_start|>system\\n' }}\n    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- messages[0]['content'] }}\n    {%- else %}\n"
    "        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}\n    {%- endif %}\n"
    "    {{- \"\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n"
    "You are provided with function signatures within <tools></tools> XML tags:\\n<tools>\" }}\n"
    "    {%- for tool in tools %}\n        {{- \"\\n\" }}\n        {{- tool | tojson }}\n    {%- endfor %}\n"
    "    {{- \"\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments "
    "within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\\"name\\\": <function-name>, \\\"arguments\\\": "
    "<args-json-object>}\\n</tool_call><|im_end|>\\n\" }}\n{%- else %}\n"
    "    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\n    {%- else %}\n"
    "        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant."
    "<|im_end|>\\n' }}\n    {%- endif %}\n{%- endif %}\n{%- for message in messages %}\n"
    "    {%- if (message.role == \"user\") or (message.role == \"system\" and not loop.first) or "
    "(message.role == \"assistant\" and not message.tool_calls) %}\n"
    "        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}\n"
    "    {%- elif message.role == \"assistant\" %}\n        {{- '<|im_start|>' + message.role }}\n"
    "        {%- if message.content %}\n            {{- '\\n' + message.content }}\n        {%- endif %}\n"
    "        {%- for tool_call in message.tool_calls %}\n            {%- if tool_call.function is defined %}\n"
    "                {%- set tool_call = tool_call.function %}\n            {%- endif %}\n"
    "            {{- '\\n<tool_call>\\n{\"name\": \"' }}\n            {{- tool_call.name }}\n"
    "            {{- '\", \"arguments\": ' }}\n            {{- tool_call.arguments | tojson }}\n"
    "            {{- '}\\n</tool_call>' }}\n        {%- endfor %}\n        {{- '<|im_end|>\\n' }}\n"
    "    {%- elif message.role == \"tool\" %}\n"
    "        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != \"tool\") %}\n"
    "            {{- '<|im_start|>user' }}\n        {%- endif %}\n        {{- '\\n<tool_response>\\n' }}\n"
    "        {{- message.content }}\n        {{- '\\n</tool_response>' }}\n"
    "        {%- if loop.last or (messages[loop.index0 + 1].role != \"tool\") %}\n"
    "            {{- '<|im_end|>\\n' }}\n        {%- endif %}\n    {%- endif %}\n{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n    {{- '<|im_start|>assistant\\n' }}\n{%- endif %}\n"
)
DREAM_AUTO_MAP = {"AutoConfig": "configuration_dream.DreamConfig", "AutoModel": "modeling_dream.DreamModel"}
LLADA_AUTO_MAP = {"AutoConfig": "configuration_llada.LLaDAConfig", "AutoModelForCausalLM": "modeling_llada.LLaDAModelLM",
                  "AutoModel": "modeling_llada.LLaDAModelLM"}
WIDTH = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
NOISE = 0.05


@dataclass
class RealLayouts:
    root: Path
    qwen7b: Path
    qwen05b: Path
    dream: Path
    diffucoder: Path
    llama: Path
    llada: Path


def _bpe(base: int) -> tuple[dict[str, int], list[str]]:
    """A byte-level BPE trained on tiny Python files, padded with unreachable fillers to exactly `base` entries."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator(corpus(), trainers.BpeTrainer(
        vocab_size=600, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    model = json.loads(tok.to_str())["model"]
    vocab = dict(model["vocab"])
    n = len(vocab)
    vocab.update({f"<fill{i}>": i for i in range(n, base)})  # never produced: no merge builds them
    merges = [" ".join(m) if isinstance(m, list) else m for m in model["merges"]]
    return vocab, merges


def _added(tokens: list[tuple[str, bool]], first: int) -> dict:
    return {str(first + i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                             "single_word": False, "special": s} for i, (t, s) in enumerate(tokens)}


def _write_json(path: Path, obj, indent: int | None = 2) -> None:
    path.write_text(json.dumps(obj, indent=indent, ensure_ascii=False))


def _qwen_tokenizer_files(out: Path, vocab, merges, specials, **config) -> None:
    """vocab.json + merges.txt + tokenizer_config.json as in a Qwen2.5-family hub repo (no tokenizer.json)."""
    out.mkdir(parents=True, exist_ok=True)
    _write_json(out / "vocab.json", vocab, indent=None)
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    base = {"add_bos_token": False, "add_prefix_space": False, "added_tokens_decoder": _added(specials, QWEN_BASE),
            "additional_special_tokens": [t for t, s in specials[1:] if s], "bos_token": None,
            "clean_up_tokenization_spaces": False, "errors": "replace", "model_max_length": 131072,
            "split_special_tokens": False, "unk_token": None}
    _write_json(out / "tokenizer_config.json", {**base, **config})


def _zero_unused(head: torch.Tensor, n_real: int) -> None:
    """Rows of fillers and special tokens get logit 0: like a trained model, they are never the top."""
    head[n_real:] = 0.0


def _qwen_state(rows: int, n_real: int, seed: int, tied: bool = False) -> dict[str, torch.Tensor]:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    state = _peaked_state(Qwen2ForCausalLM(Qwen2Config(vocab_size=rows, tie_word_embeddings=tied, **WIDTH)), n_real)
    if tied:
        state.pop("lm_head.weight")
    return state


def _peaked_state(model, n_real: int) -> dict[str, torch.Tensor]:
    """Random weights with peaked logits (final-norm gain 4) and ids past the tokenizer never on top; its state."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.normal_(1.0 if "norm" in name else 0.0, 0.3)
        model.model.norm.weight.fill_(4.0)
        _zero_unused(model.lm_head.weight, n_real)
    return {k: v.clone().contiguous() for k, v in model.state_dict().items()}


def _noisy(state: dict, seed: int) -> dict:
    gen = torch.Generator().manual_seed(seed)
    return {k: v + torch.randn(v.shape, generator=gen) * NOISE * v.std().clamp_min(1e-3) * (v != 0)
            for k, v in state.items()}


def _save_sharded(state: dict[str, torch.Tensor], out: Path, shards: int) -> None:
    """model-0000i-of-0000n.safetensors + model.safetensors.index.json (one file when shards == 1)."""
    out.mkdir(parents=True, exist_ok=True)
    if shards == 1:
        save_file(state, out / "model.safetensors", metadata={"format": "pt"})
        return
    keys = sorted(state)
    weight_map = {}
    for i in range(shards):
        name = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = {k: state[k] for k in keys[i::shards]}
        save_file(part, out / name, metadata={"format": "pt"})
        weight_map.update({k: name for k in part})
    total = sum(v.numel() * v.element_size() for v in state.values())
    _write_json(out / "model.safetensors.index.json", {"metadata": {"total_size": total}, "weight_map": weight_map})


def _qwen_config(rows: int, tied: bool, **extra) -> dict:
    return {"architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643,
            "eos_token_id": 151645, "hidden_act": "silu", "initializer_range": 0.02, "max_position_embeddings": 32768,
            "max_window_layers": 28, "model_type": "qwen2", "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
            "sliding_window": 131072, "tie_word_embeddings": tied, "torch_dtype": "bfloat16",
            "transformers_version": "4.43.1", "use_cache": True, "use_sliding_window": False, "vocab_size": rows,
            **WIDTH, **extra}


def _dream_config(pad: int) -> dict:
    return {"architectures": ["DreamModel"], "attention_dropout": 0.0, "auto_map": DREAM_AUTO_MAP,
            "bos_token_id": 151643, "eos_token_id": 151643, "hidden_act": "silu", "initializer_range": 0.02,
            "mask_token_id": DREAM_MASK, "max_position_embeddings": 131072, "max_window_layers": 28,
            "model_type": "Dream", "pad_token_id": pad, "rms_norm_eps": 1e-06, "rope_scaling": None,
            "rope_theta": 1000000.0, "sliding_window": None, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
            "transformers_version": "4.46.2", "use_cache": True, "use_sliding_window": False, "vocab_size": 152064,
            **WIDTH}


def write_qwen_family(root: Path) -> dict[str, Path]:
    from transformers import Qwen2Tokenizer

    vocab, merges = _bpe(QWEN_BASE)
    n_real = len([t for t in vocab if not t.startswith("<fill")])
    paths = {name: root / name for name in ("qwen7b", "qwen05b", "dream", "diffucoder")}
    instruct = dict(chat_template=QWEN_CHAT_TEMPLATE, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                    tokenizer_class="Qwen2Tokenizer")
    for name in ("qwen7b", "qwen05b"):  # the hub repos hold all four tokenizer files: the fast one's tokenizer.json too
        _qwen_tokenizer_files(paths[name], vocab, merges, QWEN_SPECIALS, **instruct)
        with tempfile.TemporaryDirectory() as tmp:
            Qwen2Tokenizer.from_pretrained(str(paths[name])).save_pretrained(tmp)
            shutil.copy(Path(tmp) / "tokenizer.json", paths[name] / "tokenizer.json")
        _write_json(paths[name] / "generation_config.json", {
            "bos_token_id": 151643, "pad_token_id": 151643, "do_sample": True, "eos_token_id": [IM_END, ENDOFTEXT],
            "repetition_penalty": 1.05, "temperature": 0.7, "top_p": 0.8, "top_k": 20,
            "transformers_version": "4.37.0"})
    dream_tok = dict(auto_map={"AutoTokenizer": ["tokenization_dream.DreamTokenizer", None]},
                     tokenizer_class="DreamTokenizer", bos_token="<|beginoftext|>", eos_token="<|endoftext|>",
                     mask_token="<|mask|>", chat_template=QWEN_CHAT_TEMPLATE)
    _qwen_tokenizer_files(paths["dream"], vocab, merges, QWEN_SPECIALS + DREAM_EXTRA, pad_token="<|endoftext|>",
                          **dream_tok)
    _qwen_tokenizer_files(paths["diffucoder"], vocab, merges, QWEN_SPECIALS + DIFFUCODER_EXTRA,
                          pad_token="<|dlm_pad|>", **dream_tok)
    verifier = _qwen_state(152064, n_real, seed=0)
    _save_sharded(verifier, paths["qwen7b"], shards=2)
    _write_json(paths["qwen7b"] / "config.json", _qwen_config(152064, tied=False))
    small = {k: v[:151936].clone() if v.shape[0] == 152064 else v for k, v in _noisy(verifier, 1).items()}
    small["model.embed_tokens.weight"] = small.pop("lm_head.weight")  # tied: the head is the embedding
    _save_sharded(small, paths["qwen05b"], shards=1)
    _write_json(paths["qwen05b"] / "config.json", _qwen_config(151936, tied=True))
    for i, (name, pad) in enumerate((("dream", ENDOFTEXT), ("diffucoder", DLM_PAD))):
        _save_sharded(_noisy(verifier, 2 + i), paths[name], shards=2)
        _write_json(paths[name] / "config.json", _dream_config(pad))
        (paths[name] / "tokenization_dream.py").write_text("# remote code of the hub repo: never imported here\n")
    return paths


LLADA_SPECIALS = ([("<|startoftext|>", True), ("<|endoftext|>", True)]
                  + [(f"<|reserved_token_{i}|>", True) for i in range(LLADA_MASK - LLADA_EOS - 1)]
                  + [("<|mdm_mask|>", True)] + [(f"<|reserved_token_{i}|>", True) for i in range(254, 263)]
                  + [("<|start_header_id|>", True), ("<|end_header_id|>", True), ("<|eot_id|>", True)])


def _llada_tokenizer(out: Path) -> int:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab, merges = _bpe(LLADA_BASE)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[tuple(m.split(" ")) for m in merges]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|startoftext|>", eos_token="<|endoftext|>")
    fast.add_special_tokens({"additional_special_tokens": [t for t, _ in LLADA_SPECIALS[2:]]})
    assert fast.convert_tokens_to_ids("<|mdm_mask|>") == LLADA_MASK, fast.convert_tokens_to_ids("<|mdm_mask|>")
    fast.save_pretrained(str(out))
    return len([t for t in vocab if not t.startswith("<fill")])


def _llada_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HF LLaMA names -> LLaDA's (the inverse of specdiff2/models/archs/llada.py, written out independently)."""
    block = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ff_norm", "self_attn.q_proj": "q_proj",
             "self_attn.k_proj": "k_proj", "self_attn.v_proj": "v_proj", "self_attn.o_proj": "attn_out",
             "mlp.gate_proj": "ff_proj", "mlp.up_proj": "up_proj", "mlp.down_proj": "ff_out"}
    top = {"model.embed_tokens.weight": "model.transformer.wte.weight", "model.norm.weight":
           "model.transformer.ln_f.weight", "lm_head.weight": "model.transformer.ff_out.weight"}
    out = {}
    for key, value in state.items():
        if key in top:
            out[top[key]] = value
            continue
        _, _, n, rest = key.split(".", 3)  # model.layers.N.<module>.weight
        module = rest.rsplit(".", 1)[0]
        out[f"model.transformer.blocks.{n}.{block[module]}.weight"] = value
    return out


def llada_config() -> dict:
    return {"activation_type": "silu", "alibi": False, "alibi_bias_max": 8.0, "architectures": ["LLaDAModelLM"],
            "attention_dropout": 0.0, "attention_layer_norm": False, "attention_layer_norm_with_affine": True,
            "auto_map": LLADA_AUTO_MAP, "bias_for_layer_norm": False, "block_group_size": 1, "block_type": "llama",
            "d_model": 32, "embedding_dropout": 0.0, "embedding_size": LLADA_ROWS, "eos_token_id": LLADA_EOS,
            "flash_attention": False, "include_bias": False, "include_qkv_bias": False, "init_cutoff_factor": None,
            "init_device": "meta", "init_fn": "mitchell", "init_std": 0.02, "input_emb_norm": False,
            "layer_norm_type": "rms", "layer_norm_with_affine": True, "mask_token_id": LLADA_MASK,
            "max_sequence_length": 4096, "mlp_hidden_size": 64, "mlp_ratio": 4, "model_type": "llada",
            "multi_query_attention": None, "n_heads": 4, "n_kv_heads": 4, "n_layers": 2, "pad_token_id": LLADA_EOS,
            "precision": "amp_bf16", "residual_dropout": 0.0, "rms_norm_eps": 1e-05, "rope": True,
            "rope_full_precision": True, "rope_theta": 500000.0, "scale_logits": False, "torch_dtype": "bfloat16",
            "transformers_version": "4.46.3", "use_cache": False, "vocab_size": 126464, "weight_tying": False}


def write_llada_family(root: Path) -> dict[str, Path]:
    from transformers import LlamaConfig, LlamaForCausalLM

    paths = {"llama": root / "llama", "llada": root / "llada"}
    for p in paths.values():
        p.mkdir(parents=True, exist_ok=True)
    n_real = _llada_tokenizer(paths["llada"])
    _llada_tokenizer(paths["llama"])
    torch.manual_seed(1)
    cfg = dict(vocab_size=LLADA_ROWS, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
               num_attention_heads=4, num_key_value_heads=4, rope_theta=500000.0, rms_norm_eps=1e-5,
               max_position_embeddings=4096, bos_token_id=LLADA_BOS, eos_token_id=LLADA_EOS, tie_word_embeddings=False)
    model = LlamaForCausalLM(LlamaConfig(**cfg))
    state = _peaked_state(model, n_real)
    _save_sharded(state, paths["llama"], shards=2)
    _write_json(paths["llama"] / "config.json", {**model.config.to_dict(), "model_type": "llama",
                                                 "architectures": ["LlamaForCausalLM"]})
    _save_sharded(_llada_names(_noisy(state, 5)), paths["llada"], shards=2)
    _write_json(paths["llada"] / "config.json", llada_config())
    _write_json(paths["llada"] / "generation_config.json", {"bos_token_id": LLADA_BOS, "eos_token_id": LLADA_EOS,
                                                            "pad_token_id": LLADA_EOS})
    return paths


def write_real_layouts(root: Path) -> RealLayouts:
    root = Path(root)
    return RealLayouts(root, **write_qwen_family(root), **write_llada_family(root))


if __name__ == "__main__":
    layouts = write_real_layouts(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/specdiff2_real"))
    for name, path in vars(layouts).items():
        print(f"{name:10s} {path}")
