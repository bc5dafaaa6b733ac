# Solution to lesson 6, exercise 1: an adaptive β with a KL target.
fresh_policy, _ = load_policy(model)
config = PPOConfig(batch_size=4 if smoke else 8, ppo_epochs=2 if smoke else 4, learning_rate=learning_rate,
                   kl_coef=min(betas), kl_target=2.0, kl_limit=None, missing_eos_penalty=None,
                   sampling=sampling, seed=seed)
trainer = PPOTrainer(fresh_policy, tokenizer, reward=rm, config=config, callbacks=[])
adaptive = lessons.overoptimisation_curve(trainer, rm, train_prompts, eval_prompts, n_updates=n_updates, every=every,
                                          seed=seed)
curves = pd.concat([curves, adaptive.assign(setting="adaptive β, target KL 2")], ignore_index=True)
display(adaptive.round(3))  # beta: down while the KL is under 2, up above it, at most 2 % an update (the default
# kl_horizon, 10 updates' replies); kl_horizon=16 lets it move up to 10 % an update at 8 replies
plots.plot_proxy_vs_gold(curves, hue="setting")
