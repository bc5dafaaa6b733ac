# Solution to lesson 3, exercise 1: held-out accuracy against the number of your judgments.
rows = []
for n in sorted({min(n, len(yours)) for n in (5, 10, 15, len(yours))}):
    first = yours.sort_values("judgment_id").head(n)  # your first n judgments
    result = lessons.held_out(first, fit, folds=folds, seed=seed)
    rows.append({"judgments": n, "accuracy": result.accuracy, "95 % low": result.ci_low,
                 "95 % high": result.ci_high})
pd.DataFrame(rows).round(2)
# With a handful of judgments the interval spans most of [0, 1]: nothing can be said yet. It narrows slowly (about
# as 1/sqrt(n)), and the accuracy itself may not rise at all when the features cannot see what you judge by.
