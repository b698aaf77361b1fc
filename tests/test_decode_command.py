"""Issue 22 item 5: train.py's summary ends with the decode.py command for its export; that command decodes the
exported drafter against the very verifier (pocket world, checkpoint, dtype) the run distilled it to."""

import shlex

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from specdiff2.training.summary import decode_command
from tests.conftest import ROOT

EXPORT = "/runs/2026-11-27/10-00-00/export/drafter"


def _compose(config: str, overrides: list[str]):
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return compose(config, overrides=overrides, return_hydra_config=config == "train")


@pytest.mark.parametrize("train_overrides,expected", [
    ([], f"python decode.py drafter.path={EXPORT} drafter.pocket=false"),
    (["experiment=pocket_gpu", "loss=ce", "trainer.max_steps=5"],
     f"python decode.py pocket=gpu drafter.path={EXPORT} drafter.pocket=false"),
    (["paths.cache_dir=/data/cache", "pocket.seed=3", "optim.optimizer.lr=1e-4"],
     f"python decode.py paths.cache_dir=/data/cache pocket.seed=3 drafter.path={EXPORT} drafter.pocket=false"),
    (["verifier=qwen7b", "verifier.path=/ckpt/qwen", "drafter=diffucoder", "drafter.path=/ckpt/dc", "peft=lora",
      "trainer=deepspeed_z3", "drafter.dtype=float32"],
     (f"python decode.py verifier=qwen7b drafter=diffucoder verifier.path=/ckpt/qwen drafter.dtype=float32 "
      f"drafter.path={EXPORT} drafter.pocket=false")),
])
def test_the_printed_command_decodes_the_export_against_the_runs_verifier(train_overrides, expected):
    train = _compose("train", train_overrides)
    command = decode_command(EXPORT, train.hydra.runtime.choices, list(train.hydra.overrides.task))
    assert command == expected
    decode = _compose("decode", shlex.split(command)[2:])
    assert instantiate(decode.verifier) == instantiate(train.verifier)  # same checkpoint, pocket flag and dtype
    assert decode.pocket.name == train.pocket.name and decode.paths.pocket_dir == train.paths.pocket_dir
    drafter, trained = instantiate(decode.drafter), instantiate(train.drafter)
    assert drafter.path == EXPORT and not drafter.pocket
    assert (drafter.logit_shift, drafter.mask_token_id, drafter.dtype) == (trained.logit_shift, trained.mask_token_id,
                                                                           trained.dtype)
