"""DPO's and KTO's fit take `epochs=None` as the config's and refuse 0, negative and fractional epochs in one line
(0 trained the config's epochs and -1 none); their constructors refuse a config of the wrong type."""

from __future__ import annotations

import pandas as pd
import pytest

from rlhf_lab.policy.generation import SamplingConfig
from rlhf_lab.train.dpo import DPOConfig, DPOTrainer
from rlhf_lab.train.kto import KTOConfig, KTOTrainer
from rlhf_lab.train.ppo import PPOConfig

pytestmark = pytest.mark.usefixtures("one_thread")

S = SamplingConfig(max_new_tokens=3)
PAIRS = pd.DataFrame({"prompt": ["tea?", "coffee?"], "chosen": ["Steep it.", "Brew it."], "rejected": ["No.", "Go."]})
THUMBS = pd.DataFrame({"prompt": ["a b", "c d", "e f", "g h"], "completion": ["x", "y", "z", "w"],
                       "label": [True, False, False, True]})


@pytest.mark.parametrize("epochs,shown", [(0, "at least 1, got 0"), (-1, "at least 1, got -1"),
                                          (1.5, "a whole number, got 1.5"), (True, "a whole number, got True")])
def test_fit_refuses_epochs_below_one_or_fractional(tiny, epochs, shown):
    pol, tok = tiny
    for trainer, data in ((DPOTrainer(pol, tok, DPOConfig(batch_size=2, sampling=S), callbacks=[]), PAIRS),
                          (KTOTrainer(pol, tok, KTOConfig(batch_size=2, sampling=S), callbacks=[]), THUMBS)):
        with pytest.raises(ValueError, match=rf"epochs \(passes over the data; None: the config's 1\) must be {shown}"):
            trainer.fit(data, epochs=epochs)
        assert trainer.update_ == 0


def test_fit_epochs_none_is_the_configs_zero_is_refused_and_a_number_is_that_many(tiny):
    pol, tok = tiny
    dpo = DPOTrainer(pol, tok, DPOConfig(batch_size=2, epochs=2, sampling=S), callbacks=[])
    with pytest.raises(ValueError, match=r"None: the config's 2\) must be at least 1, got 0"):
        dpo.fit(PAIRS, epochs=0)  # was read as None: the config's 2 epochs
    assert dpo.fit(PAIRS).update_ == 2  # one batch of 2 pairs, the config's 2 epochs
    assert dpo.fit(PAIRS, epochs=3).update_ == 5


@pytest.mark.parametrize("config,named", [("gold", "str 'gold'"), (PPOConfig(), "PPOConfig"), (0, "int 0")])
def test_trainers_refuse_a_config_of_another_type(tiny, config, named):
    pol, tok = tiny
    with pytest.raises(TypeError, match=rf"DPOTrainer takes a DPOConfig \(or None for the defaults\), got {named}"):
        DPOTrainer(pol, tok, config)
    with pytest.raises(TypeError, match=r"KTOTrainer takes a KTOConfig .*: pass KTOConfig\(...\)"):
        KTOTrainer(pol, tok, config)
