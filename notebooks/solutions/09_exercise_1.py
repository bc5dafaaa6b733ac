# Solution to lesson 9, exercise 1: thumbs as pairs.
up, down = examples[examples["label"]], examples[~examples["label"]]
both = up.merge(down, on=["prompt", "annotator"], suffixes=("_up", "_down"))  # one annotator, one prompt, 👍 and 👎
thumb_pairs = pd.DataFrame({"prompt": both["prompt"], "chosen": both["completion_up"],
                            "rejected": both["completion_down"]})
print(f"{len(thumb_pairs)} pairs from {len(examples)} thumbs: a prompt whose two replies got the same thumb from an "
      "annotator makes none")
models["thumbs as pairs → Bradley–Terry"] = EmbeddingRewardModel().fit(thumb_pairs)
table, differences = lessons.compare_reward_models(models, held_out, [
    ("thumbs as pairs → Bradley–Terry", "scores as pairs → Bradley–Terry")], seed=seed)
display(table.round(3))
differences.round(3)
# Most prompts' two replies got the same thumb from an annotator (both 👍, as a rule: thumbs are lopsided), so the
# thumbs give far fewer pairs than judgments. Each pair is a clear one, though (one 👍, one 👎 on the same prompt),
# and a few clear pairs teach more than one might think: compare its interval with the other models'. KTO, in
# section 9, learns from every thumb, pair or no pair.
