# Solution to lesson 3, exercise 1: a reward model from one person's judgments.
mine = pairs[pairs["annotator"].isin([annotator, f"{annotator} (simulated)"])]
held_out = set(rm.val_pairs_["prompt"])
train_mine = mine[~mine["prompt"].isin(held_out)]
rm_mine = RewardModel(config).fit(train_mine, val=rm.val_pairs_)
print("everyone:", rm.evaluate(gold=GoldUtility()))
print("you only:", rm_mine.evaluate(gold=GoldUtility()))
# With far fewer pairs, your own model is usually less accurate on everyone's labels, but it may match *your*
# taste better: evaluate both on your held-out pairs only to see.
