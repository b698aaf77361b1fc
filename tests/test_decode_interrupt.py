"""Ctrl-C during decode.py: one line, the finished prompts' rows kept, and a summary.json of what finished."""

import json
from types import SimpleNamespace

import pytest

from specdiff2.decode.engine import Generation
from specdiff2.decode.run import Interrupted, run_prompts


class Tok:
    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [ord(c) for c in text]}

    def decode(self, ids):
        return "".join(chr(i) for i in ids)


class StopsAtThird:
    """A stand-in engine whose third generation is interrupted (the user presses Ctrl-C)."""

    tokenizer, seed = Tok(), 0

    def __init__(self):
        self.calls = 0

    def generate(self, ids, max_new, seed=None):
        self.calls += 1
        if self.calls == 4:  # warm-up + two prompts, then Ctrl-C
            raise KeyboardInterrupt
        metrics = {"new_tokens": 2, "verifier_steps": 1, "mean_accept_len": 2.0, "tokens_per_s": 10.0, "wall_s": 0.2,
                   "drafter_s": 0.1, "verifier_s": 0.1, "other_s": 0.0, "accept_hist": [0, 1]}
        return Generation([65, 66], "max_new_tokens", metrics, [(1, 2)])

    def prepare(self, prompts, max_new):  # the untimed capture pass: no generation of its own here
        return 0


def test_ctrl_c_keeps_finished_prompts_and_writes_their_summary(tmp_path):
    prompts = [SimpleNamespace(id=str(i), text=f"p{i}") for i in range(5)]
    with pytest.raises(Interrupted) as err:
        run_prompts(StopsAtThird(), prompts, 2, tmp_path, "specdiff")
    assert "interrupted after 2 of 5 prompts" in str(err.value) and "\n" not in str(err.value)
    rows = (tmp_path / "generations.jsonl").read_text().splitlines()
    assert [json.loads(r)["id"] for r in rows] == ["0", "1"]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["interrupted"] and summary["prompts"] == 2 and summary["prompts_requested"] == 5
    assert summary["accept_hist"] == [0, 2]


def test_ctrl_c_while_loading_is_one_line(capsys):
    from specdiff2.cli import one_line_errors

    with pytest.raises(SystemExit) as stop:
        with one_line_errors():
            raise KeyboardInterrupt
    err = capsys.readouterr().err
    assert stop.value.code == 130 and err.startswith("error: interrupted (Ctrl-C)") and err.count("\n") == 1
