"""GPU check of the CUDA-graph path against the eager path: python -m specdiff2.bench.graph_check.

On a random pocket-shape Qwen2 (fp32 and bf16): (1) max |logits| difference, graph vs eager, for chain and
tree blocks at several sizes and prefix lengths (bucket padding included); (2) greedy decoding token for
token, graph vs eager (fp32 must be equal; bf16 reports the agreement rate); (3) ms per greedy token of a
verifier-only loop, graph vs eager, beside HF `generate` with a static cache (compiled by transformers and
warmed at the same shapes) on the same weights.
"""

from __future__ import annotations

import time

import torch

from specdiff2.bench.real_shapes import SHAPES, random_model
from specdiff2.decode.draft import Layout
from specdiff2.decode.verifier import Verifier


def logits_diffs(dtype, kernels: str = "eager") -> float:
    """Worst |logits| difference, graph vs eager, over chain and tree verify blocks at several prefixes."""
    model = random_model("pocket", dtype=dtype)
    ids = torch.randint(0, 8192, (1024,), device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    layout = Layout.tree(torch.tensor([-1, 0, 0, 1, -1, 4], device="cuda"), torch.tensor([0, 1, 1, 2, 0, 1], device="cuda"),
                         3, torch.tensor([[0, 1, 3], [0, 2, -1], [4, 5, -1]], device="cuda"))
    outs = {}
    for mode in ("eager", "graph"):
        v = Verifier(model, 1024, mode, kernels if mode == "graph" else "eager")
        res = []
        for prefix, n in ((5, 1), (100, 4), (300, 17), (333, 33), (990, 20)):
            v.prefill(ids[: prefix - 1])
            res.append(v.runner(ids[prefix - 1: prefix + n], prefix - 1).float())
            block = ids[prefix - 1: prefix + 6]  # root + 6 tree nodes
            res.append(v.runner(block, prefix - 1, prefix - 1 + layout.depth, layout.intra).float())
        outs[mode] = res
    return max((a - b).abs().max().item() for a, b in zip(outs["eager"], outs["graph"]))


def greedy_tokens(model, mode: str, prompt, n_new: int, kernels: str = "eager"):
    """A verifier-only greedy loop through the runner (one graph per forward, one host sync per token)."""
    v = Verifier(model, 1024, mode, kernels)
    seq = list(prompt)
    v.prefill(torch.tensor(seq[:-1], device="cuda"))
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n_new):
        logits = v.runner(torch.tensor(seq[-1:], device="cuda"), len(seq) - 1)
        seq.append(int(logits[0].argmax()))  # the one host sync per step
    torch.cuda.synchronize()
    return seq[len(prompt):], (time.perf_counter() - t0) / n_new * 1e3


def hf_static_ms(model, prompt, n_new: int) -> float:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    a = model.args
    cfg = Qwen2Config(vocab_size=a.vocab_size, hidden_size=a.hidden_size, intermediate_size=a.intermediate_size,
                      num_hidden_layers=a.num_layers, num_attention_heads=a.num_heads,
                      num_key_value_heads=a.num_kv_heads, max_position_embeddings=a.max_position_embeddings,
                      rope_theta=a.rope_theta, tie_word_embeddings=False)
    hf = Qwen2ForCausalLM(cfg).to(device="cuda", dtype=torch.bfloat16).eval()
    hf.load_state_dict({k: v for k, v in model.state_dict().items()}, strict=True)
    ids = torch.tensor([prompt], device="cuda")
    kw = dict(max_new_tokens=n_new, min_new_tokens=n_new, do_sample=False, cache_implementation="static")
    for _ in range(2):  # compile + warm at the timed shapes
        hf.generate(ids, **kw)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    hf.generate(ids, **kw)
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / n_new * 1e3


def main() -> None:
    print(f"device: {torch.cuda.get_device_name()}")
    for dtype in (torch.float32, torch.bfloat16):
        for kernels in ("eager", "elementwise", "block"):
            print(f"max |logits graph/{kernels} - eager| {dtype}: {logits_diffs(dtype, kernels):.3g}")
    prompt = torch.randint(0, 8192, (64,), generator=torch.Generator().manual_seed(1)).tolist()
    for dtype in (torch.float32, torch.bfloat16):
        model = random_model("pocket", dtype=dtype)
        ref, ms_e = greedy_tokens(model, "eager", prompt, 200)
        line = [f"{dtype}: eager {ms_e:.2f} ms/token"]
        for kernels in ("eager", "elementwise", "block"):
            greedy_tokens(model, "graph", prompt, 200, kernels)  # warm-up: compilation and capture untimed
            out, ms = greedy_tokens(model, "graph", prompt, 200, kernels)
            agree = sum(x == y for x, y in zip(ref, out)) / len(ref)
            line.append(f"graph/{kernels} {ms:.2f} ms/token, agreement with eager {agree:.3f}")
        print("; ".join(line))
    model = random_model("pocket", dtype=torch.bfloat16)
    print(f"HF generate static cache (bf16, warmed): {hf_static_ms(model, prompt, 200):.2f} ms/token "
          f"(pocket shape {SHAPES['pocket']['num_layers']} layers)")


if __name__ == "__main__":
    main()
