"""Several processes, the same script: PPO under torchrun (2 CPU processes, gloo) keeps every rank's weights equal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import json, torch
    from rlhf_lab.generation import SamplingConfig
    from rlhf_lab.models import tiny_policy
    from rlhf_lab.ppo import PPOConfig, PPOTrainer

    torch.set_num_threads(1)
    model, tokenizer = tiny_policy("smollm2-135m", seed=0)
    before = sum(float(p.sum()) for p in model.parameters())
    config = PPOConfig(batch_size=4, ppo_epochs=2, learning_rate=1e-3, log_samples_every=0, missing_eos_penalty=None,
                       sampling=SamplingConfig(max_new_tokens=6, temperature=1.0))
    trainer = PPOTrainer(model, tokenizer, lambda texts: [t.count(" ") / 5 for t in texts], config, callbacks=[])
    for _ in range(2):
        metrics = trainer.step(["hi", "hello there", "what is up", "tell me"])
    after = sum(float(p.sum()) for p in trainer.accelerator.unwrap_model(trainer.model).parameters())
    print("RESULT", json.dumps(dict(rank=trainer.accelerator.process_index, world=trainer.accelerator.num_processes,
                                    before=before, after=after, episode=metrics["episode"])), flush=True)
""")


def test_ppo_under_torchrun_syncs_gradients_across_two_processes(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, ACCELERATE_USE_CPU="true", OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(script)],
                         capture_output=True, text=True, timeout=600, env=env)
    results = [json.loads(line.split("RESULT ", 1)[1]) for line in out.stdout.splitlines() if "RESULT " in line]
    assert out.returncode == 0 and len(results) == 2, out.stderr[-3000:]
    results.sort(key=lambda r: r["rank"])
    assert [r["rank"] for r in results] == [0, 1] and all(r["world"] == 2 for r in results)
    assert results[0]["after"] != results[0]["before"]  # the weights moved
    assert results[0]["after"] == results[1]["after"]  # ... identically on both ranks: gradients were all-reduced
    assert results[0]["episode"] == 2 * 4 * 2  # episodes count every process's rollouts
