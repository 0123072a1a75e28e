"""PPO against the frozen reward model, as EasyLM ``llama_train_ppo.py`` did it (docs/fidelity.md §9).

Modules, one job each:

- ``core``: pure tensor math (KL-penalised rewards, the no-EOS rule, GAE, whitening, clipped
  losses, the warmup-then-constant learning rate); hand-checked in tests/unit/test_ppo_core.py.
- ``rollout``: left-padded generation with HF ``generate`` and per-token log-probs / values.
- ``models``: policy, frozen reference, frozen reward model, value model initialised from the RM.
- ``trainer``: one PPO step (rollout, scoring, mini-batch updates) and its state for resume.
- ``checkpoint``: atomic checkpoints and the SIGTERM/SIGUSR1 preemption flag (exit code 75).
- ``evaluate``: mean RM reward of held-out prompts under a policy.
"""
