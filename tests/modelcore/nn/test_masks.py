"""Attention masks: the eager shortcut for unpadded batches, and whole graphs under torch.compile."""

import pytest
import torch
import torch._dynamo

from modelcore.models.bert import BertConfig, BertForSequenceClassification
from modelcore.models.llama import LlamaConfig, LlamaForCausalLM
from modelcore.nn.masks import causal_mask, padding_mask


def test_padding_mask_is_none_when_nothing_is_padded_and_marks_padding_otherwise():
    assert padding_mask(None) is None
    assert padding_mask(torch.ones(2, 5, dtype=torch.long)) is None
    mask = padding_mask(torch.tensor([[1, 1, 0], [1, 1, 1]]))
    assert mask.shape == (2, 1, 1, 3)
    assert mask[:, 0, 0].tolist() == [[True, True, False], [True, True, True]]


def test_causal_mask_uses_is_causal_without_padding_and_masks_padded_keys():
    assert causal_mask(torch.ones(1, 4, dtype=torch.long), 4, 0, torch.device("cpu")) == (None, True)
    mask, is_causal = causal_mask(torch.tensor([[0, 1, 1]]), 3, 0, torch.device("cpu"))
    assert not is_causal
    # left padding: key 0 is hidden from everyone; the padded query row sees itself only, never NaN
    assert mask[0, 0].tolist() == [[True, True, True], [False, True, False], [False, True, True]]


def _bert():
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64
    )
    return BertForSequenceClassification(config).eval()


def _llama():
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=64,
    )
    return LlamaForCausalLM(config).eval()


@pytest.mark.parametrize("make_model", [_bert, _llama], ids=["bert", "llama"])
@pytest.mark.parametrize("padded", [True, False], ids=["padded", "unpadded"])
def test_forward_compiles_to_one_graph_without_breaks(make_model, padded):
    """The unpadded-batch shortcut reads a tensor's value; under torch.compile it must not split the graph."""
    model = make_model()
    ids = torch.randint(0, 100, (3, 7), generator=torch.Generator().manual_seed(0))
    attention_mask = torch.ones_like(ids)
    if padded:
        attention_mask[0, 4:] = 0
    labels = torch.tensor([0, 1, 1]) if isinstance(model, BertForSequenceClassification) else ids
    torch._dynamo.reset()
    explained = torch._dynamo.explain(model)(input_ids=ids, attention_mask=attention_mask, labels=labels)
    assert explained.graph_break_count == 0, [b.reason for b in explained.break_reasons]
    assert explained.graph_count == 1
    # and the traced masks change nothing: the compiled (eager backend) forward equals eager
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=attention_mask, labels=labels)
        got = compiled(input_ids=ids, attention_mask=attention_mask, labels=labels)
    torch.testing.assert_close(got.logits, expected.logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got.loss, expected.loss, rtol=1e-5, atol=1e-5)
