"""bench/trajectories_speed.py runs on CPU (tiny shape): the engine and HF sample from the same weights."""

import torch

from specdiff2.bench.trajectories_speed import TINY, main_with, random_pair
from specdiff2.models.config import ModelArgs


def test_engine_and_hf_share_weights_and_logits():
    model, hf = random_pair(ModelArgs(**TINY), torch.float32, torch.device("cpu"), with_hf=True)
    ids = torch.randint(0, TINY["vocab_size"], (2, 9))
    ours = model(ids, torch.arange(9)[None].expand(2, 9))  # (B, L, V)
    assert torch.allclose(ours, hf(ids).logits, atol=1e-4)
    assert model.model.layers[0].mlp.up_proj.weight.data_ptr() == hf.model.layers[0].mlp.up_proj.weight.data_ptr()


def test_smoke_table_on_cpu(capsys):
    rows = main_with(["--shape", "tiny", "--device", "cpu", "--dtype", "float32", "--batch", "3",
                      "--prompt-tokens", "5", "--new-tokens", "4", "--repeats", "1", "--topk", "4", "--check"])
    assert [r["method"].split(" (")[0] for r in rows] == ["HF generate, static cache", "engine trajectories",
                                                          "engine trajectories"]
    assert all(r["tok/s"] > 0 for r in rows) and rows[0]["x HF static"] == 1.0
    out = capsys.readouterr().out
    assert "CPU" in out and "greedy eager/eager == eager: 3/3 rows" in out  # names the device; the check ran
