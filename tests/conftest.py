import pytest
import torch

from gptlab import build_model, load_experiment
from gptlab.core.experiment import available_experiments

EXPERIMENTS = available_experiments()
TINY = dict(n_layer=2, n_head=4, n_embd=32, block_size=32, vocab_size=97)


def tiny_model(name: str, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    return build_model(load_experiment(name), **{**TINY, **overrides})


@pytest.fixture(params=EXPERIMENTS)
def experiment_name(request):
    return request.param


def pytest_collection_modifyitems(items):
    for item in items:  # the long tier is part of the slow one
        if item.get_closest_marker("long"):
            item.add_marker(pytest.mark.slow)
