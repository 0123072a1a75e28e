"""RewardBench evaluation of any sequence-classification reward model.

``evaluate_rm`` (core.py) is the one evaluation the stages eval_rewardbench and eval_reference and
``paper-repro eval-rewardbench --model`` share; ``model.py`` says which model and loads it,
``inputs.py`` builds the token ids of either input mode, ``outputs.py`` writes the five files of
``paths.EvalFiles`` (pairs.parquet, scores.json, comparison.json, comparison.md, leaderboard.json).
"""

from .core import Evaluated, evaluate_rm
from .inputs import EvalInputs, template_ids
from .model import EvalError, ModelSpec, obtain_model, parse_model_spec

__all__ = [
    "EvalError",
    "EvalInputs",
    "Evaluated",
    "ModelSpec",
    "evaluate_rm",
    "obtain_model",
    "parse_model_spec",
    "template_ids",
]
