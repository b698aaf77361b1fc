"""Issue 22 item 13: the summary tables of train.py and decode.py print paths on one line (rich folded them over
2-3 lines at 80 columns), so a path can be copied from the output."""

from specdiff2.decode.run import print_summary
from specdiff2.training.summary import print_training_summary

RUN = "/work/main/outputs/2026-11-27/10-00-00-a-long-run-name-for-a-sweep/" + "x" * 60


def _lines_with(text: str, needle: str) -> list[str]:
    return [line for line in text.splitlines() if needle in line]


def test_training_summary_paths_stay_on_one_line(capsys):
    sections = {"trajectories": {"store": f"{RUN}/store", "trajectories": 8},
                "export": {"weights": "last", "drafter": f"{RUN}/export/drafter"}}
    print_training_summary({"sections": sections, "val_before": {}, "val_after": {}})
    out = capsys.readouterr().out
    assert len(_lines_with(out, f"{RUN}/export/drafter")) == 1 and len(_lines_with(out, f"{RUN}/store")) == 1, out


def test_decode_summary_title_keeps_its_output_directory_on_one_line(capsys):
    summary = {"prompts": 1, "new_tokens": 8, "verifier_steps": 3, "mean_accept_len": 2.667, "tokens_per_s": 10.0,
               "drafter_s": 0.1, "verifier_s": 0.2, "other_s": 0.1, "accept_hist": [1, 1, 1]}
    print_summary(summary, f"specdiff on humaneval (1 prompts) → {RUN}")
    out = capsys.readouterr().out
    assert len(_lines_with(out, RUN)) == 1 and "decode/mean_accept_len" in out, out
