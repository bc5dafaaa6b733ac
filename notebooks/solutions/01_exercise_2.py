# Solution to lesson 1, exercise 2: your own prompts at a cool and a hot temperature.
mine = ["What should I cook tonight?", "Can you cheer me up?"]
for t in (0.3, 1.2):
    replies = generate(policy, tokenizer, mine, SamplingConfig(max_new_tokens=max_new_tokens, temperature=t),
                       seed=seed, n_per_prompt=3)
    print(f"--- temperature {t}")
    for p, r in zip(replies.prompts, replies.responses):
        print(f"{p} -> {r}")
