"""Best-of-N as an lm-eval model: ``generate_until`` samples N completions from the policy, the
reward model scores each (prompt + completion in the Tulu training format, as in RM training,
through the packed, batch-invariant ``scoring.score_sequences``), and the best one is returned
for the task's own filters and metric to score. Log-likelihood requests (multiple-choice tasks)
go to the policy unchanged; the stage runs best-of-N on generation tasks only, as the paper did.

The N samples of a prompt are drawn once and shared by every ``BestOfN`` on the same
``SampleCache``: our RM and the published RM choose among the same candidates, so their
difference is the RMs' alone (a paired comparison).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from lm_eval.api.instance import Instance
from lm_eval.api.model import LM


def select_best(rewards: Sequence[float]) -> int:
    """Index of the highest reward; ties go to the earliest sample (the order they were drawn),
    so the pick is deterministic. A NaN reward never wins."""
    r = np.asarray(rewards, dtype=np.float64)
    if r.size == 0:
        raise ValueError("no candidates to select from")
    r = np.where(np.isnan(r), -np.inf, r)
    return int(np.argmax(r))  # argmax returns the first of equal maxima


@dataclass
class SampleCache:
    """N completions per (context, sampling kwargs), drawn once."""

    samples: dict[str, list[str]] = field(default_factory=dict)

    @staticmethod
    def key(context: str, kwargs: dict[str, Any]) -> str:
        return json.dumps([context, kwargs], sort_keys=True, default=str)


class RewardScorer:
    """A sequence-classification RM scoring conversations in the Tulu training format."""

    def __init__(self, model_dir: Path, dtype: str, token_budget: int):
        from transformers import AutoTokenizer

        from ..data.tokenizer import special_strings
        from ..provenance.verified import checked_copy
        from ..rewardbench.model import filler_pad, load_model

        self.model = load_model(Path(model_dir), dtype, strict=False)
        with checked_copy(Path(model_dir)) as copy:  # the listed bytes, parsed once
            self.tokenizer = AutoTokenizer.from_pretrained(str(copy), trust_remote_code=False)
        self.pad_id, _ = filler_pad(self.model, self.tokenizer, Path(model_dir))
        self.special = special_strings(self.tokenizer)
        self.token_budget = token_budget

    def ids(self, messages: list[dict[str, str]]) -> list[int]:
        from ..data.formatting import render_training

        text = render_training(messages, self.special, allow_empty=True)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def __call__(self, conversations: list[list[dict[str, str]]]) -> np.ndarray:
        from ..rewardbench.scorer import score_sequences

        seqs = [self.ids(c) for c in conversations]
        rewards, _ = score_sequences(
            self.model, seqs, pad_id=self.pad_id, token_budget=self.token_budget, progress=False
        )
        return rewards


@dataclass
class Selection:
    context: str
    candidates: list[str]
    rewards: list[float]
    chosen: int


class BestOfN(LM):
    """``policy``: an lm-eval LM (HFLM or VLLM) that samples; ``score``: conversations ->
    rewards; ``sampling``: a task's gen kwargs -> the sampling kwargs (``backend.sampling_kwargs``)."""

    def __init__(
        self,
        policy: LM,
        score: Callable[[list[list[dict[str, str]]]], np.ndarray],
        n: int,
        sampling: Callable[[dict[str, Any]], dict[str, Any]],
        cache: SampleCache,
    ):
        super().__init__()
        self.policy, self.score, self.n, self.sampling, self.cache = (
            policy,
            score,
            n,
            sampling,
            cache,
        )
        self.chats: dict[str, list[dict[str, str]]] = {}  # rendered prompt -> its messages
        self.selections: list[Selection] = []

    # multiple choice: the policy's own log-likelihoods (selection cannot change them)
    def loglikelihood(self, requests):
        return self.policy.loglikelihood(requests)

    def loglikelihood_rolling(self, requests):
        return self.policy.loglikelihood_rolling(requests)

    @property
    def tokenizer_name(self) -> str:
        return getattr(self.policy, "tokenizer_name", "")

    def chat_template(self, chat_template=False):
        return self.policy.chat_template(chat_template)

    def apply_chat_template(self, chat_history, add_generation_prompt=True) -> str:
        text = self.policy.apply_chat_template(chat_history, add_generation_prompt)
        self.chats[text] = [dict(m) for m in chat_history]
        return text

    def messages(self, context: str) -> list[dict[str, str]]:
        """The conversation behind a prompt: the chat lm-eval rendered, or the raw prompt as
        the user turn when no chat template is applied."""
        return self.chats.get(context) or [{"role": "user", "content": context}]

    def _sample(self, requests: list[Instance]) -> None:
        todo, keys = [], []
        for req in requests:
            context, kwargs = req.args
            sk = self.sampling(dict(kwargs))
            key = SampleCache.key(context, sk)
            if key in self.cache.samples or key in keys:
                continue
            keys.append(key)
            todo += [
                Instance("generate_until", req.doc, (context, dict(sk)), i, req.metadata)
                for i in range(self.n)
            ]
        if not todo:
            return
        out = self.policy.generate_until(todo)
        for j, key in enumerate(keys):
            self.cache.samples[key] = list(out[j * self.n : (j + 1) * self.n])

    def generate_until(self, requests: list[Instance], disable_tqdm: bool = False) -> list[str]:
        self._sample(requests)
        picks = []
        conversations, spans = [], []
        for req in requests:
            context, kwargs = req.args
            cands = self.cache.samples[SampleCache.key(context, self.sampling(dict(kwargs)))]
            base = self.messages(context)
            spans.append((len(conversations), cands, context))
            conversations += [[*base, {"role": "assistant", "content": c}] for c in cands]
        rewards = self.score(conversations) if conversations else np.empty(0)
        for start, cands, context in spans:
            r = [float(x) for x in rewards[start : start + len(cands)]]
            best = select_best(r)
            self.selections.append(Selection(context, list(cands), r, best))
            picks.append(cands[best])
        return picks
