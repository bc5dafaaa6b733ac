# Solution to lesson 1, exercise 1: a hot but truncated setting.
settings.append(SamplingConfig(max_new_tokens=max_new_tokens, temperature=1.5, top_p=0.5))
sweep = lessons.sampling_sweep(policy, tokenizer, prompts, settings, n_per_prompt=n_per_prompt, seed=seed)
display(sweep.round(3))
plots.plot_sampling_sweep(sweep)
# Top-p 0.5 keeps only the few most likely tokens, so even at T=1.5 the replies stay close to the greedy ones:
# less diversity than T=1.5 alone, and usually better quality.
