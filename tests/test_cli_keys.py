"""Issue 13 item 8: misspelt or unknown keys, typed nonsense and unusable output directories end in one line
that names the key (and the closest valid key), before Hydra or torch print a traceback."""

import re

import pytest

from specdiff2.bench.common import compose
from specdiff2.cli import (
    DECODE_SETTINGS,
    TRAIN_SETTINGS,
    check_keys,
    check_output_dirs,
    check_settings,
    new_top_level_keys,
)
from specdiff2.errors import ConfigError
from tests.conftest import ROOT

CONF = ROOT / "conf"


@pytest.mark.parametrize("config,argv,suggested", [
    ("decode", ["max_new_token=5"], ["max_new_tokens"]),
    ("decode", ["temprature=0.5"], ["temperature"]),
    ("decode", ["decode.strategy.gama=8"], ["decode.strategy.gamma"]),
    ("train", ["trainer.max_step=2"], ["trainer.max_steps"]),
    ("train", ["optim.lr=1"], ["optim.optimizer.lr"]),
    ("train", ["lr=1e-3"], ["optim.optimizer.lr"]),
])
def test_misspelt_key_names_the_closest_valid_key_and_it_composes(config, argv, suggested):
    message = check_keys(argv, CONF, config)
    key = argv[0].split("=")[0]
    assert message and message.startswith(f"error: unknown config key {key};") and "\n" not in message
    named = re.findall(r"did you mean (.+)\?", message)[0].split(" or ")
    assert set(suggested) <= set(named)
    for key in named:  # following the hint works: the named key composes
        compose(config, [f"{key}={argv[0].split('=')[1]}"])


def test_a_key_of_another_group_option_names_that_option():
    message = check_keys(["decode.strategy.k=4"], CONF, "decode")
    assert "decode=self_select" in message
    compose("decode", ["decode=self_select", "decode.strategy.k=4"])


def test_valid_keys_added_keys_and_sweeps_pass():
    assert check_keys(["decode=self_select", "decode.strategy.k=3", "max_new_tokens=4"], CONF, "decode") is None
    assert check_keys(["+foo=1", "+trainer.profiler=simple"], CONF, "train") is None
    assert check_keys(["-m", "decode=ar,self_select", "max_new_tokens=4"], CONF, "decode") is None
    assert check_keys(["hydra.run.dir=/tmp/x", "hydra/job_logging=disabled"], CONF, "decode") is None
    assert new_top_level_keys(["+foo=1", "+trainer.profiler=simple", "max_new_tokens=4"], CONF) == ["+foo"]


@pytest.mark.parametrize("key,value,needle", [
    ("max_new_tokens", "abc", "set an integer >= 1"), ("max_new_tokens", 4.5, "set an integer >= 1"),
    ("max_seq_len", "abc", "set an integer >= 2"), ("seed", "abc", "set an integer >= 0"),
    ("warmup", "maybe", "set true or false"), ("device", "tpu", "use auto, cpu, cuda or cuda:N"),
])
def test_decode_settings_refuse_wrong_types(key, value, needle):
    values = {**{k: None for k in DECODE_SETTINGS}, "max_new_tokens": 4, "max_seq_len": 64, "seed": 0,
              "warmup": True, "device": "cpu", "paths.cache_dir": str(ROOT / ".cache"), key: value}
    with pytest.raises(ConfigError, match=f"^{key}=") as err:
        check_settings(values, DECODE_SETTINGS)
    assert needle in str(err.value)


def test_settings_refuse_an_unusable_cache_dir(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    base = {"seed": 0, "progress_bar": True, "module.online_topk": 0}
    for bad, needle in ((afile, "is a file"), (afile / "sub", "cannot be created")):
        with pytest.raises(ConfigError, match=needle):
            check_settings({**base, "paths.cache_dir": str(bad)}, TRAIN_SETTINGS)
    check_settings({**base, "paths.cache_dir": str(tmp_path / "new")}, TRAIN_SETTINGS)
    with pytest.raises(ConfigError, match="progress_bar='maybe'; set true or false"):
        check_settings({**base, "progress_bar": "maybe", "paths.cache_dir": str(tmp_path)}, TRAIN_SETTINGS)


def test_hydra_run_dir_that_is_a_file_or_uncreatable_is_one_line(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert "is a file" in check_output_dirs([f"hydra.run.dir={afile}"])
    assert "cannot be created" in check_output_dirs([f"hydra.run.dir={afile}/run"])
    assert "hydra.sweep.dir" in check_output_dirs(["-m", f"hydra.sweep.dir={afile}"])
    assert check_output_dirs([f"hydra.run.dir={tmp_path / 'ok'}"]) is None and (tmp_path / "ok").is_dir()


@pytest.mark.parametrize("config", ["decode", "train"])
def test_a_mandatory_value_left_unset_is_one_line_naming_it(config):
    from omegaconf import OmegaConf

    from specdiff2.cli import check_required

    check_required(OmegaConf.to_container(compose(config, []), resolve=False))  # the defaults set everything
    with pytest.raises(ConfigError, match=r"^data.prompts.path is required .*pass data.prompts.path=VALUE$"):
        check_required(OmegaConf.to_container(compose(config, ["data=jsonl"]), resolve=False))
