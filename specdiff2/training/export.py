"""Hugging Face exports of a distilled drafter, in the source checkpoint's layout (Dream config preserved)."""

from __future__ import annotations

from pathlib import Path

from specdiff2.models.hf import read_config, save_hf_drafter


def export_drafter(module, out_dir: str | Path, source_dir: str | Path, tokenizer=None) -> dict[str, Path]:
    """Write the drafter of a `DistillModule`; returns {"drafter": dir loadable by load_transformer, ...}.

    Full fine-tuning: out_dir/drafter. LoRA: the PEFT adapter in out_dir/adapter and the merged weights in
    out_dir/drafter. Merging happens in place (the module's model is plain Qwen2 afterwards): export last.
    """
    out, source_dir = Path(out_dir), Path(source_dir)
    source_config = read_config(source_dir)
    model = module.drafter
    paths: dict[str, Path] = {}
    if module.lora is not None:
        paths["adapter"] = out / "adapter"
        model.save_pretrained(str(paths["adapter"]))
        model = model.merge_and_unload()
        module.drafter = model
    paths["drafter"] = save_hf_drafter(model, out / "drafter", tokenizer, source_config, source_dir)
    return paths
