"""DynamicCache: appending in place gives what concatenation gives, through crops, reorders and autograd."""

from __future__ import annotations

import torch

from modelcore.nn.cache import DynamicCache


def step(batch: int, length: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 2, length, 4, generator=generator), torch.randn(batch, 2, length, 4, generator=generator)


def test_appends_equal_concatenation_and_are_written_in_place() -> None:
    cache, expected_keys, expected_values = DynamicCache(), [], []
    storages = set()
    for seed, length in enumerate([5, 1, 1, 3, 1, 1, 1, 40, 1]):
        key, value = step(3, length, seed)
        expected_keys.append(key)
        expected_values.append(value)
        keys, values = cache.update(key, value, layer_idx=0)
        torch.testing.assert_close(keys, torch.cat(expected_keys, dim=-2), rtol=0, atol=0)
        torch.testing.assert_close(values, torch.cat(expected_values, dim=-2), rtol=0, atol=0)
        storages.add(keys.untyped_storage().data_ptr())
    assert cache.get_seq_length() == 54
    assert len(storages) < 6  # a buffer is reused over several steps, not reallocated per token


def test_crop_then_append_overwrites_the_dropped_positions() -> None:
    cache = DynamicCache()
    first, second, third = step(2, 6, 0), step(2, 3, 1), step(2, 2, 2)
    cache.update(*first, layer_idx=0)
    cache.update(*second, layer_idx=0)
    cache.crop(7)
    keys, _ = cache.update(*third, layer_idx=0)
    torch.testing.assert_close(keys, torch.cat([first[0], second[0][..., :1, :], third[0]], dim=-2), rtol=0, atol=0)


def test_reorder_then_append() -> None:
    cache = DynamicCache()
    first, second, third = step(3, 4, 0), step(3, 1, 1), step(3, 1, 2)
    cache.update(*first, layer_idx=0)
    cache.update(*second, layer_idx=0)
    rows = torch.tensor([2, 2, 0])
    cache.reorder(rows)
    keys, values = cache.update(*third, layer_idx=0)
    expected = torch.cat([torch.cat([first[1], second[1]], dim=-2)[rows], third[1]], dim=-2)
    torch.testing.assert_close(values, expected, rtol=0, atol=0)


def test_gradients_flow_through_appended_steps() -> None:
    key = torch.randn(1, 2, 3, 4, requires_grad=True)
    later = torch.randn(1, 2, 1, 4, requires_grad=True)
    cache = DynamicCache()
    cache.update(key, key * 2, layer_idx=0)
    keys, values = cache.update(later, later, layer_idx=0)
    first_sum = keys.sum()
    keys, values = cache.update(later * 3, later, layer_idx=0)
    (first_sum + keys.sum() + values.sum()).backward()
    torch.testing.assert_close(key.grad, torch.full_like(key, 4.0))  # keys twice, values (2 * key) once
    torch.testing.assert_close(later.grad, torch.full_like(later, 7.0))  # 1 + (1 + 3) + (1 + 1)
