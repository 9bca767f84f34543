"""The ``hidden_act`` names modelcore implements, without importing torch.

Configurations validate against this tuple, so ``import modelcore.models.<family>.configuration_<family>``
stays torch-free; ``modelcore.nn.activations.ACT2FN`` maps exactly these names to functions.
"""

ACTIVATION_NAMES: tuple[str, ...] = (
    "gelu",
    "gelu_new",
    "gelu_pytorch_tanh",
    "gelu_fast",
    "quick_gelu",
    "relu",
    "silu",
    "swish",
    "tanh",
)
