"""Load a Hugging Face checkpoint directory (config.json + safetensors) into our `Transformer`.

`read_weights` is also how the training view (models/hf.py) reads them: both sides see the same tensors under the
same names.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from specdiff2.errors import CheckpointError
from specdiff2.models.archs import arch_for
from specdiff2.models.transformer import ModelArgs, Transformer

_CONVERT_HINT = (
    "safetensors is required: re-save it with "
    "`AutoModelForCausalLM.from_pretrained(DIR).save_pretrained(OUT)` (writes model.safetensors)"
)


def load_transformer(
    path: str | Path, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
) -> tuple[Transformer, dict]:
    """Build a `Transformer` from an HF checkpoint directory; returns (model, raw config.json dict)."""
    root = _checkpoint_dir(path)
    config = read_config(root)
    args = ModelArgs.from_hf_config(config)
    state = read_weights(root, dtype, device, arch_for(config).tensor_name)
    check_finite(state.items(), root)
    if args.tie_word_embeddings and "model.embed_tokens.weight" in state:
        # Tied checkpoints omit lm_head.weight; it is the embedding matrix.
        state.setdefault("lm_head.weight", state["model.embed_tokens.weight"])
    # Build on meta and assign the loaded tensors: no throwaway random init of a 7B model.
    with torch.device("meta"):
        model = Transformer(args)
    _check_state(model, state, root)
    model.load_state_dict(state, strict=True, assign=True)
    if args.tie_word_embeddings:
        model.tie_weights()  # assign=True replaced the shared Parameter with two
    return model, config


def _checkpoint_dir(path: str | Path) -> Path:
    root = Path(path).expanduser()
    if not root.is_dir():
        raise CheckpointError(
            f"checkpoint directory {str(root)!r} does not exist; pass a local Hugging Face model directory "
            "(download it first, e.g. `huggingface-cli download REPO --local-dir DIR`)"
        )
    if not (root / "config.json").is_file():
        raise CheckpointError(
            f"{str(root)!r} has no config.json; pass the Hugging Face model directory that holds "
            "config.json and the *.safetensors weights"
        )
    return root


def read_config(path: str | Path) -> dict:
    """config.json of a checkpoint directory as a dict (one-line error when absent or not a JSON object)."""
    file = Path(path) / "config.json"
    if not file.is_file():
        raise CheckpointError(f"{file} does not exist; pass a checkpoint directory holding config.json")
    try:
        config = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{file} is not valid JSON ({err}); restore the original file") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{file} is not a JSON object; restore the original file")
    return config


def _weight_files(root: Path) -> list[Path]:
    """The safetensors files of a single-file or sharded checkpoint."""
    if (root / "model.safetensors").is_file():
        return [root / "model.safetensors"]
    index = root / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (json.JSONDecodeError, KeyError, AttributeError):
            raise CheckpointError(
                f"{index} has no valid weight_map; restore the original index file"
            ) from None
        missing = [s for s in shards if not (root / s).is_file()]
        if missing:
            raise CheckpointError(
                f"shard {missing[0]!r} listed in {index.name} is missing from {root}; download all shards"
            )
        return [root / s for s in shards]
    if list(root.glob("*.bin")) or list(root.glob("*.pt")) or list(root.glob("*.pth")):
        raise CheckpointError(f"{str(root)!r} has only PyTorch weights; {_CONVERT_HINT}")
    raise CheckpointError(
        f"{str(root)!r} has no model.safetensors or model.safetensors.index.json; "
        "pass a directory with safetensors weights"
    )


def read_weights(root: Path, dtype: torch.dtype, device, rename=lambda key: key) -> dict[str, torch.Tensor]:
    """Every tensor of the checkpoint under its Transformer name (`rename`: the family's `tensor_name`)."""
    state = {}
    for file in _weight_files(root):
        try:
            with safe_open(str(file), framework="pt", device="cpu") as handle:  # memory-mapped
                for key in handle.keys():
                    if key.endswith("rotary_emb.inv_freq"):
                        continue  # old checkpoints stored it; we recompute it
                    name = rename(key)
                    if name is not None:
                        state[name] = handle.get_tensor(key).to(device=device, dtype=dtype)
        except SafetensorError as err:  # empty, truncated or not safetensors at all
            raise CheckpointError(f"{file} is not a readable safetensors file ({err}); "
                                  "re-download or re-export the checkpoint") from None
    return state


def check_finite(named_tensors: Iterable[tuple[str, torch.Tensor]], where: str | Path) -> None:
    """One CheckpointError line naming the first weight with NaN or ±inf (a diverged run's weights)."""
    for key, tensor in named_tensors:
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"weight {key} in {where} holds NaN or inf values (weights of a diverged run); "
                                  "retrain with a lower optim.optimizer.lr or restore a finite checkpoint")


def _check_state(model: Transformer, state: dict[str, torch.Tensor], root: Path) -> None:
    """Strict key and shape check with a one-line message (load_state_dict's is multi-line)."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise CheckpointError(
            f"weights in {root} do not match config.json: missing {_first(missing)}, "
            f"unexpected {_first(unexpected)}; "
            "check that config.json belongs to these weights"
        )
    for key, ref in expected.items():
        if tuple(state[key].shape) != tuple(ref.shape):
            raise CheckpointError(
                f"weight {key} in {root} has shape {tuple(state[key].shape)}, "
                f"config.json implies {tuple(ref.shape)}; "
                "check that config.json belongs to these weights"
            )


def _first(keys: list[str], n: int = 3) -> str:
    if not keys:
        return "none"
    more = f" (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more
