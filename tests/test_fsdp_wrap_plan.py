"""FSDP2's wrap plan (configs/accelerate/fsdp2.yaml) names LlamaDecoderLayer; another model family must be told which
of its classes to name."""

from __future__ import annotations

import pytest
import torch
from accelerate.utils import DistributedType

from rlhf_lab.train.deepspeed_engine import prepare


class Block(torch.nn.Linear):
    pass


class Launched:
    """accelerate's Accelerator under fsdp2.yaml, as far as `prepare` reads it."""

    distributed_type = DistributedType.FSDP

    def prepare(self, model, optimizer):
        raise ValueError("Could not find the transformer layer class LlamaDecoderLayer in the model.")


def test_a_model_without_the_named_layer_class_is_told_its_own():
    model = torch.nn.Sequential(torch.nn.Embedding(4, 2), torch.nn.ModuleList([Block(2, 2), Block(2, 2)]))
    with pytest.raises(ValueError, match=r"LlamaDecoderLayer in the model\. Its repeated layers are Block: name the "
                                         r"decoder layer's class in fsdp_transformer_layer_cls_to_wrap .* pass "
                                         r"--fsdp_transformer_layer_cls_to_wrap Block to accelerate launch\."):
        prepare(Launched(), model, torch.optim.SGD(model.parameters(), lr=0.1), 1, 1, 1.0)
