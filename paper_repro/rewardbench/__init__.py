"""RewardBench evaluation of any sequence-classification reward model: the scoring
constants and pure functions, the batch-invariant scorer, model agreement, and the checks
against reward-bench's own code."""
