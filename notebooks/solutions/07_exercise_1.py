# Solution to lesson 7, exercise 1: adversarial annotators.
for n_adversarial in (1, 4):
    members = [SimulatedAnnotator(f"a-{i}", adversarial=i < n_adversarial, seed=seed + i) for i in range(6)]
    trial = FeedbackStore(f"{run_dir}/lesson7_adversarial_{n_adversarial}.db")
    trial_items = trial.items(kind="pairwise") or lessons.sample_pairs(
        trial, policy, tokenizer, load_prompts("curated", split="train", max_words=24, n=n_pairs, seed=seed + 7),
        sampling, seed=seed)
    SimulatedCrowd(annotators=members).annotate(trial, trial_items)
    print(f"{n_adversarial} adversarial of 6")
    display(agreement.annotator_report(trial, gold=gold)[["majority_agreement", "gold_agreement", "suspect"]].round(3))
# One adversary disagrees with the majority and is flagged. An adversarial majority *is* the majority: agreement
# statistics then flag the honest annotators. Only gold agreement (which real projects do not have; at best a few
# expert-labelled control pairs) tells them apart.
