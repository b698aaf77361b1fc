"""Dream-v0 and DiffuCoder (model_type "Dream"): Qwen2 blocks and names without the causal mask, shifted logits.

Their hub config.json points at remote code (auto_map); nothing of it is needed here: decoding runs them on the
`Transformer`, training as transformers' `Qwen2ForCausalLM` with a 4D bidirectional mask. The pocket drafter uses
the same layout.
"""

from specdiff2.models.archs import qwen2
from specdiff2.models.archs.base import Arch, hf_decoder_args

ARCH = Arch("Dream", lambda cfg: hf_decoder_args(cfg, "Dream", qkv_bias=True), logit_shift=True, bidirectional=True,
            training=qwen2.TRAINING)
