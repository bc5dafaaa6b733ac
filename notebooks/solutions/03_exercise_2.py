# Solution to lesson 3, exercise 2: hand-made replies and their rewards.
prompt = "How was your weekend?"
candidates = ["It was lovely, thanks for asking! I went hiking. How was yours?",
              "Great great great wonderful happy happy glad thanks thanks!"]
print(pd.DataFrame({"reply": candidates, "reward": rm.score([prompt] * 2, candidates).numpy().round(3),
                    "gold": GoldUtility()([prompt] * 2, candidates).round(3)}))
# Strings of positive words often score well with a model trained on kind replies: a shortcut PPO could find.
