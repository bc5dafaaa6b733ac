# Solution to lesson 2, exercise 1: the careless annotator agrees least with everyone else.
display(report.sort_values("majority_agreement")[["majority_agreement", "mean_kappa", "gold_agreement", "suspect"]])
careless = report["majority_agreement"].idxmin()
print(f"{careless} agrees least with the majority (and its kappa with the others is near 0, chance level).")
