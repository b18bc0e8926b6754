import math

from gptlab import TrainingConfig
from gptlab.optim import AdamW, Muon
from gptlab.training.schedule import learning_rate, set_learning_rates
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


def test_every_group_follows_the_schedule_from_its_own_peak():
    cfg = TrainingConfig(muon_lr=0.02)
    optimizer = Muon(tiny_model("baseline"), cfg)
    for step in (0, 300, 5000, 19073):
        lr = set_learning_rates(optimizer, step, cfg)
        assert lr == learning_rate(step, cfg)
        muon, *adamw = optimizer.param_groups
        assert math.isclose(muon["lr"], 0.02 * lr / 6e-4) and all(g["lr"] == lr for g in adamw)
    plain = AdamW(tiny_model("baseline"), TrainingConfig())
    assert all(g["lr"] == learning_rate(7, cfg) for g in (set_learning_rates(plain, 7, cfg), plain.param_groups)[1])
