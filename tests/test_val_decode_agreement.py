"""The drafter q that distillation validates (HF model, packed windows) is the q the decode engine drafts with.

val/alpha_j is only a forecast of decode acceptance if both paths compute the same function of a window; this
pins it for a bidirectional drafter (exact re-encode) and a causal one (prefix KV cache carried across windows of
one sequence, as in decoding), with the logit shift and MASK-block positions of each path.
"""

import pytest
import torch

from specdiff2.data.windows import Trajectory, WindowCollator, window_logits, window_offsets
from specdiff2.decode.loading import engine_context, load_diffusion_drafter, load_verifier
from specdiff2.models.checkpoint import read_config
from specdiff2.models.diffusion import prefix_attention
from specdiff2.models.hf import load_hf_drafter
from specdiff2.models.refs import CheckpointRef

pytestmark = pytest.mark.usefixtures("one_thread")
GAMMA = 5


@pytest.mark.parametrize("name,cache", [("drafter", "auto"), ("causal_drafter", "auto"), ("causal_drafter", "exact")])
def test_validation_and_decode_drafter_logits_agree(tiny_world, name, cache):
    path = getattr(tiny_world, name)
    verifier, tok = load_verifier(CheckpointRef("verifier", str(tiny_world.verifier)), torch.device("cpu"), 128)
    drafter = load_diffusion_drafter(CheckpointRef("drafter", str(path), logit_shift=True), engine_context(verifier, tok),
                                     cache)
    g = torch.Generator().manual_seed(0)
    traj = Trajectory(torch.randint(3, len(tok) - 2, (40,), generator=g), 6)  # ordinary token ids
    windows = [(0, o) for o in window_offsets(traj.prompt_len, len(traj.tokens), GAMMA, 3, 64)]
    collate = WindowCollator([traj], GAMMA, drafter.mask_token_id, True, "exact", row_tokens=256,
                             prefix_attention=prefix_attention(read_config(path)))
    with torch.no_grad():
        val_logits = window_logits(load_hf_drafter(path).eval(), collate([[w] for w in windows]))  # (W, γ, V_d)
    for w, (_, o) in enumerate(windows):  # each window: a fresh prefix-cache prefill, then the engine's block pass
        decode_logits = drafter.window_logits(traj.tokens, o, torch.full((GAMMA,), drafter.mask_token_id))  # (γ, V)
        rows = val_logits.shape[-1]
        q_dec = decode_logits[:, :rows].log_softmax(-1)  # (γ, V_d)
        finite = torch.isfinite(q_dec)  # the decode side masks ids the drafter may not propose (MASK, pad)
        q_val = val_logits[w].masked_fill(~finite, -torch.inf).log_softmax(-1)  # (γ, V_d) same support
        torch.testing.assert_close(q_dec[finite], q_val[finite], rtol=1e-4, atol=1e-4)
        assert torch.equal(q_dec.argmax(-1), q_val.argmax(-1))
