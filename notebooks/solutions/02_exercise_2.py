# Solution to lesson 2, exercise 2: your pairs in the prompt/chosen/rejected format.
pairs = store.preference_pairs(include_ties=False)
mine = pairs[pairs["annotator"] == who][["prompt", "chosen", "rejected", "margin"]]
path = f"{run_dir}/my_preferences.jsonl"
mine.to_json(path, orient="records", lines=True)
with open(path) as f:
    print(f.readline())
# store.export_jsonl(path) writes everyone's pairs in the same format.
