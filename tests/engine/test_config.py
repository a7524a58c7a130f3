"""The fit's settings: importable without JAX, every range checked with the setting named."""

import subprocess
import sys

import pytest

from factorflow.engine.config import TrainConfig, check_config, check_schedule

pytestmark = pytest.mark.unit


def test_the_settings_import_without_jax():
    code = ("import sys; from factorflow.engine import TrainConfig; TrainConfig(); "
            "assert 'jax' not in sys.modules, sorted(m for m in sys.modules if 'jax' in m)")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.mark.parametrize("change, message", [
    (dict(batch_size=0), "batch_size must be >= 1"),
    (dict(reg=-0.1), "reg must be >= 0"),
    (dict(optimizer="rmsprop"), "unknown optimizer 'rmsprop'"),
    (dict(schedule="step"), "unknown schedule 'step'"),
    (dict(lr_decay=1.5), r"lr_decay\) must be in \(0, 1\]"),
])
def test_a_setting_out_of_range_is_named(change, message):
    with pytest.raises(ValueError, match=message):
        check_config(TrainConfig(**change), None)


def test_patience_and_defaults():
    check_config(TrainConfig(), None)  # the defaults pass
    with pytest.raises(ValueError, match="patience must be >= 1"):
        check_config(TrainConfig(), 0)
    check_schedule("cosine", 1.0)
