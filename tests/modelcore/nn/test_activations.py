"""The shared activation table: one name list for configs (torch-free) and functions equal to transformers'."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from modelcore.models.bert import BertConfig
from modelcore.models.llama import LlamaConfig
from modelcore.nn.activation_names import ACTIVATION_NAMES
from modelcore.nn.activations import ACT2FN, get_activation


def test_table_implements_exactly_the_config_names():
    assert set(ACT2FN) == set(ACTIVATION_NAMES)


def test_every_name_matches_transformers():
    hf_activations = pytest.importorskip("transformers.activations")
    x = torch.linspace(-6, 6, 1001)
    for name, fn in ACT2FN.items():
        assert (fn(x) - hf_activations.ACT2FN[name](x)).abs().max().item() < 1e-6, name


def test_tanh_approximations_are_computed_as_their_names_say():
    # gelu_new is the BERT/GPT formula, not torch's fused tanh kernel; both families get the same one.
    x = torch.linspace(-6, 6, 1001)
    assert torch.equal(ACT2FN["gelu_new"](x), 0.5 * x * (1 + torch.tanh((2 / torch.pi) ** 0.5 * (x + 0.044715 * x**3))))
    assert torch.equal(ACT2FN["gelu_pytorch_tanh"](x), torch.nn.functional.gelu(x, approximate="tanh"))


def test_unknown_name_lists_the_known_ones():
    assert get_activation("silu") is ACT2FN["silu"]
    with pytest.raises(ValueError, match="'swiglu' is not one of gelu, gelu_new, .*tanh"):
        get_activation("swiglu")


@pytest.mark.parametrize("config_class", [BertConfig, LlamaConfig])
def test_configs_accept_every_name(config_class):
    for name in ACTIVATION_NAMES:
        assert config_class(hidden_act=name).hidden_act == name


def test_name_list_does_not_import_torch():
    code = "import sys, modelcore.nn.activation_names; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.strip() == "False"
