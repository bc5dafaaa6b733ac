# Solution to lesson 9, exercise 2: your judgments alone.
yours_only = {
    "your scores → regression": EmbeddingRewardModel().fit_ratings(ratings[ratings["annotator"] == who["scores"]]),
    "your rankings → Plackett–Luce": EmbeddingRewardModel().fit_rankings(
        rankings[rankings["annotator"] == who["rankings"]])}
table, differences = lessons.compare_reward_models({**models, **yours_only}, held_out, [
    ("scores → regression", "your scores → regression"),
    ("rankings → Plackett–Luce", "your rankings → Plackett–Luce")], seed=seed)
display(table.round(3))
differences.round(3)
# A handful of judgments already gives a reward model that beats chance, but everyone's judgments (yours and 3 crowd
# members', 4 times as many) give a better one; with `yours` = 6 the difference is not always detectable: read the
# intervals, not only the means.
