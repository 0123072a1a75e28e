"""Reward-model training: the model (trunk + score head), batching and packing, the one
training loop with its torch and DeepSpeed backends, schedule, checkpoints and resume."""
