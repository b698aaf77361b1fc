"""Issue 22 items 6 and 11: what the diffusion drafter checkpoint must be, checked the same way by decode and train.

An autoregressive checkpoint (the verifier) given as the diffusion drafter is refused in one line; the real drafter
options (dream, diffucoder, llada) read the mask id from the checkpoint, and an explicit id is still checked.
"""

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from specdiff2.decode.loading import engine_context, load_diffusion_drafter, load_verifier
from specdiff2.errors import CheckpointError
from specdiff2.models.checkpoint import read_config
from specdiff2.models.refs import CheckpointRef
from specdiff2.training.pipeline import drafter_conventions

CONF = Path(__file__).resolve().parents[1] / "conf"
CPU = torch.device("cpu")


def drafter_ref(config: str, option: str, path: Path, *extra: str) -> CheckpointRef:
    """The drafter ref train.py / decode.py build for drafter=`option` pointed at `path`."""
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose(config, overrides=[f"drafter={option}", f"drafter.path={path}", *extra])
    return instantiate(cfg.drafter)


@pytest.fixture(scope="module")
def ctx(tiny_world):
    return engine_context(*load_verifier(CheckpointRef("verifier", str(tiny_world.verifier)), CPU, 128))


def test_an_autoregressive_checkpoint_as_the_diffusion_drafter_is_refused_in_one_line(tiny_world, ctx):
    ref = CheckpointRef("drafter", str(tiny_world.verifier), logit_shift=True)
    with pytest.raises(CheckpointError, match="is an autoregressive qwen2 checkpoint, not a masked-diffusion") as err:
        load_diffusion_drafter(ref, ctx)
    assert "\n" not in str(err.value) and "decode=sd_ar ar_drafter.path=DIR" in str(err.value)
    with pytest.raises(CheckpointError, match="autoregressive qwen2 checkpoint"):
        drafter_conventions(ref, Path(tiny_world.verifier))  # train.py's check, before any trajectory is sampled


@pytest.mark.parametrize("option", ["dream", "diffucoder", "llada"])
def test_real_drafter_options_read_the_mask_id_from_the_checkpoint(option):
    for config in ("decode", "train"):
        assert drafter_ref(config, option, Path("/ckpt")).mask_token_id is None, config


def test_dream_option_takes_the_checkpoints_own_mask_id(tiny_world, ctx):
    """config.json and the tokenizer agree on an id other than Qwen's 151666: decode and train run with it."""
    own = read_config(tiny_world.drafter)["mask_token_id"]
    assert own != 151666
    assert load_diffusion_drafter(drafter_ref("decode", "dream", tiny_world.drafter), ctx).mask_token_id == own
    assert drafter_conventions(drafter_ref("train", "dream", tiny_world.drafter), tiny_world.drafter).mask_token_id \
        == own


def test_an_explicit_mask_id_is_still_checked_against_the_checkpoint(tiny_world, ctx):
    own = read_config(tiny_world.drafter)["mask_token_id"]
    wrong = drafter_ref("decode", "dream", tiny_world.drafter, f"drafter.mask_token_id={own + 1}")
    with pytest.raises(CheckpointError, match=f"contradicts the config.json mask_token_id {own}"):
        load_diffusion_drafter(wrong, ctx)
    with pytest.raises(CheckpointError, match=f"contradicts the config.json mask_token_id {own}"):
        drafter_conventions(wrong, tiny_world.drafter)
    explicit = drafter_ref("train", "dream", tiny_world.drafter, f"drafter.mask_token_id={own}")
    assert drafter_conventions(explicit, tiny_world.drafter).mask_token_id == own
