import errno
import os

import pytest

import modelcore
from modelcore import errors


@pytest.mark.parametrize(
    ("kind", "builtin"),
    [
        (errors.ConfigError, ValueError),
        (errors.CheckpointError, ValueError),
        (errors.SafetensorsError, errors.CheckpointError),
        (errors.TokenizerError, ValueError),
        (errors.DataError, ValueError),
        (errors.DiskFullError, OSError),
    ],
)
def test_every_kind_is_a_modelcore_error_and_keeps_its_builtin_base(kind, builtin):
    assert issubclass(kind, errors.ModelcoreError)
    assert issubclass(kind, builtin)
    assert getattr(modelcore, kind.__name__) is kind


def test_existing_error_names_are_the_hierarchy():
    from modelcore.assets import AssetError
    from modelcore.configuration_utils import ConfigError
    from modelcore.quantization.config import QuantizationConfigError
    from modelcore.serialization.checkpoint import CheckpointError
    from modelcore.serialization.gguf import GGUFError
    from modelcore.serialization.safetensors_io import SafetensorsError

    assert ConfigError is errors.ConfigError
    assert CheckpointError is errors.CheckpointError
    assert SafetensorsError is errors.SafetensorsError
    assert issubclass(GGUFError, errors.CheckpointError)
    assert issubclass(QuantizationConfigError, errors.ConfigError)
    assert issubclass(AssetError, errors.ModelcoreError)


def test_disk_full_error_names_path_and_bytes(tmp_path):
    error = errors.DiskFullError(tmp_path / "model.safetensors", needed=123_456_789, free=1_000)
    assert error.errno == errno.ENOSPC
    text = str(error)
    assert str(tmp_path / "model.safetensors") in text
    assert "123,456,789" in text and "1,000" in text
    assert errors.is_disk_full(error)
    assert "inodes" not in text
    assert "inodes" in str(errors.DiskFullError(tmp_path / "x", needed=10, free=10_000))


def test_is_disk_full_follows_the_cause_chain():
    try:
        try:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError as inner:
            raise RuntimeError("write failed") from inner
    except RuntimeError as outer:
        assert errors.is_disk_full(outer)
    assert not errors.is_disk_full(OSError(errno.EACCES, "denied"))
    assert not errors.is_disk_full(ValueError("x"))


def test_free_bytes_of_a_path_not_yet_created(tmp_path):
    free = errors.free_bytes(tmp_path / "a" / "b" / "c.bin")
    assert free is not None and free > 0
