"""The decode job: everything `decode.py` decodes with, built by one instantiate of conf/decode.yaml `job`.

decode.py, the benches, the reproduction and the tests build engines the same way: compose the config,
`instantiate(cfg.job)` (settings checked, the acceptance rule built from the job's one `SamplingParams`), then
`job.build()` (or `job.build(verifier, tokenizer)` to share a loaded verifier across jobs). Temperature enters
once, as `sampling`; the rule builder refuses a temperature it is not lossless at, and the engine checks the
pair again for hand-built rules (`rules.check_rule`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from specdiff2.decode.acceptance.rules import AcceptanceRule
from specdiff2.decode.engine import DecodeEngine
from specdiff2.decode.loading import check_vocabularies, engine_context, load_verifier
from specdiff2.decode.run import pick_device
from specdiff2.decode.sampling import SamplingParams
from specdiff2.decode.verifier import Verifier
from specdiff2.models.refs import CheckpointRef


@dataclass
class DecodeJob:
    verifier: CheckpointRef
    strategy: Callable  # the strategy class with its knobs bound, missing only its models (Hydra `_partial_`)
    models: dict[str, Callable]  # strategy argument -> loader(ctx=EngineContext) (drafters, DiffuSpec's proxy)
    acceptance: Callable[..., AcceptanceRule]  # conf/acceptance builder: gets `sampling`
    sampling: SamplingParams = field(default_factory=SamplingParams)
    method: str = "specdiff"
    device: str = "auto"
    max_seq_len: int = 1024
    seed: int = 0
    compile: str = "auto"
    kernels: str = "auto"

    def __post_init__(self):
        self.rule = self.acceptance(sampling=self.sampling)  # a non-lossless choice fails here, before any load

    @property
    def drafter_refs(self) -> list[CheckpointRef]:
        """Checkpoints the strategy's models load (loaders bound with `ref`)."""
        return [ref for load in self.models.values() if (ref := getattr(load, "keywords", {}).get("ref"))]

    @property
    def uses_pocket(self) -> bool:
        return any(ref.pocket for ref in [self.verifier, *self.drafter_refs])

    def check_checkpoints(self) -> None:
        """Fail fast, before any pocket build or weight load: absent real checkpoints, mismatched tokenizers."""
        for ref in [self.verifier, *self.drafter_refs]:
            if not ref.pocket:
                ref.resolve()
        check_vocabularies(self.verifier, self.drafter_refs)

    def load_verifier(self) -> tuple[Verifier, object]:
        return load_verifier(self.verifier, pick_device(self.device), self.max_seq_len, self.compile, self.kernels)

    def build(self, verifier: Verifier | None = None, tokenizer=None, built: dict | None = None) -> DecodeEngine:
        """The engine. Pass a loaded verifier and its tokenizer to share one across jobs (benches, tests), and
        `built` (strategy argument -> model built by `self.models[name](ctx=...)`) to share drafters too."""
        if verifier is None:
            verifier, tokenizer = self.load_verifier()
        if built is None:
            ctx = engine_context(verifier, tokenizer)
            built = {name: load(ctx=ctx) for name, load in self.models.items()}
        return DecodeEngine(verifier, tokenizer, self.strategy(**built), self.rule, self.sampling, self.seed)
