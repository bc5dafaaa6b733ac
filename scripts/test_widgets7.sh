#!/usr/bin/env bash
# The raters' tests again under ipywidgets 7.7.1 (what Colab ships), in a second, small environment: .venv's packages
# with ipywidgets 7.7.1 and its own widget extensions laid over them (.venv-widgets7/, ~8 MB, on PYTHONPATH and
# JUPYTER_PATH, so Voila serves its ipywidgets 7 widget manager). Run by `make test` after the main suite.
set -euo pipefail
cd "$(dirname "$0")/.."

LAYER=.venv-widgets7
PINS="ipywidgets==7.7.1 widgetsnbextension~=3.6.0 ipython_genutils~=0.2.0 jupyterlab_widgets~=1.1.0"
STAMP="$LAYER/.pins"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$PINS" ]; then
    rm -rf "$LAYER"
    # shellcheck disable=SC2086
    .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps --target "$LAYER" $PINS \
        2> >(grep -v "is ignored" >&2)
    echo "$PINS" > "$STAMP"
fi

export PYTHONPATH="$PWD/$LAYER${PYTHONPATH:+:$PYTHONPATH}" JUPYTER_PATH="$PWD/$LAYER/share/jupyter"
export RLHF_LAB_EXPECT_IPYWIDGETS=7.7.1
.venv/bin/python -c "import ipywidgets; print('ipywidgets', ipywidgets.__version__, 'from', ipywidgets.__file__)"
.venv/bin/python -m pytest -q tests/test_raters.py tests/test_raters_trouble.py tests/test_rater_drafts.py \
    tests/test_browser.py tests/test_browser_every_kind.py "$@"
