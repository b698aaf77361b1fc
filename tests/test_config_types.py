"""Issue 22 item 4: strategy / acceptance / loader fields of the wrong type end in one line naming the key, when the
config is built (and before the first job of a multirun), not in a TypeError traceback from inside the engine."""

import subprocess
import sys

import pytest

from specdiff2.bench.common import compose
from specdiff2.cli import check_swept_types
from specdiff2.config_types import check_config_types
from specdiff2.errors import ConfigError
from tests.conftest import ROOT

CONF = ROOT / "conf"


@pytest.mark.parametrize("overrides,line", [
    (["decode.strategy.gamma=abc"], "decode.strategy.gamma='abc'; set an integer"),
    (["decode.strategy.steps=two"], "decode.strategy.steps='two'; set an integer"),
    (["decode.strategy.gamma=8.5"], "decode.strategy.gamma=8.5; set an integer"),
    (["decode=sd_ar", "decode.strategy.gamma=true"], "decode.strategy.gamma=True; set an integer"),
    (["decode=self_select", "decode.strategy.drafter_temperature=hot"],
     "decode.strategy.drafter_temperature='hot'; set a number"),
    (["decode=diffuspec", "decode.strategy.cps=yes"], "decode.strategy.cps='yes'; set true or false"),
    (["decode=diffuspec", "decode.strategy.cps_sampling=1"], "decode.strategy.cps_sampling=1; set a string"),
    (["decode.models.drafter.cache=5"], "decode.models.drafter.cache=5; set a string"),
    (["decode=diffuspec", "decode/proxy@decode.models.proxy=ngram", "decode.models.proxy.order=x"],
     "decode.models.proxy.order='x'; set an integer"),
    (["acceptance=tree", "temperature=hot"], "temperature='hot'; set a number"),  # job.sampling.temperature: ${temperature}
    (["drafter=dream", "drafter.path=/x", "drafter.mask_token_id=abc"], "drafter.mask_token_id='abc'; set an integer or null"),
    (["+decode.strategy.gama=8"], "decode.strategy.gama is not a setting of SpecDiffStrategy (it takes: gamma, steps, proposal)"),
])
def test_a_field_of_the_wrong_type_is_one_line(overrides, line):
    with pytest.raises(ConfigError) as err:
        check_config_types(compose("decode", overrides))
    assert str(err.value).startswith(line) and "\n" not in str(err.value)


@pytest.mark.parametrize("overrides", [
    ["decode=sd_ar"], ["decode=self_select", "decode.strategy.drafter_temperature=2"],
    ["decode=diffuspec", "decode/proxy@decode.models.proxy=ar", "decode.strategy.tau=1"],
    ["acceptance=rejection", "temperature=0.7", "drafter=llada", "drafter.path=/x"],
])
def test_every_shipped_option_passes(overrides):
    check_config_types(compose("decode", overrides))


def test_a_multirun_sweep_is_checked_value_by_value_before_its_first_job():
    line = check_swept_types(["-m", "decode.strategy.gamma=8,abc"], CONF, "decode")
    assert line == "error: decode.strategy.gamma='abc'; set an integer"
    line = check_swept_types(["-m", "decode=self_select", "decode.strategy.k=1,x", "temperature=0"], CONF, "decode")
    assert line == "error: decode.strategy.k='x'; set an integer"
    for ok in (["-m", "decode.strategy.gamma=8,16", "decode.strategy.steps=1,2"], ["-m", "decode=ar,specdiff"],
               ["decode.strategy.gamma=8"]):
        assert check_swept_types(ok, CONF, "decode") is None


@pytest.mark.slow  # three decode.py subprocesses (~4 s each); the checks above run the same code in-process
@pytest.mark.parametrize("args,line", [
    (["decode.strategy.gamma=abc"], "error: decode.strategy.gamma='abc'; set an integer"),
    (["decode.strategy.steps=two"], "error: decode.strategy.steps='two'; set an integer"),
    (["-m", "decode.strategy.gamma=8,abc"], "error: decode.strategy.gamma='abc'; set an integer"),
])
def test_the_issues_commands_print_one_line(args, line):
    res = subprocess.run([sys.executable, "decode.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         check=False)
    assert res.returncode == 2 and res.stderr.strip() == line, res.stderr[-2000:]
