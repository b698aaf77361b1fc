"""The 72B cluster command of the README (section "Verifier trajectories"): it composes, its layout is checked
against Qwen2.5-72B's shape, and with the checkpoints absent it stops in one line."""

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from specdiff2.data.trajectories import _join
from specdiff2.data.trajectory_storage import estimate
from specdiff2.errors import CheckpointError, ConfigError
from specdiff2.training.pipeline import resolve_checkpoints

ROOT = Path(__file__).resolve().parents[1]
QWEN72B = {"model_type": "qwen2", "vocab_size": 152064, "hidden_size": 8192, "intermediate_size": 29568,
           "num_hidden_layers": 80, "num_attention_heads": 64, "num_key_value_heads": 8, "rope_theta": 1e6,
           "max_position_embeddings": 32768, "rms_norm_eps": 1e-6, "tie_word_embeddings": False}


def readme_command() -> list[str]:
    """The torchrun line of the README's 72B block, as argv."""
    text = (ROOT / "README.md").read_text()
    start = text.index("torchrun --nproc-per-node 8 train.py drafter=diffucoder verifier=qwen72b")
    block = text[start: text.index("```", start)].replace("\\\n", " ")
    return shlex.split(block)


def test_the_72b_command_composes_with_tp8_and_the_paper_recipe(tmp_path, monkeypatch):
    argv = readme_command()
    overrides = argv[argv.index("train.py") + 1:]
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[*overrides, f"paths.output_dir={tmp_path}"])
    source = instantiate(cfg.job.trajectories)
    gen = source.generation
    assert (gen.backend, gen.tensor_parallel_size, gen.samples_per_prompt, gen.max_new_tokens) == ("engine", 8, 32, 2048)
    assert (gen.temperature, gen.top_p, gen.topk_logprobs, gen.num_prompts) == (0.5, 0.95, 16, 144)
    need = estimate([200] * gen.num_prompts, gen.samples_per_prompt, gen.max_new_tokens, gen.topk_logprobs, 18)
    assert 1.3e9 < need.bytes < 1.4e9  # the README's 1.3 GB (prompts of ~200 tokens)
    refs = instantiate(cfg.job.verifier), instantiate(cfg.job.drafter)
    with pytest.raises(CheckpointError) as err:
        resolve_checkpoints(*refs)
    line = str(err.value)
    assert "\n" not in line and "/ckpt/Qwen2.5-72B-Instruct" in line and "/ckpt/DiffuCoder-7B-cpGRPO" in line

    # The layout check reads config.json alone: TP=8 fits Qwen2.5-72B (then needs 8 processes), TP=16 does not.
    verifier = tmp_path / "qwen72b"
    verifier.mkdir()
    (verifier / "config.json").write_text(json.dumps(QWEN72B))
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ConfigError, match="needs 8 processes: launch with torchrun --nproc-per-node 8"):
        _join(gen, verifier)
    gen.tensor_parallel_size = 16
    with pytest.raises(ConfigError, match=r"num_key_value_heads \(8\) divisible by 16"):
        _join(gen, verifier)


@pytest.mark.slow  # a train.py process (~15 s of imports)
def test_the_72b_command_without_checkpoints_stops_in_one_line(tmp_path):
    argv = readme_command()
    cmd = [sys.executable, str(ROOT / "train.py"), *argv[argv.index("train.py") + 1:],
           f"hydra.run.dir={tmp_path / 'run'}"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
    assert lines[0].startswith("error:") and "verifier.path=" in lines[0] and "/ckpt/Qwen2.5-72B-Instruct" in lines[0]
