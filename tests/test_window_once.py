"""The drafting window is stated once (conf/pocket `drafter.window`): the training windows and every full-window decode
option follow it, so changing it there changes them all (issue 23)."""

import pytest
from omegaconf import OmegaConf

from specdiff2.bench.common import compose

FOLLOWERS = {"specdiff": ["gamma"], "self_select": ["gamma"], "tree": ["gamma"], "diffuspec": ["gamma", "gamma_max"]}


@pytest.mark.parametrize("window", [16, 8])
def test_decode_gamma_follows_the_pocket_window(window):
    for method, keys in FOLLOWERS.items():
        strategy = compose("decode", [f"decode={method}", f"pocket.drafter.window={window}"]).decode.strategy
        assert [strategy[k] for k in keys] == [window] * len(keys), method


@pytest.mark.parametrize("data", ["tiny", "humaneval", "pocket"])
def test_training_windows_follow_the_pocket_window(data):
    cfg = compose("train", [f"data={data}", "pocket.drafter.window=8"])
    assert OmegaConf.select(cfg, "data.windows.gamma") == 8
    assert compose("train", [f"data={data}"]).data.windows.gamma == 16  # the stated default
