"""DynamicCache: appending in place gives what concatenation gives, through crops, reorders and autograd."""

from __future__ import annotations

import torch

from modelcore.nn.cache import DynamicCache, StaticCache


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


def test_append_slots_gives_room_that_a_writer_fills_like_update() -> None:
    """Native decoding asks for room and writes the new position itself: the same cache as ``update`` makes."""
    written, updated = DynamicCache(), DynamicCache()
    for cache in (written, updated):
        cache.update(*step(2, 5, 0), layer_idx=0)
    assert updated.append_slots([0, 1], count=1) is None  # no entry for layer 1 yet: use update
    assert updated.get_seq_length() == 5  # and layer 0 was left as it was
    with torch.no_grad():
        for seed in range(1, 30):  # past the first buffer's spare room: it grows and keeps what was written
            key, value = step(2, 1, seed)
            ((keys, values, first),) = written.append_slots([0], count=1)
            assert first == 4 + seed and keys.shape[-2] == values.shape[-2] == first + 1
            keys[..., first:, :], values[..., first:, :] = key, value
            expected = updated.update(key, value, layer_idx=0)
            torch.testing.assert_close((written.keys[0], written.values[0]), expected, rtol=0, atol=0)
    with torch.enable_grad():  # where autograd records, only update (it concatenates)
        assert written.append_slots([0], count=1) is None
    assert written.get_seq_length() == 34


def test_append_slots_after_crop_reorder_and_update_writes_after_the_cached_positions() -> None:
    """The views append_slots keeps for its fast path must not outlive a crop (assisted decoding rolls back), a
    reorder (beam search) or an update (the torch layers) of the same cache."""
    cache, reference = DynamicCache(), DynamicCache()
    for target in (cache, reference):
        target.update(*step(2, 5, 0), layer_idx=0)
    with torch.no_grad():
        for seed, action in enumerate(["append", "append", "crop", "append", "reorder", "append", "update", "append"]):
            key, value = step(2, 1, seed + 1)
            if action == "crop":
                cache.crop(4)
                reference.crop(4)
            elif action == "reorder":
                rows = torch.tensor([1, 0])
                cache.reorder(rows)
                reference.reorder(rows)
            elif action == "update":
                cache.update(key, value, layer_idx=0)
                reference.update(key, value, layer_idx=0)
            else:
                ((keys, values, first),) = cache.append_slots([0], count=1)
                keys[..., first:, :], values[..., first:, :] = key, value
                reference.update(key, value, layer_idx=0)
            torch.testing.assert_close((cache.keys[0], cache.values[0]), (reference.keys[0], reference.values[0]))
    assert cache.get_seq_length() == 8  # 5, two appended, cropped to 4, four more


def test_a_static_cache_gives_its_buffers_and_the_position() -> None:
    config = type("Config", (), {"num_hidden_layers": 2, "num_key_value_heads": 2, "head_dim": 4})()
    cache = StaticCache(config, max_batch_size=1, max_cache_len=8)
    ((keys, values, first),) = cache.append_slots([1], 1, torch.tensor([5]))
    assert keys is cache.keys[1] and values is cache.values[1] and first == 5
    assert cache.append_slots([1], 1, None) is None  # a fixed-size cache needs the position
    assert cache.append_slots([1], 1, torch.tensor([8])) is None  # past its end
