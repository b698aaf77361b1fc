"""Streak-distillation entry point: python train.py [group=option ...] (Hydra).

pocket world (built on first use) → verifier trajectories (resumable store) → distillation (Lightning) →
checkpoint + Hugging Face export → summary table. Checkpoint paths are resolved before any heavy work, so a
missing 72B verifier stops the run at once with one line.
"""

from __future__ import annotations

import time
from pathlib import Path

import hydra
from omegaconf import DictConfig

from specdiff2.cli import one_line_errors, run_main

CONF_DIR = Path(__file__).resolve().parent / "conf"


def resolve_checkpoints(*refs) -> list[Path]:
    """Every ref's directory, or one CheckpointError line naming all missing ones."""
    from specdiff2.errors import CheckpointError

    dirs, errors = [], []
    for ref in refs:
        try:
            dirs.append(ref.resolve())
        except CheckpointError as err:
            errors.append(str(err))
    if errors:
        raise CheckpointError("; ".join(errors))
    return dirs


def drafter_conventions(ref, drafter_dir: Path) -> tuple[int, bool]:
    """(mask token id, logit shift) of the drafter: from its config ref, else from config.json."""
    from specdiff2.errors import CheckpointError
    from specdiff2.models.hf import read_config

    mask_id = ref.mask_token_id if ref.mask_token_id is not None else read_config(drafter_dir).get("mask_token_id")
    if mask_id is None:
        raise CheckpointError(f"{drafter_dir}/config.json has no mask_token_id; pass drafter.mask_token_id=ID")
    if ref.logit_shift is None:
        raise CheckpointError("drafter.logit_shift is unset; set true (Dream/DiffuCoder) or false (LLaDA)")
    return int(mask_id), bool(ref.logit_shift)


def resume_path(resume: str | None) -> str | None:
    from specdiff2.errors import CheckpointError

    if resume is None:
        return None
    path = Path(resume)
    if path.is_dir():
        path = path / "checkpoints" / "last.ckpt"
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}; pass resume=FILE.ckpt or a run dir with checkpoints/")
    return str(path)


def build_trainer(cfg: DictConfig, out_dir: Path, extra_callbacks: list | None = None):
    from hydra.utils import instantiate
    from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, RichProgressBar

    from specdiff2.training.callbacks import ThroughputMonitor

    loggers = [instantiate(c) for c in (cfg.logger or {}).values()]
    checkpoint = ModelCheckpoint(dirpath=str(out_dir / "checkpoints"), filename="best-{step}",
                                 monitor="val/expected_streak", mode="max", save_top_k=1, save_last=True,
                                 auto_insert_metric_name=False)
    throughput = ThroughputMonitor()
    callbacks = [checkpoint, throughput, *(extra_callbacks or [])]
    callbacks += [LearningRateMonitor("step")] if loggers else []
    if cfg.progress_bar and cfg.trainer.get("enable_progress_bar", True):
        callbacks.append(RichProgressBar())
    trainer = instantiate(cfg.trainer, logger=loggers or False, callbacks=callbacks, default_root_dir=str(out_dir))
    return trainer, checkpoint, throughput


def build_module(cfg: DictConfig, drafter_ref, drafter_dir: Path, verifier_dir: Path, mask_id: int, shifted: bool):
    from hydra.utils import instantiate

    lora = instantiate(cfg.peft.lora, _convert_="all") if cfg.peft.get("lora") else None
    scheduler = instantiate(cfg.optim.scheduler) if cfg.optim.get("scheduler") else None
    return instantiate(cfg.module)(
        drafter_path=str(drafter_dir), loss=instantiate(cfg.loss, _convert_="all"),
        optimizer=instantiate(cfg.optim.optimizer), scheduler=scheduler, lora=lora, dtype=drafter_ref.dtype,
        shifted=shifted, mask_token_id=mask_id, seed=cfg.seed, verifier_path=str(verifier_dir))


def export_weights(cfg: DictConfig, module, checkpoint, drafter_dir: Path, out_dir: Path) -> dict:
    import torch

    from specdiff2.training.export import export_drafter

    chosen = "last"
    best = checkpoint.best_model_path
    if cfg.export == "best" and best and Path(best).is_file():  # DeepSpeed checkpoints are dirs: export last
        state = torch.load(best, map_location="cpu", weights_only=False)["state_dict"]
        module.load_state_dict(state, strict=module.strict_loading)
        chosen = f"best ({Path(best).name})"
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # AutoTokenizer reads the Dream config.json and warns about its type
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(drafter_dir))
    except (OSError, ValueError):
        tokenizer = None
    paths = export_drafter(module, out_dir / "export", drafter_dir, tokenizer)
    return {"weights": chosen, **{k: str(v) for k, v in paths.items()}}


def run(cfg: DictConfig, extra_callbacks: list | None = None) -> dict:
    """The whole pipeline; returns the summary dict (also printed as tables)."""
    import lightning as L
    from hydra.utils import instantiate

    from specdiff2.data.trajectories import generate_trajectories
    from specdiff2.pocket.world import ensure_pocket_world
    from specdiff2.report import print_world

    pocket_spec = instantiate(cfg.pocket)
    verifier_ref, drafter_ref = instantiate(cfg.verifier), instantiate(cfg.drafter)
    if verifier_ref.pocket or drafter_ref.pocket:
        print_world(ensure_pocket_world(pocket_spec, cfg.paths.pocket_dir))
    verifier_dir, drafter_dir = resolve_checkpoints(verifier_ref, drafter_ref)
    mask_id, shifted = drafter_conventions(drafter_ref, drafter_dir)
    ckpt = resume_path(cfg.resume)
    out_dir = Path(cfg.paths.output_dir)

    t0 = time.perf_counter()
    gen = instantiate(cfg.data.generation)
    store = generate_trajectories(gen, verifier_dir, cfg.data.store_dir or cfg.data.store_root,
                                  tokens_dir=cfg.data.tokens_dir if gen.source == "corpus" else None,
                                  keyed=cfg.data.store_dir is None)
    gen_s = time.perf_counter() - t0

    L.seed_everything(cfg.seed, verbose=False)
    datamodule = instantiate(cfg.data.windows)(store_dir=str(store), mask_token_id=mask_id, shifted=shifted)
    module = build_module(cfg, drafter_ref, drafter_dir, verifier_dir, mask_id, shifted)
    trainer, checkpoint, throughput = build_trainer(cfg, out_dir, extra_callbacks)
    t0 = time.perf_counter()
    if ckpt is None:
        trainer.validate(module, datamodule=datamodule, verbose=False)  # the unaligned drafter: step 0
    if cfg.trainer.max_steps != 0:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt)
    train_s = time.perf_counter() - t0
    params = (sum(p.numel() for p in module.drafter.parameters()),
              sum(p.numel() for _, p in module.trainable_parameters()) if cfg.trainer.max_steps else 0)
    exported = export_weights(cfg, module, checkpoint, drafter_dir, out_dir) if trainer.is_global_zero else {}
    summary = make_summary(store, gen_s, datamodule, module, trainer, checkpoint, throughput, train_s, params,
                           exported)
    if trainer.is_global_zero:
        from specdiff2.training.summary import print_training_summary

        print_training_summary(summary)
    return summary


def make_summary(store, gen_s, datamodule, module, trainer, checkpoint, throughput, train_s, params,
                 exported) -> dict:
    trajs = datamodule.trajectories
    n_params, trained = params
    rate = throughput.summary()
    last_loss = trainer.callback_metrics.get("train/loss")
    sections = {
        "trajectories": {"store": str(store), "trajectories": len(trajs),
                         "verifier tokens": sum(len(t.tokens) - t.prompt_len for t in trajs),
                         "wall s (sample or reuse)": gen_s},
        "windows": datamodule.stats(),
        "training": {"loss": dict(module.loss.weights), "peft": "lora" if module.lora is not None else "full",
                     "drafter params": n_params, "trained params": trained, "steps": trainer.global_step,
                     "wall s (validate + fit)": train_s, "windows/s (train steps)": rate["windows_per_s"],
                     "tokens/s (packed)": rate["tokens_per_s"],
                     "final train/loss": float(last_loss) if last_loss is not None else "n/a"},
        "checkpoints": {"best": checkpoint.best_model_path or "none",
                        "best val/expected_streak": float(checkpoint.best_model_score)
                        if checkpoint.best_model_score is not None else "n/a",
                        "last": checkpoint.last_model_path or "none"},
        "export": exported,
    }
    history = module.val_history
    return {"sections": sections, "val_before": history[0] if history else {},
            "val_after": history[-1] if len(history) > 1 else {}, "val_history": history}


@hydra.main(config_path=str(CONF_DIR), config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    with one_line_errors():
        run(cfg)


if __name__ == "__main__":
    run_main(main, CONF_DIR)
