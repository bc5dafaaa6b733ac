# Solution to lesson 4, exercise 2: no KL penalty.
free_policy, _ = load_policy(model)
free = PPOTrainer(free_policy, tokenizer, reward=rm, config=PPOConfig(**{**config.__dict__, "kl_coef": 0.0}),
                  callbacks=[])
free.train(train_prompts, n_updates=n_updates)
last = lambda t: t.history.to_frame().iloc[-1]
print(f"β={kl_coef}: score {last(trainer)['objective/scores']:.3f}, KL {last(trainer)['objective/kl']:.3f}")
print(f"β=0:    score {last(free)['objective/scores']:.3f}, KL {last(free)['objective/kl']:.3f}")
display(lessons.score_replies(free_policy, tokenizer, eval_prompts, sampling, seed=seed, reward_model=rm))
# Without the leash the policy drifts further for a similar (or higher) reward-model score; its replies tend to
# lose what made the original model fluent. Lesson 6 measures this with the gold utility.
