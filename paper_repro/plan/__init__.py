"""``paper-repro plan``: what a stage costs (tokens, GPU-hours, memory) before it is
submitted, for RM training, PPO and the downstream evaluation."""
