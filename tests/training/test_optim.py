import math

from gptlab import TrainingConfig
from gptlab.training.optim import build_optimizer, learning_rate
from tests.conftest import tiny_model


def test_schedule_warms_up_linearly_then_decays_by_cosine_to_ten_percent():
    cfg = TrainingConfig()
    assert math.isclose(learning_rate(0, cfg), 6e-4 / 715)
    assert math.isclose(learning_rate(714, cfg), 6e-4)
    mid = 715 + (19073 - 715) / 2
    assert math.isclose(learning_rate(int(mid), cfg), 6e-5 + 0.5 * (6e-4 - 6e-5), rel_tol=1e-3)
    assert math.isclose(learning_rate(19073, cfg), 6e-5)
    for step in (1000, 5000, 12000, 19000):  # cos formula written out
        progress = (step - 715) / (19073 - 715)
        assert math.isclose(learning_rate(step, cfg), 6e-5 + (6e-4 - 6e-5) * (1 + math.cos(math.pi * progress)) / 2)


def test_weight_decay_only_on_two_dimensional_weights():
    model = tiny_model("baseline")
    optimizer = build_optimizer(model, TrainingConfig(), "cpu")
    decayed, plain = optimizer.param_groups
    names = {id(p): n for n, p in model.named_parameters()}
    assert decayed["weight_decay"] == 0.1 and plain["weight_decay"] == 0.0
    assert {names[id(p)] for p in decayed["params"]} == {n for n, p in model.named_parameters() if p.dim() == 2}
    assert any(n.endswith("ln_1.weight") for n in (names[id(p)] for p in plain["params"]))
    assert optimizer.defaults["betas"] == (0.9, 0.95)
