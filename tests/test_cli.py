"""Entry points: bad input ends with exactly one line on stderr and exit status 2."""

import subprocess
import sys

import pytest

from tests.conftest import ROOT


def run(script, *args):
    return subprocess.run([sys.executable, str(ROOT / script), *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)


@pytest.mark.parametrize("script,args,needle", [
    ("decode.py", ["drafter=nope"], "unknown option drafter=nope; choose one of:"),
    ("train.py", ["verifier=gpt5"], "unknown option verifier=gpt5"),
    ("decode.py", ["-m", "decode=ar,nope"], "unknown option decode=nope"),
])
def test_unknown_config_option(script, args, needle):
    res = run(script, *args)
    assert res.returncode == 2
    assert needle in res.stderr and res.stderr.strip().count("\n") == 0


@pytest.mark.slow  # a decode.py subprocess (~3 s); test_engine/test_cli_keys check the same errors in-process
def test_missing_checkpoint_is_one_line():
    res = run("decode.py", "verifier=qwen72b", "drafter=diffucoder")
    assert res.returncode == 2
    lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "huggingface-cli download Qwen/Qwen2.5-72B-Instruct" in lines[0]


@pytest.mark.slow  # a train.py subprocess (~9 s); test_cli_keys checks the same rule table in-process
def test_nonsense_training_setting_is_one_line_before_any_work():
    res = run("train.py", "trainer.max_steps=-5", "logger=tiny")  # Lightning alone prints several lines
    lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
    assert res.returncode == 2 and len(lines) == 1, res.stderr[-2000:]
    assert lines[0].startswith("error: trainer.max_steps=-5; set an integer >= 0")
    assert "[pocket" not in res.stdout and "[trajectories]" not in res.stdout  # stopped before the heavy work


@pytest.mark.parametrize("script,args,needle", [
    ("decode.py", ["max_new_token=5"], "error: unknown config key max_new_token; did you mean max_new_tokens?"),
    ("train.py", ["optim.lr=1"], "error: unknown config key optim.lr; did you mean optim.optimizer.lr"),
    ("decode.py", ["max_new_tokens=abc"], "error: max_new_tokens='abc'; set an integer >= 1"),
    ("decode.py", ["hydra.run.dir=README.md"], "error: hydra.run.dir=README.md is a file"),
])
def test_misspelt_keys_and_typed_nonsense_are_one_line(script, args, needle):
    res = run(script, *args)
    lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
    assert res.returncode == 2 and len(lines) == 1 and lines[0].startswith(needle), res.stderr[-2000:]
