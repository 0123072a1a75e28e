"""A pinned hub task dataset end to end: fetched at its commit through the verified snapshot
machinery (a local fake hub on 127.0.0.1), lm-eval's own gsm8k_cot task pointed at the local
copy, and lm-eval's 8-shot chain-of-thought prompt and answer extraction scoring it."""

from __future__ import annotations

import json
from pathlib import Path

from hubfake import COMMIT, FakeHub

REPO = "openai/gsm8k"
README = b"""---
configs:
- config_name: main
  data_files:
  - split: train
    path: main/train-*
  - split: test
    path: main/test-*
---
# gsm8k (test copy)
"""


def files() -> dict[str, bytes]:
    rows = [
        {
            "question": f"Tom has {a} apples and gets {b} more. How many now?",
            "answer": f"#### {a + b}",
        }
        for a, b in ((2, 3), (4, 4), (1, 6))
    ]
    body = b"".join(json.dumps(r).encode() + b"\n" for r in rows)
    return {
        "README.md": README,
        "main/train-00000-of-00001.jsonl": body,
        "main/test-00000-of-00001.jsonl": body,
    }


def test_pinned_hub_task_data_reaches_lm_evals_own_task(tmp_path, monkeypatch):
    import lm_eval
    import lm_eval.tasks
    from lm_eval.api.model import LM
    from lm_eval.tasks import TaskManager
    from lm_eval.tasks._index import TaskIndex

    from paper_repro.downstream.results import task_scores
    from paper_repro.downstream.taskdata import fetch_task_data, write_overrides
    from paper_repro.provenance.manifest import verify_manifest

    with FakeHub({}, datasets={REPO: files()}) as hub:
        local = fetch_task_data(
            REPO, COMMIT, tmp_path / "gsm8k", cache_dir=tmp_path / "hub", endpoint=hub.url
        )
    lock = json.loads((tmp_path / "gsm8k" / "manifest.json").read_text())
    assert lock["commit"] == COMMIT and lock["repo_type"] == "dataset"
    verify_manifest(local, tmp_path / "gsm8k" / "manifest.json")
    index = TaskIndex.build([Path(lm_eval.tasks.__file__).parent / "gsm8k"])
    write_overrides(index, {REPO: local}, tmp_path / "tasks")

    prompts = []

    class Says(LM):  # right on the first two questions, wrong on the third
        def generate_until(self, requests, disable_tqdm=False):
            prompts.extend(r.args[0] for r in requests)
            return [f"So the answer is {[5, 8, 9][r.doc_id]}." for r in requests]

        def loglikelihood(self, requests):
            raise NotImplementedError

        def loglikelihood_rolling(self, requests):
            raise NotImplementedError

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")  # only the local copy can be read
    tm = TaskManager(include_path=str(tmp_path / "tasks"), include_defaults=False)
    res = lm_eval.simple_evaluate(
        model=Says(), tasks=["gsm8k_cot"], task_manager=tm, bootstrap_iters=0
    )
    s = task_scores(res, "gsm8k_cot")
    assert s.docs == {"gsm8k_cot/0": 1.0, "gsm8k_cot/1": 1.0, "gsm8k_cot/2": 0.0}
    assert prompts[0].count("Q: ") == 9  # lm-eval's 8 chain-of-thought shots + the question
    assert "Tom has 2 apples" in prompts[0]
