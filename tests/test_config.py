"""rlhf_lab.core.config: every config reads back what it wrote and refuses unknown keys, naming them."""

from __future__ import annotations

import json

import pytest

from rlhf_lab.core.config import Config, as_config
from rlhf_lab.loop.experiment import ExperimentConfig, FeedbackConfig
from rlhf_lab.policy.generation import SamplingConfig
from rlhf_lab.reward.model import RewardConfig
from rlhf_lab.train.config import LoraSettings, OnPolicyConfig, OptimConfig
from rlhf_lab.train.dpo import DPOConfig
from rlhf_lab.train.ppo import PPOConfig
from rlhf_lab.train.rloo import RLOOConfig

CONFIGS = [SamplingConfig, LoraSettings, OptimConfig, OnPolicyConfig, PPOConfig, RLOOConfig, DPOConfig, RewardConfig,
           FeedbackConfig, ExperimentConfig]


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda c: c.__name__)
def test_round_trip_through_json(cls):
    config = cls()
    again = cls.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config and isinstance(again, Config)


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda c: c.__name__)
def test_unknown_keys_are_refused_by_name(cls):
    with pytest.raises(ValueError, match=rf"Unknown {cls.__name__} fields \['lr', 'zz'\]; known: \["):
        cls.from_dict({**cls().to_dict(), "zz": 1, "lr": 1e-5})


def test_nested_dicts_become_configs_and_stay_strict():
    config = PPOConfig.from_dict({"sampling": {"temperature": 0.9}, "lora": {"r": 4}})
    assert config.sampling == SamplingConfig(temperature=0.9) and config.lora == LoraSettings(r=4)
    with pytest.raises(ValueError, match=r"Unknown SamplingConfig fields \['temp'\]"):
        PPOConfig.from_dict({"sampling": {"temp": 0.9}})
    assert as_config(None, LoraSettings) is None
    with pytest.raises(ValueError, match="needs a dict"):
        PPOConfig.from_dict(["batch_size", 8])


def test_one_vocabulary_across_stages():
    """learning_rate and seed are spelled the same in every stage; RLOO carries no value-function fields."""
    for cls in (PPOConfig, RLOOConfig, DPOConfig, RewardConfig):
        assert {"learning_rate", "seed"} <= set(cls().to_dict()), cls.__name__
        assert cls().seed is None and cls().seed_value == 0
    assert not {"vf_coef", "vf_clip", "gamma", "lam", "value_head", "whiten_rewards"} & set(RLOOConfig().to_dict())
    assert issubclass(PPOConfig, OptimConfig) and issubclass(RLOOConfig, OptimConfig) and issubclass(DPOConfig,
                                                                                                      OptimConfig)


@pytest.mark.parametrize("values, match", [
    ({"ppo": 5}, r"^Expected PPOConfig's settings \(a JSON object, or None\), got 5\.$"),
    ({"ppo": {"sampling": [1, 2]}}, r"^Expected SamplingConfig's settings .*got \[1, 2\]\.$"),
    ({"ppo": {"batch_size": "x"}}, r"^batch_size must be a whole number, got 'x'\.$"),
    ({"ppo": {"learning_rate": "x"}}, r"^PPOConfig: a value of the wrong type \(.*str.*\): check the config's numbers"),
    ({"ppo": {"sampling": {"max_new_tokens": "many"}}}, r"^max_new_tokens must be a whole number, got 'many'\.$"),
])
def test_a_config_file_of_the_wrong_shape_is_one_value_error(values, match):
    """What a hand-edited or damaged config.json holds: one ValueError naming the config, never a TypeError or an
    AttributeError from deep inside (the CLI turns a ValueError into one line and exit status 2)."""
    with pytest.raises(ValueError, match=match):
        ExperimentConfig.from_dict(values)
    assert as_config(None, LoraSettings) is None and as_config(LoraSettings(r=2), LoraSettings).r == 2
