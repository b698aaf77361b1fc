"""Hugging Face exports of a distilled drafter, in the source checkpoint's layout (its config.json preserved, its
tensor names restored by the family's `source_name`: models/archs/, models/hf.save_hf_drafter).

Non-finite weights are never exported: a diverged checkpoint or model stops the export with one line.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch

from specdiff2.errors import CheckpointError
from specdiff2.models.checkpoint import check_finite, read_config
from specdiff2.models.hf import save_hf_drafter
from specdiff2.training.checks import check_export


def export_drafter(module, out_dir: str | Path, source_dir: str | Path, tokenizer=None) -> dict[str, Path]:
    """Write the drafter of a `DistillModule`; returns {"drafter": dir loadable by load_transformer, ...}.

    Full fine-tuning: out_dir/drafter. LoRA: the PEFT adapter in out_dir/adapter and the merged weights in
    out_dir/drafter. Merging happens in place (the module's model is the plain training-view class
    afterwards, e.g. Qwen2ForCausalLM): export last.
    """
    out, source_dir = Path(out_dir), Path(source_dir)
    source_config = read_config(source_dir)
    model = module.drafter
    check_finite(model.named_parameters(), "the trained drafter")  # before anything is written
    paths: dict[str, Path] = {}
    if module.lora is not None:
        paths["adapter"] = out / "adapter"
        model.save_pretrained(str(paths["adapter"]))
        model = model.merge_and_unload()
        module.drafter = model
    paths["drafter"] = save_hf_drafter(model, out / "drafter", tokenizer, source_config, source_dir)
    return paths


def load_checkpoint_weights(module, path: str | Path) -> None:
    """Load the weights of a Lightning checkpoint file (full or LoRA-only state dict) into `module`.

    weights_only=True: a checkpoint is data, never code to run; finite values only.
    """
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as err:  # truncated, or needs code to load
        raise CheckpointError(f"cannot read checkpoint {path} ({type(err).__name__}: "
                              f"{str(err).splitlines()[0] if str(err) else ''}); pass export=last") from None
    state = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
    if state is None:
        raise CheckpointError(f"{path} has no state_dict; pass a Lightning checkpoint of train.py or export=last")
    check_finite(state.items(), path)
    module.load_state_dict(state, strict=module.strict_loading)


def export_weights(module, export: str, best_path: str | None, drafter_dir: Path, out_dir: Path) -> dict:
    """Export the `export` weights ("best" checkpoint file, else the last in-memory ones) to out_dir/export."""
    chosen = "last"
    if check_export(export) == "best" and best_path and Path(best_path).is_file():  # DeepSpeed: dirs, export last
        load_checkpoint_weights(module, best_path)
        chosen = f"best ({Path(best_path).name})"
    paths = export_drafter(module, out_dir / "export", drafter_dir)  # tokenizer files copied from drafter_dir
    return {"weights": chosen, **{k: str(v) for k, v in paths.items()}}
