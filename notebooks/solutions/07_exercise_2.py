# Solution to lesson 7, exercise 2: a crowd that likes long replies (0.05 per word) against section 4's neutral one.
long_crowd = SimulatedCrowd(n=3, bias={"length_words": 0.05}, seed=seed)
rows = []
for name, crowd in {"neutral": crowds["neutral"], "likes length": long_crowd}.items():
    path = f"{run_dir}/lesson7_{'neutral' if name == 'neutral' else 'length'}"
    run = lessons.CrowdRun.open(path, crowd=crowd) if name == "neutral" else lessons.CrowdRun.create(
        path, config, crowd=crowd, overwrite=True)  # section 4's neutral run is reopened, not redone
    run.run()
    evaluation = run.evaluation()[["iteration", "response_length", "eos_rate", "gold_reward"]]
    rows.append(evaluation.merge(lessons.eval_features(run, gold)[["iteration", "length_words"]]).assign(crowd=name))
pd.concat(rows, ignore_index=True)[["crowd", "iteration", "length_words", "response_length", "eos_rate",
                                    "gold_reward"]].round(3)
# Read the change from iteration 0 to 1 under each crowd: words and tokens per reply, and the EOS rate (the share of
# replies that ended by themselves within max_new_tokens). A reply that stops early loses words the long-reply crowd
# pays for, so PPO can learn to stop less: the length rises towards max_new_tokens and the EOS rate falls. A few
# updates move little: compare with the neutral crowd's change before reading one into it.
