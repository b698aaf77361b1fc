"""Streak distillation as plain Python: `run_distillation(DistillJob)` → summary dict.

verifier trajectories (resumable store) → windows → distillation (Lightning) → checkpoint + Hugging Face export
→ summary. Every piece arrives built (conf/train.yaml `job`, one Hydra instantiate in train.py, or by hand):
checkpoint refs, the trajectory source, factories (`functools.partial`) of the datamodule, module and trainer
that the pipeline completes with what it learns on the way (checkpoint dirs, the drafter's mask id and logit
shift, the trajectory store), and the loggers and callbacks. Settings are checked when the job is built, so
nonsense stops the run before any heavy work with one line.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import LearningRateMonitor
from transformers.utils import logging as hf_logging

from specdiff2.data.trajectories import GenerationSpec, generate_trajectories
from specdiff2.errors import CheckpointError, ConfigError, TokenizerError, require
from specdiff2.models.checkpoint import read_config
from specdiff2.models.diffusion import prefix_attention, require_diffusion_family, resolve_mask_token_id
from specdiff2.models.refs import CheckpointRef
from specdiff2.models.tokenizer import load_tokenizer
from specdiff2.models.vocab import proposable_ids
from specdiff2.training.callbacks import ThroughputMonitor
from specdiff2.training.checks import check_export, check_optimizer, check_trainer_settings
from specdiff2.training.export import export_weights
from specdiff2.training.resume import check_fresh_output, checkpoint_step, resume_path
from specdiff2.training.summary import make_summary, print_training_summary
from specdiff2.training.zero import gather_state_dict, unsharded_module, zero_stage


@dataclass
class TrajectorySource:
    """Where the verifier trajectories come from (conf/data: generation, store_root/store_dir, tokens_dir)."""

    generation: GenerationSpec
    store_root: str | None = None  # the store is store_root/<fingerprint of settings + verifier>
    store_dir: str | None = None  # a fixed store directory instead (resumes it)
    tokens_dir: str | None = None  # the pocket token dataset of source=corpus prompts

    def generate(self, verifier_dir: Path) -> Path:
        """Sample (or reuse, or finish) the store; returns its directory."""
        gen = self.generation
        if gen.source == "corpus":
            check_corpus_tokenizer(self.tokens_dir, verifier_dir)
        return generate_trajectories(gen, verifier_dir, self.store_dir or self.store_root,
                                     tokens_dir=self.tokens_dir if gen.source == "corpus" else None,
                                     keyed=self.store_dir is None)


@dataclass
class DistillJob:
    verifier: CheckpointRef
    drafter: CheckpointRef
    trajectories: TrajectorySource
    datamodule: Callable  # TrajectoryDataModule factory: gets store_dir, mask_token_id, shifted, prefix_attention
    module: Callable  # DistillModule factory: gets drafter_path, dtype, shifted, mask_token_id, verifier_path
    trainer: Callable  # lightning.Trainer factory: gets logger, callbacks, default_root_dir
    output_dir: str | Path
    loggers: dict[str, Any] = field(default_factory=dict)  # name -> Lightning logger (None entries dropped)
    callbacks: dict[str, Any] = field(default_factory=dict)  # name -> Lightning callback (None entries dropped)
    seed: int = 0
    resume: str | None = None  # a .ckpt file, or a run directory with checkpoints/last.ckpt
    export: str = "best"  # best | last

    def __post_init__(self):
        self.output_dir = Path(self.output_dir)
        check_export(self.export)
        check_trainer_settings(getattr(self.trainer, "keywords", {}))
        module_settings = getattr(self.module, "keywords", {})
        check_optimizer(module_settings.get("optimizer"), module_settings.get("scheduler"))
        self.resume = resume_path(self.resume)
        if self.resume is not None:
            checkpoint_step(self.resume)  # a file that is not a Lightning checkpoint: one line now
        check_fresh_output(self.output_dir, self.resume)  # never overwrite an earlier run's export silently


def check_corpus_tokenizer(tokens_dir: str | Path | None, verifier_dir: Path) -> None:
    """Corpus prompts are token ids of the pocket tokenizer (kept beside the token dataset, pocket/<name>/
    tokenizer): refuse them for a verifier that reads ids with another tokenizer (garbage prompts, or an
    IndexError for a smaller vocabulary)."""
    pocket_tokenizer = Path(tokens_dir).parent / "tokenizer" if tokens_dir else None
    if pocket_tokenizer is None or not pocket_tokenizer.is_dir():
        return  # a token dataset without its tokenizer: nothing to compare (trajectories.py reports absence)
    if load_tokenizer(pocket_tokenizer).get_vocab() != load_tokenizer(verifier_dir).get_vocab():
        raise ConfigError(f"data.generation.source=corpus prompts are ids of the pocket tokenizer, but the verifier "
                          f"at {verifier_dir} has another tokenizer; use text prompts tokenised by the verifier: "
                          "data.generation.source=prompts")


def check_vocabularies(verifier_dir: Path, drafter_dir: Path) -> None:
    """The drafter learns verifier token ids: refuse, in one line, a drafter whose tokenizer maps any verifier id to
    another token or lacks it (the check decode runs, models.vocab.proposable_ids, plus full coverage), or whose
    embedding table is too small for the verifier's ids."""
    verifier_tok, drafter_tok = load_tokenizer(verifier_dir), load_tokenizer(drafter_dir)
    rows = int(read_config(drafter_dir).get("vocab_size") or len(drafter_tok))
    proposable_ids(verifier_tok, drafter_tok, len(verifier_tok), rows)  # disagreeing ids: TokenizerError
    verifier_ids = set(verifier_tok.get_vocab().values())
    missing = sorted(verifier_ids - set(drafter_tok.get_vocab().values()))
    require(not missing, f"drafter tokenizer at {drafter_dir} lacks {len(missing)} verifier ids (first: "
            f"{missing[:3]}); pair a drafter that shares the verifier's tokenizer", TokenizerError)
    require(max(verifier_ids) < rows, f"drafter embedding table has {rows} rows but the verifier uses ids up to "
            f"{max(verifier_ids)}; pair a drafter that shares the verifier's tokenizer", TokenizerError)


def check_weights_readable(*dirs: Path) -> None:
    """Open every safetensors header (memory-mapped, no tensor read): a truncated, empty or garbage file fails
    now in one line, not in transformers' from_pretrained traceback after the trajectories are sampled."""
    from safetensors import SafetensorError, safe_open

    for root in dirs:
        for file in sorted(Path(root).glob("*.safetensors")):
            try:
                with safe_open(str(file), framework="pt", device="cpu") as handle:
                    handle.keys()
            except SafetensorError as err:
                raise CheckpointError(f"{file} is not a readable safetensors file ({err}); "
                                      "re-download or re-export the checkpoint") from None


def resolve_checkpoints(*refs: CheckpointRef) -> list[Path]:
    """Every ref's directory, or one CheckpointError line naming all missing ones."""
    dirs, errors = [], []
    for ref in refs:
        try:
            dirs.append(ref.resolve())
        except CheckpointError as err:
            errors.append(str(err))
    if errors:
        raise CheckpointError("; ".join(errors))
    return dirs


@dataclass(frozen=True)
class DrafterConventions:
    mask_token_id: int
    shifted: bool  # logits at i−1 predict token i (Dream/DiffuCoder)
    prefix_attention: str  # "causal" | "bidirectional" (models.diffusion.prefix_attention)


def drafter_conventions(ref: CheckpointRef, drafter_dir: Path) -> DrafterConventions:
    """The drafter's mask id (drafter.mask_token_id, else the checkpoint's, checked against the checkpoint as decode
    checks it), its logit shift and its prefix attention."""
    config = read_config(drafter_dir)
    require_diffusion_family(config, str(drafter_dir))
    tokenizer = load_tokenizer(drafter_dir)
    rows = int(config.get("vocab_size") or len(tokenizer))
    mask_id = resolve_mask_token_id(ref.mask_token_id, config, tokenizer, rows, str(drafter_dir))
    if ref.logit_shift is None:
        raise CheckpointError("drafter.logit_shift is unset; set true (Dream/DiffuCoder) or false (LLaDA)")
    return DrafterConventions(int(mask_id), bool(ref.logit_shift), prefix_attention(config))


def build_trainer(job: DistillJob) -> L.Trainer:
    loggers = [lg for lg in job.loggers.values() if lg is not None]
    callbacks = [cb for cb in job.callbacks.values() if cb is not None]
    if not loggers:  # LearningRateMonitor refuses to run without a logger
        callbacks = [cb for cb in callbacks if not isinstance(cb, LearningRateMonitor)]
    try:
        return job.trainer(logger=loggers or False, callbacks=callbacks, default_root_dir=str(job.output_dir))
    except (MisconfigurationException, ValueError) as err:  # Lightning's refusals span lines, with a traceback
        reason = " ".join(str(err).split())[:300]
        raise ConfigError(f"Lightning refused the trainer settings ({reason}); fix that trainer.* value") from None


def _throughput(trainer: L.Trainer) -> ThroughputMonitor | None:
    return next((cb for cb in trainer.callbacks if isinstance(cb, ThroughputMonitor)), None)


def _numel(p) -> int:
    return int(getattr(p, "ds_numel", p.numel()))  # ZeRO-3 leaves an empty local tensor and the full size here


def run_distillation(job: DistillJob) -> dict:
    """The whole pipeline on built objects; returns the summary dict (also printed as tables on rank 0)."""
    verifier_dir, drafter_dir = resolve_checkpoints(job.verifier, job.drafter)
    check_weights_readable(verifier_dir, drafter_dir)
    check_vocabularies(verifier_dir, drafter_dir)
    drafter = drafter_conventions(job.drafter, drafter_dir)

    t0 = time.perf_counter()
    store = job.trajectories.generate(verifier_dir)
    gen_s = time.perf_counter() - t0

    L.seed_everything(job.seed, verbose=False)
    datamodule = job.datamodule(store_dir=str(store), mask_token_id=drafter.mask_token_id,
                                shifted=drafter.shifted, prefix_attention=drafter.prefix_attention)
    def new_module():
        return job.module(drafter_path=str(drafter_dir), dtype=job.drafter.dtype, shifted=drafter.shifted,
                          mask_token_id=drafter.mask_token_id, verifier_path=str(verifier_dir))

    module = new_module()
    trainer = build_trainer(job)
    if trainer.max_steps == 0 and trainer.is_global_zero:  # allowed on purpose: say so, it is not a silent no-op
        print("note: trainer.max_steps=0: no training; the drafter is validated and exported as it is",
              file=sys.stderr)
    t0 = time.perf_counter()
    # DeepSpeed would wrap the module once for validate and again for fit; step-0 validation is skipped there.
    if job.resume is None and not zero_stage(trainer):
        trainer.validate(module, datamodule=datamodule, verbose=False)  # the unaligned drafter: step 0
    if zero_stage(trainer) == 3:  # built whole here, partitioned by DeepSpeed: HF loading cannot fill
        module.configure_model()  # parameters that zero.Init (Lightning's configure_model context) already split
    if trainer.max_steps != 0:
        trainer.fit(module, datamodule=datamodule, ckpt_path=job.resume)
    train_s = time.perf_counter() - t0
    params = (sum(_numel(p) for p in module.drafter.parameters()),
              sum(_numel(p) for _, p in module.trainable_parameters()) if trainer.max_steps else 0)
    exported, export_module = {}, module
    if zero_stage(trainer) == 3 and trainer.max_steps != 0:  # sharded weights: gather them (every rank) first
        state = gather_state_dict(trainer)
        if trainer.is_global_zero:
            export_module = unsharded_module(new_module, state)
    if trainer.is_global_zero:
        hf_logging.disable_progress_bar()  # save_pretrained's shard bar: noise, and a bar with progress_bar=false
        best = getattr(trainer.checkpoint_callback, "best_model_path", None)
        exported = export_weights(export_module, job.export, best, drafter_dir, job.output_dir)
    run = {"store": store, "gen_s": gen_s, "train_s": train_s, "params": params}
    summary = make_summary(run, datamodule, module, trainer, _throughput(trainer), exported)
    if trainer.is_global_zero:
        print_training_summary(summary)
    return summary
