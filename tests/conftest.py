import pytest
import torch
from hypothesis import HealthCheck, settings

from tpsbench.models.registry import forget_remembered

# No property test may fail because the machine is slow: no per-example deadline, no health check on generation time.
settings.register_profile("any_speed", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("any_speed")


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    if not torch.cuda.is_available():
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip_gpu)


@pytest.fixture(autouse=True)
def _wide_output(monkeypatch):
    """Tables and prose wide enough that no name is folded, so that tests can look for what the output says; the
    tests of fitting a width set their own (tests/test_width.py, the goldens at 100 columns)."""
    monkeypatch.setenv("COLUMNS", "250")


@pytest.fixture(autouse=True)
def _no_remembered_models():
    """Each test starts from the model catalog alone: models met in one test's files stay out of the next."""
    forget_remembered()
    yield
    forget_remembered()
