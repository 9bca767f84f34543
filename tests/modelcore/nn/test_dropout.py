"""fast_dropout: torch's dropout distribution from a quarter of a random word per element."""

import pytest
import torch

from modelcore.nn.dropout import dropout_module, fast_dropout

N = 1 << 20


@pytest.mark.parametrize("p", [0.1, 0.37, 0.9])
def test_drops_each_element_with_probability_p_and_scales_the_rest(p):
    torch.manual_seed(0)
    x = torch.rand(N) + 0.5  # no zeros of its own
    y = fast_dropout(x, p)
    kept = y != 0
    sigma = (p * (1 - p) / N) ** 0.5
    assert abs(kept.float().mean().item() - (1 - p)) < 5 * sigma
    torch.testing.assert_close(y[kept], x[kept] / (1 - p))


def test_masks_are_independent_between_neighbours_and_calls():
    """Four masks come from one random word: neighbours (lanes of a word, and across words) must not correlate."""
    torch.manual_seed(0)
    ones = torch.ones(N)
    first, second = fast_dropout(ones, 0.5) != 0, fast_dropout(ones, 0.5) != 0
    bound = 5 / N**0.5  # five standard errors of a correlation between independent masks
    for lag in (1, 2, 3, 4, 5, 8):
        a, b = first[:-lag].float(), first[lag:].float()
        assert abs(torch.corrcoef(torch.stack([a, b]))[0, 1].item()) < bound, f"lag {lag}"
    assert abs(torch.corrcoef(torch.stack([first.float(), second.float()]))[0, 1].item()) < bound
    for lane in range(4):  # each of a word's four 16-bit lanes keeps 1 - p of its elements
        assert abs(first[lane::4].float().mean().item() - 0.5) < 5 * (0.25 / (N / 4)) ** 0.5


def test_seeded_by_torch_manual_seed_and_restored_with_the_rng_state():
    x = torch.randn(4, 33, 7)
    torch.manual_seed(3)
    a = fast_dropout(x, 0.2)
    state = torch.get_rng_state()
    b = fast_dropout(x, 0.2)
    torch.set_rng_state(state)
    assert torch.equal(fast_dropout(x, 0.2), b)  # a resumed run draws the same masks
    torch.manual_seed(3)
    assert torch.equal(fast_dropout(x, 0.2), a)
    assert not torch.equal(a, b)


def test_gradient_is_the_same_mask_and_scale():
    torch.manual_seed(0)
    x = torch.randn(64, 48, requires_grad=True)
    y = fast_dropout(x, 0.25)
    weights = torch.randn(64, 48)
    (y * weights).sum().backward()
    expected = torch.where(y != 0, weights / 0.75, torch.zeros(()))
    torch.testing.assert_close(x.grad, expected)


def test_dtype_layout_and_identities():
    torch.manual_seed(0)
    x = torch.randn(8, 16, dtype=torch.bfloat16)
    assert fast_dropout(x, 0.5).dtype == torch.bfloat16
    strided = torch.randn(16, 8).t()  # not contiguous
    out = fast_dropout(strided, 0.5)
    assert out.shape == (8, 16) and torch.equal(out[out != 0], strided[out != 0] * 2)
    assert fast_dropout(x, 0.5, training=False) is x
    assert fast_dropout(x, 0.0) is x
    assert torch.equal(fast_dropout(x, 1.0), torch.zeros_like(x))
    assert fast_dropout(torch.empty(0, 3), 0.5).shape == (0, 3)
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="between 0 and 1"):
            fast_dropout(x, bad)


def test_dropout_module_follows_the_module_p_and_mode():
    module = torch.nn.Dropout(0.5)
    x = torch.ones(1000)
    torch.manual_seed(0)
    fast = dropout_module(module, x, fast_masks=True)
    torch.manual_seed(0)
    assert torch.equal(fast, fast_dropout(x, 0.5))
    torch.manual_seed(0)
    torch_masks = dropout_module(module, x, fast_masks=False)
    torch.manual_seed(0)
    assert torch.equal(torch_masks, module(x))
    module.eval()
    assert dropout_module(module, x, fast_masks=True) is x
