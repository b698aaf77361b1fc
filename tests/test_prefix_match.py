"""α_j (joint prefix match) and the product of per-position marginals: exact against loops over windows."""

import pytest
import torch

from specdiff2.losses.prefix_match import (
    prefix_match_counts,
    prefix_match_metrics,
    prefix_match_rates,
)


def _loops(hits: list[list[bool]], lengths: list[int], gamma: int) -> tuple[list[float], list[float]]:
    """α_j and Π_{i≤j} m_i by counting windows one at a time (positions past a window's length do not exist)."""
    joint, prod = [], 1.0
    marginal_prod = []
    for j in range(1, gamma + 1):
        reach = [w for w in range(len(hits)) if lengths[w] >= j]
        n = max(len(reach), 1)
        joint.append(sum(all(hits[w][:j]) for w in reach) / n)
        prod *= sum(hits[w][j - 1] for w in reach) / n
        marginal_prod.append(prod)
    return joint, marginal_prod


@pytest.mark.parametrize("seed", range(6))
def test_rates_match_counting_windows(seed):
    g = torch.Generator().manual_seed(seed)
    windows, gamma = 7, 5
    hits = torch.rand(windows, gamma, generator=g) < 0.7  # (W, γ)
    lengths = torch.randint(0, gamma + 1, (windows,), generator=g)  # 0: a padding window
    valid = torch.arange(gamma)[None] < lengths[:, None]  # (W, γ) prefix masks
    joint, marginal_prod = prefix_match_rates(prefix_match_counts(hits, valid))
    want_joint, want_prod = _loops(hits.tolist(), lengths.tolist(), gamma)
    assert joint.tolist() == pytest.approx(want_joint, abs=1e-12)
    assert marginal_prod.tolist() == pytest.approx(want_prod, abs=1e-12)
    # Batches add up: the counts of two halves are the counts of the whole.
    halves = prefix_match_counts(hits[:3], valid[:3]) + prefix_match_counts(hits[3:], valid[3:])
    whole = prefix_match_counts(hits, valid)
    assert all(torch.equal(a, b) for a, b in zip(vars(halves).values(), vars(whole).values()))


def test_a_non_prefix_mask_is_read_as_its_prefix_and_hits_past_it_do_not_count():
    hits = torch.tensor([[True, True, True]])
    counts = prefix_match_counts(hits, torch.tensor([[True, False, True]]))
    assert counts.windows.tolist() == [1, 0, 0] and counts.joint.tolist() == [1, 0, 0]


def test_correlated_hits_put_the_joint_above_the_product_of_marginals():
    """Two windows: one right everywhere, one wrong everywhere. m_j = 1/2, so Π m = 1/2^j, but α_j = 1/2."""
    hits = torch.tensor([[True] * 4, [False] * 4])
    metrics = prefix_match_metrics(prefix_match_counts(hits))
    assert [float(metrics[f"alpha_{j}"]) for j in range(1, 5)] == [0.5] * 4
    assert [float(metrics[f"marginal_prod_at_pos_{j}"]) for j in range(1, 5)] == [0.5, 0.25, 0.125, 0.0625]
    # Independent hits (one window per pattern of a product set): joint = product.
    grid = torch.cartesian_prod(torch.tensor([True, False]), torch.tensor([True, False]))  # (4, 2)
    joint, prod = prefix_match_rates(prefix_match_counts(grid))
    assert torch.allclose(joint, prod)

