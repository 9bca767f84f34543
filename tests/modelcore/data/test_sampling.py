"""Batch samplers, measured on the token lengths of real Rotten Tomatoes sentences."""

from __future__ import annotations

import pytest
import torch

from modelcore import AutoTokenizer
from modelcore.data import DataCollatorWithPadding, LengthGroupedSampler, RandomBatchSampler, lengths_of


@pytest.fixture(scope="module")
def tokenized(minilm_dir, rotten_tomatoes):
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir)
    sample = rotten_tomatoes[:5000]
    ids = tokenizer([r["text"] for r in sample])["input_ids"]
    return [{"input_ids": row, "label": r["label"]} for row, r in zip(ids, sample, strict=True)]


@pytest.fixture(scope="module")
def lengths(tokenized):
    return lengths_of(tokenized)


def _flat(batches):
    return [i for batch in batches for i in batch]


def _mean_spread(batches, lengths):
    """Mean over batches of (longest - shortest): the padding a batch carries per row, roughly."""
    spreads = [max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches]
    return sum(spreads) / len(spreads)


SAMPLERS = {
    "grouped": lambda lengths, **kw: LengthGroupedSampler(lengths, mega_batch_mult=8, **kw),
    "random": lambda lengths, **kw: RandomBatchSampler(len(lengths), **kw),
}


@pytest.mark.parametrize("make", SAMPLERS.values(), ids=SAMPLERS.keys())
def test_every_index_once_per_epoch(make, lengths):
    sampler = make(lengths, batch_size=32)
    for epoch in range(2):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler) == -(-len(lengths) // 32)
        assert sorted(_flat(batches)) == list(range(len(lengths)))
        assert all(len(b) == 32 for b in batches[:-1]) and len(batches[-1]) == len(lengths) % 32


@pytest.mark.parametrize("make", SAMPLERS.values(), ids=SAMPLERS.keys())
def test_drop_last(make, lengths):
    sampler = make(lengths, batch_size=32, drop_last=True)
    batches = list(sampler)
    assert len(batches) == len(sampler) == len(lengths) // 32
    assert all(len(b) == 32 for b in batches)
    assert len(set(_flat(batches))) == len(_flat(batches))


@pytest.mark.parametrize("make", SAMPLERS.values(), ids=SAMPLERS.keys())
def test_deterministic_per_seed_and_epoch(make, lengths):
    a, b = make(lengths, batch_size=16, seed=7), make(lengths, batch_size=16, seed=7)
    a.set_epoch(3)
    b.set_epoch(3)
    assert list(a) == list(b)
    assert list(a) == list(a)  # iterating again repeats the epoch
    b.set_epoch(4)
    assert list(a) != list(b)
    assert list(make(lengths, batch_size=16, seed=8)) != list(make(lengths, batch_size=16, seed=7))


def test_length_grouping_cuts_padding(lengths):
    grouped = list(LengthGroupedSampler(lengths, batch_size=32))
    shuffled = list(RandomBatchSampler(len(lengths), batch_size=32))
    assert _mean_spread(grouped, lengths) < 0.2 * _mean_spread(shuffled, lengths)


def test_longest_batch_first_and_order_shuffled(lengths):
    sampler = LengthGroupedSampler(lengths, batch_size=32)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert max(lengths[i] for i in batches[0]) == max(lengths)
        maxima = [max(lengths[i] for i in b) for b in batches[1:-1]]
        assert maxima != sorted(maxima, reverse=True)  # not simply longest to shortest


def test_grouped_batches_pad_less_when_collated(tokenized, lengths, minilm_dir):
    collate = DataCollatorWithPadding(AutoTokenizer.from_pretrained(minilm_dir))

    def padding_share(sampler):
        masks = [collate([tokenized[i] for i in batch])["attention_mask"] for batch in sampler]
        return 1 - sum(int(m.sum()) for m in masks) / sum(m.numel() for m in masks)

    grouped = padding_share(LengthGroupedSampler(lengths, batch_size=32))
    assert grouped < 0.05 < padding_share(RandomBatchSampler(len(lengths), batch_size=32))


@pytest.mark.parametrize("make", SAMPLERS.values(), ids=SAMPLERS.keys())
def test_start_batch_resumes_the_tail(make, lengths):
    sampler = make(lengths, batch_size=32, seed=1)
    sampler.set_epoch(2)
    whole = list(sampler)
    sampler.skip_batches(50)
    assert len(sampler) == len(whole) - 50
    assert list(sampler) == whole[50:]
    resumed = make(lengths, batch_size=32, seed=1)  # a restarted process restoring (epoch=2, step=50)
    resumed.set_epoch(2)
    resumed.skip_batches(50)
    assert list(resumed) == whole[50:]
    first_epoch = list(make(lengths, batch_size=32, seed=1))
    assert list(make(lengths, batch_size=32, seed=1, start_batch=7)) == first_epoch[7:]
    sampler.set_epoch(3)  # a new epoch starts from its first batch
    assert len(list(sampler)) == len(whole)
    with pytest.raises(ValueError, match="skip"):
        sampler.skip_batches(len(whole) + 1)


@pytest.mark.parametrize("make", SAMPLERS.values(), ids=SAMPLERS.keys())
@pytest.mark.parametrize("num_samples", [5000, 4999, 4993])
def test_replicas_split_each_global_batch(make, lengths, num_samples):
    lengths = lengths[:num_samples]
    single = list(make(lengths, batch_size=64, seed=5))  # global batches: one replica with the global size
    ranks = [list(make(lengths, batch_size=32, seed=5, num_replicas=2, rank=r)) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == len(single)
    for step, (a, b) in enumerate(zip(*ranks, strict=True)):
        assert len(a) == len(b)
        if step < len(single) - 1:
            assert not set(a) & set(b)
            assert a + b == single[step]  # rank r holds slice r of the global batch
    covered = set(_flat(ranks[0])) | set(_flat(ranks[1]))
    assert covered == set(range(num_samples))
    repeats = len(_flat(ranks[0])) + len(_flat(ranks[1])) - num_samples
    assert repeats == (num_samples % 64) % 2  # the odd short last batch repeats one index


def test_replicas_with_drop_last_never_repeat(lengths):
    ranks = [list(RandomBatchSampler(4999, 32, num_replicas=3, rank=r, drop_last=True)) for r in range(3)]
    flat = [i for batches in ranks for i in _flat(batches)]
    assert len(flat) == len(set(flat)) == (4999 // 96) * 96
    assert len({len(batches) for batches in ranks}) == 1


def test_sampler_drives_a_dataloader(tokenized, lengths, minilm_dir):
    collate = DataCollatorWithPadding(AutoTokenizer.from_pretrained(minilm_dir))
    loader = torch.utils.data.DataLoader(
        tokenized, batch_sampler=LengthGroupedSampler(lengths, batch_size=16), collate_fn=collate
    )
    batch = next(iter(loader))
    assert batch["input_ids"].shape[0] == 16 and len(loader) == -(-len(tokenized) // 16)


def test_lengths_of_lists_and_datasets(tokenized, lengths):
    assert lengths[:3] == [len(row["input_ids"]) for row in tokenized[:3]]
    assert lengths_of([{"input_ids": [1, 2], "length": 7}]) == [7]
    with pytest.raises(KeyError, match="tokens"):
        lengths_of(tokenized, column="tokens")
    datasets = pytest.importorskip("datasets")
    dataset = datasets.Dataset.from_list(tokenized)
    assert lengths_of(dataset) == lengths
    picked = dataset.select([4, 2, 0])  # an index mapping over the arrow table
    assert lengths_of(picked) == [lengths[4], lengths[2], lengths[0]]
    assert lengths_of(picked.add_column("length", [9, 8, 7])) == [9, 8, 7]


def test_invalid_arguments(lengths):
    with pytest.raises(ValueError, match="rank"):
        RandomBatchSampler(10, 2, num_replicas=2, rank=2)
    with pytest.raises(ValueError, match="batch_size"):
        LengthGroupedSampler(lengths, 0)
