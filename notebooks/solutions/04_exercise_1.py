# Solution to lesson 4, exercise 1: GAE as a plain loop over one reply.
valid = r["mask"][0].bool()
rew, val = r["rewards"][0][valid].tolist(), r["values"][0][valid].tolist()
adv, next_adv, next_value = [0.0] * len(rew), 0.0, 0.0  # the value after the last token is 0: the episode ends
for t in reversed(range(len(rew))):
    delta = rew[t] + config.gamma * next_value - val[t]
    next_adv = delta + config.gamma * config.lam * next_adv
    adv[t], next_value = next_adv, val[t]
print(torch.allclose(torch.tensor(adv), advantages[0][valid], atol=1e-5))
