"""Config values that mean nothing are refused where they are given, naming the field."""

import dataclasses

import pytest

from gptlab.core.config import ConfigError, GPTConfig, TrainingConfig, parse_overrides


FLOAT_FIELDS = [(cls, f.name) for cls in (GPTConfig, TrainingConfig) for f in dataclasses.fields(cls)
                if isinstance(getattr(cls(), f.name), float)]


@pytest.mark.parametrize("cls, name", FLOAT_FIELDS)
@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "NaN"])
def test_a_non_finite_float_is_refused_on_the_command_line_and_in_a_file(cls, name, text):
    section = "model" if cls is GPTConfig else "train"
    with pytest.raises(ConfigError, match=rf"{cls.__name__}.{name}={text} is not a finite number"):
        parse_overrides([f"{section}.{name}={text}"])
    with pytest.raises(ConfigError, match=rf"{name}={float(text)} is not a finite number"):
        cls(**{name: float(text)})


def test_a_study_with_a_nan_learning_rate_is_refused_before_it_plans(tmp_path):
    from gptlab.study.plan import Study, StudyError, plan
    with pytest.raises(StudyError, match=r"max_lr=nan is not a finite number"):
        plan(Study(["baseline", "rope"], preset="smoke", overrides=["train.max_lr=nan"], out=str(tmp_path)))
