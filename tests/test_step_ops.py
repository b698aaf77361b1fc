"""bench/step_ops.py counts kernel-launching ops, not views: the proxy the launch-bound step is tracked with."""

import torch

from specdiff2.bench.step_ops import device_ops


def test_views_are_free_and_kernels_count_once_each():
    x = torch.arange(12.0)
    assert device_ops(lambda: x.view(3, 4).t()[1:].unsqueeze(0)) == 0
    assert device_ops(lambda: x.view(3, 4).t().reshape(-1)) == 1  # a transposed reshape copies: one kernel
    assert device_ops(lambda: x + 1) == 1
    assert device_ops(lambda: (x * 2).sum()) == 2
