"""specdiff2: speculative decoding with masked-diffusion drafters."""

from specdiff2.errors import SpecDiffError

__all__ = ["SpecDiffError"]
__version__ = "0.1.0"
