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


@pytest.fixture
def fixed_clock(monkeypatch):
    """A CPU run's timer returning fixed samples (1 ms, 0.2% spread): each layer still runs, only the clock is
    not real, so a busy machine cannot flag points inconsistent and change what a test sees."""
    from tpsbench.bench import micro
    from tpsbench.bench.timing import Timed

    def fixed_timer(fn, *, device, config, setup=None, window=None):
        if setup is not None:
            setup()
        fn()
        return Timed([0.001 * (1 + 0.002 * (i % 5 - 2)) for i in range(10)], config.warmup, False, "perf_counter")

    def fixed_rounds(calls, *, config):
        return [fixed_timer(fn, device=None, config=config, setup=setup) for fn, setup in calls]

    monkeypatch.setattr(micro, "time_fn", fixed_timer)
    monkeypatch.setattr(micro, "time_interleaved", fixed_rounds)  # a CPU point's modes are timed in rounds
