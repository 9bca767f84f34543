"""Unpadded: gather the real tokens of a padded batch and scatter them back, differentiably."""

import pytest
import torch

from modelcore.nn.unpad import Unpadded


@pytest.mark.parametrize(
    "mask",
    [
        [[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1]],  # right padding
        [[0, 1, 1, 1], [0, 0, 0, 1], [1, 1, 1, 1]],  # left padding
        [[1, 0, 1, 1], [0, 0, 0, 0], [1, 1, 0, 1]],  # holes and an empty row
    ],
    ids=["right", "left", "holes"],
)
def test_unpad_keeps_the_real_tokens_in_order_and_pad_restores_them_with_zeros(mask):
    mask = torch.tensor(mask)
    x = torch.randn(3, 4, 5, generator=torch.Generator().manual_seed(0))
    unpadded = Unpadded(mask)
    tokens = unpadded.unpad(x)
    assert unpadded.num_tokens == int(mask.sum()) == tokens.shape[0]
    assert torch.equal(tokens, x[mask.bool()])  # batch-major, left to right
    assert torch.equal(unpadded.pad(tokens), x * mask[..., None])
    heads = unpadded.pad(tokens.view(-1, 5, 1))  # trailing dims pass through
    assert heads.shape == (3, 4, 5, 1)


def test_gradients_flow_only_to_real_tokens():
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    x = torch.randn(2, 3, 4, requires_grad=True)
    unpadded = Unpadded(mask)
    tokens = unpadded.unpad(x) * 2
    (unpadded.pad(tokens) * torch.arange(1.0, 5.0)).sum().backward()
    expected = 2 * torch.arange(1.0, 5.0).expand(2, 3, 4) * mask[..., None]
    assert torch.equal(x.grad, expected)


def test_a_mask_that_is_not_2d_is_an_error():
    with pytest.raises(ValueError, match="attention_mask must be"):
        Unpadded(torch.ones(2, 3, 4))


def test_groups_hold_rows_of_similar_length_left_aligned_and_come_back_in_order():
    mask = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0], [0, 1, 1, 1, 0], [1, 0, 1, 0, 0]])
    unpadded = Unpadded(mask, attention_groups=2)
    tokens = torch.arange(1.0, 1.0 + unpadded.num_tokens)[:, None].repeat(1, 3)  # (N, 3): token k holds k + 1
    groups = unpadded.to_groups(tokens)
    # rows sorted by length (5, 3, 2, 2, 0) and split 3 + 2; each block as wide as its longest row
    assert [tuple(values.shape) for values, _ in groups] == [(3, 5, 3), (2, 2, 3)]
    values, key_mask = groups[0]
    assert values[:, :, 0].tolist() == [[3, 4, 5, 6, 7], [8, 9, 10, 0, 0], [1, 2, 0, 0, 0]]  # left-aligned, in order
    assert key_mask.shape == (3, 1, 1, 5) and key_mask[:, 0, 0].sum(1).tolist() == [5, 3, 2]
    values, key_mask = groups[1]
    assert values[:, :, 0].tolist() == [[11, 12], [0, 0]]
    assert key_mask[1, 0, 0].tolist() == [True, False]  # the empty row attends to one zero key, never to nothing
    back = unpadded.from_groups([v * 10 for v, _ in groups])
    assert torch.equal(back, tokens * 10)


def test_grouped_attention_equals_padded_attention_and_its_gradient():
    """Attention by groups gives each real query the output (and gradient) it gets in the padded batch."""
    g = torch.Generator().manual_seed(0)
    mask = torch.tensor([[1] * 7 + [0], [1, 1, 1] + [0] * 5, [0, 0] + [1] * 6, [1] * 8])
    q, k, v = (torch.randn(4, 8, 2, 4, generator=g, requires_grad=True) for _ in range(3))  # (B, T, nh, hs)

    def attend(q, k, v, key_mask):
        return torch.nn.functional.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=key_mask
        ).transpose(1, 2)

    padded = attend(q, k, v, mask.bool()[:, None, None, :])[mask.bool()]  # (N, nh, hs)
    unpadded = Unpadded(mask, attention_groups=3)
    packed = [unpadded.unpad(x) for x in (q, k, v)]
    grouped = [unpadded.to_groups(x) for x in packed]
    outs = [attend(qg, kg, vg, m) for (qg, m), (kg, _), (vg, _) in zip(*grouped, strict=True)]
    free = unpadded.from_groups(outs)
    torch.testing.assert_close(free, padded, rtol=1e-6, atol=1e-6)
    weights = torch.randn(padded.shape, generator=g)
    grads_padded = torch.autograd.grad((padded * weights).sum(), (q, k, v))
    grads_free = torch.autograd.grad((free * weights).sum(), (q, k, v))
    for a, b in zip(grads_free, grads_padded, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
