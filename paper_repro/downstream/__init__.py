"""Downstream evaluation (the eval_downstream stage): policies and best-of-N selections scored on
the Tulu 2.5 paper's evaluation suite by EleutherAI's lm-evaluation-harness.

``suite.py`` which tasks run and why the others do not; ``taskdata.py`` pinned, verified task
data and the lm-eval task overrides that point at it; ``backend.py`` which lm-eval model a config
builds (hf or vllm); ``bon.py`` best-of-N selection as an lm-eval LM; ``results.py`` per-document
scores, bootstrap CIs and paired deltas.
"""
