import json

import pytest

from rlhf_lab.policy.prompts import SOURCES, load_prompts, read_jsonl_prompts


@pytest.mark.parametrize("source", ["curated", "chitchat", "chatterbot"])
def test_train_and_eval_splits_are_disjoint_deterministic_and_cover_the_set(source):
    train, eval_ = load_prompts(source, "train"), load_prompts(source, "eval")
    assert train and eval_
    assert not set(train) & set(eval_)
    assert sorted(train + eval_) == sorted(load_prompts(source, "all"))
    assert load_prompts(source, "eval") == eval_


def test_all_merges_the_sources_without_duplicates():
    everything = load_prompts("all")
    assert len(everything) == len(set(p.lower() for p in everything))
    assert len(everything) > len(load_prompts("chitchat"))
    assert set(load_prompts("curated")) <= set(everything)


def test_split_membership_does_not_depend_on_the_other_prompts(tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text("\n".join(json.dumps({"prompt": p}) for p in load_prompts("curated")[:10]))
    small_eval = set(load_prompts(str(path), "eval"))
    assert small_eval == set(load_prompts("curated", "eval")) & set(load_prompts(str(path)))


def test_length_filter_and_seeded_sample(tiny):
    _, tok = tiny
    short = load_prompts("all", max_words=5)
    assert short and all(len(p.split()) <= 5 for p in short)
    few_tokens = load_prompts("curated", max_tokens=8, tokenizer=tok)
    assert few_tokens and all(len(tok(p).input_ids) <= 8 for p in few_tokens)
    assert load_prompts("all", n=5, seed=1) == load_prompts("all", n=5, seed=1) != load_prompts("all", n=5, seed=2)


def test_bad_requests_are_refused_with_a_fix(tmp_path):
    with pytest.raises(ValueError, match="Unknown prompt source"):
        load_prompts("nope")
    with pytest.raises(ValueError, match="split"):
        load_prompts("curated", "validation")
    with pytest.raises(ValueError, match="tokenizer"):
        load_prompts("curated", max_tokens=5)
    with pytest.raises(ValueError, match="ask for fewer .n, or a config.s eval_prompts."):
        load_prompts("curated", n=10_000)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok here"}\n{"text": "wrong key"}\n')
    with pytest.raises(ValueError, match="bad.jsonl:2"):
        read_jsonl_prompts(bad)
    assert "curated" in SOURCES
    with pytest.raises(FileNotFoundError, match="No prompt file at .*my_prompts.jsonl: check the path"):
        load_prompts(str(tmp_path / "my_prompts.jsonl"))  # a path that is not there is not an "unknown source"
    for n in (-1, 0, "5", 2.5):
        with pytest.raises(ValueError, match=f"n must be a whole number >= 1 .how many prompts to draw., or None for "
                                             f"all; got {n!r}"):
            load_prompts("curated", n=n)
    with pytest.raises(ValueError, match="No prompt of 'curated' .eval. is left after filtering"):
        load_prompts("curated", split="eval", eval_fraction=0)  # an empty list would run a lesson on nothing
    with pytest.raises(TypeError, match="a list of prompts needs no loading"):
        load_prompts(["Hi there?"])
