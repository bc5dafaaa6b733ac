import json

import pytest

from rlhf_lab.cli import main


def test_info_reports_versions_device_cache_and_offline_models(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("RLHF_LAB_CACHE", str(tmp_path))
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["device"] == "cpu"
    assert info["cache_dir"] == str(tmp_path)
    assert info["torch"].startswith("2.")
    smol = info["offline_models"]["smollm2-135m"]
    assert smol["installed"] is True and smol["cached"] is False
    assert smol["hub_id"] == "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_generate_prints_one_reply_per_prompt(capsys):
    assert main(["generate", "--model", "tiny", "--n", "3", "--max-new-tokens", "4", "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert len(records) == 3
    assert all(r["model"] == "tiny" and r["prompt"] and isinstance(r["response"], str) for r in records)


def test_generate_with_own_prompts_in_text_form(capsys):
    assert main(["generate", "--model", "tiny", "--prompt", "Hello there?", "--prompt", "Why?", "--max-new-tokens", "3"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("[1] Hello there?\n  → ") and "[2] Why?\n  → " in out


def test_unknown_model_is_a_clean_error_not_a_traceback(capsys):
    assert main(["generate", "--model", "no-such-model"]) == 2
    err = capsys.readouterr().err
    assert "error: Unknown model 'no-such-model'" in err and "smollm2-135m" in err


def test_a_device_that_is_not_there_is_one_line(capsys):
    import torch

    devices = ["bogus"] + ([] if torch.cuda.is_available() else ["cuda"])
    for device in devices:
        assert main(["generate", "--model", "tiny", "--n", "1", "--device", device]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"--device {device}" in err.replace("'", "")


def test_a_path_through_a_file_or_a_folder_for_a_file_is_one_line_in_words(capsys, tmp_path):
    (tmp_path / "afile").write_text("mine")
    assert main(["demo", "--smoke", "--out", str(tmp_path / "afile" / "sub")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == f"rlhf-lab demo: error: {tmp_path / 'afile' / 'sub'}: a file is in the way where a folder belongs " \
        "(a path goes through a file)"
    assert (tmp_path / "afile").read_text() == "mine"

@pytest.mark.parametrize("argv, line", [
    (["generate", "--model", "tiny", "--threads", "0"],
     "rlhf-lab generate: error: argument --threads: must be a whole number of at least 1, got 0 "
     "(see: rlhf-lab generate --help)"),
    (["feedback", "stats"],
     "rlhf-lab feedback stats: error: the following arguments are required: --store (see: rlhf-lab feedback stats "
     "--help)"),
    (["class", "create", "--store", "x.db"],
     "rlhf-lab class create: error: the following arguments are required: --roster (see: rlhf-lab class create "
     "--help)"),
    (["demo", "--seed", "-1"],
     "rlhf-lab demo: error: argument --seed: a seed is a whole number from 0 to 4294967295, got -1 "
     "(see: rlhf-lab demo --help)"),
    ([], "rlhf-lab: error: the following arguments are required: command (see: rlhf-lab --help)")])
def test_a_bad_option_is_one_line_and_exit_2_without_the_usage_block(capsys, argv, line):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    assert capsys.readouterr().err == line + "\n"


def test_ctrl_c_is_one_line_and_exit_130(capsys):
    from rlhf_lab.core.script import command_status

    def interrupted():
        raise KeyboardInterrupt
    assert command_status("rlhf-lab demo", interrupted, (ValueError,)) == 130
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("rlhf-lab demo: stopped (Ctrl-C); what was saved before stays")
