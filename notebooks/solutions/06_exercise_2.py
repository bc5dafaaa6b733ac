# Solution to lesson 6, exercise 2: three times the crowd's judgments, in a store of their own.
more_store = FeedbackStore(f"{run_dir}/lesson6_x3/lesson6_feedback.db")  # a new place: section 1's pairs not reused
if more_store.counts()["total"]:
    rm = build_reward_model(reward_config).fit(more_store, progress=False)  # this cell ran before
else:
    more_prompts = load_prompts("curated", split="train", max_words=24, n=3 * n_pairs, seed=seed + 6)
    rm = lessons.crowd_reward_model(more_store, policy, tokenizer, more_prompts, sampling, reward_config,
                                    crowd=SimulatedCrowd(n=3, seed=seed), seed=seed)
print(rm.evaluate(gold=GoldUtility()))
# ppo_run trains against `reward` and measures the proxy with `rm`: both are the new reward model now
more = pd.concat([ppo_run(beta, rm, f"β={beta}, 3 × data") for beta in betas], ignore_index=True)
both = pd.concat([curves[curves["setting"].isin([f"β={beta}" for beta in betas])], more], ignore_index=True)
display(plots.plot_proxy_vs_gold(both, hue="setting"))
both.loc[both.groupby("setting")["gold"].idxmax(), ["setting", "update", "kl", "proxy", "gold"]].round(3)
# Each setting's best gold and where it came: over-optimisation starts later with more data when gold peaks at a
# larger KL (or has not peaked yet: its last update) with 3 × data than at the same β with 1 ×. The two proxies are
# different reward models, so compare their shapes, not their values.
