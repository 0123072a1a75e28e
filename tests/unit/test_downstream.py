"""eval_downstream without models: best-of-N selection, the task plan (judge-absent and code
opt-in paths), pinned task data, the lm-eval backend wiring, lm-eval's own metric on the tiny
task, bootstrap CIs and the report table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from paper_repro.config import ConfigError, load_config
from paper_repro.downstream import results as R
from paper_repro.downstream.bon import select_best
from paper_repro.downstream.suite import NO_CODE, NO_JUDGE, plan_tasks
from paper_repro.downstream.taskdata import (
    TINY_DATA,
    TINY_LOCK,
    TaskDataError,
    pinned_hub_tasks,
    tiny_jsonl,
    verified_copy,
)

# --------------------------------------------------------------------------- selection


def test_select_best_keeps_the_top_reward():
    assert select_best([0.1, 2.5, -1.0, 2.4]) == 1


def test_select_best_breaks_ties_by_draw_order_and_never_picks_nan():
    assert select_best([1.0, 3.0, 3.0, 3.0]) == 1
    assert select_best([float("nan"), -5.0, float("nan")]) == 1
    with pytest.raises(ValueError):
        select_best([])


# --------------------------------------------------------------------------- task plan


def test_judge_tasks_are_listed_not_run_never_scored():
    plan = plan_tasks(load_config("llama3-70b-uf"))
    assert {t.task for t in plan.run} == {
        "gsm8k_cot",
        "bbh_cot_fewshot",
        "mmlu",
        "truthfulqa_mc2",
        "ifeval",
    }
    for name in ("AlpacaEval 1", "AlpacaEval 2", "XSTest"):
        assert plan.not_run[name] == NO_JUDGE
    # best-of-N on generation tasks only, as the paper did
    assert plan.bon == ["gsm8k_cot", "bbh_cot_fewshot", "ifeval"]


@pytest.mark.hardening("5", "downstream judge endpoint configured (judged tasks unsupported)")
def test_a_configured_judge_is_refused_loudly():
    with pytest.raises(ConfigError, match="downstream.judge_endpoint"):
        load_config("llama3-70b-uf", ["downstream.judge_endpoint=http://127.0.0.1:9/v1"])


def test_code_tasks_need_the_explicit_opt_in():
    cfg = load_config("llama3-70b-uf", ["downstream.tasks=[gsm8k_cot,humaneval]"])
    plan = plan_tasks(cfg)
    assert [t.task for t in plan.run] == ["gsm8k_cot"] and plan.not_run["HumanEval"] == NO_CODE
    on = load_config(
        "llama3-70b-uf",
        ["downstream.tasks=[gsm8k_cot,humaneval]", "downstream.allow_code_execution=true"],
    )
    assert [t.task for t in plan_tasks(on).run] == ["gsm8k_cot", "humaneval"]


# --------------------------------------------------------------------------- pinned task data


def test_shipped_tiny_task_is_the_arithmetic_fixture():
    assert TINY_DATA.read_text() == tiny_jsonl()
    rows = [json.loads(line) for line in TINY_DATA.read_text().splitlines()]
    assert len(rows) == 100 and rows[23] == {
        "question": "What is 2 + 3?",
        "answer": "2 + 3 = 5.",
        "target": "5",
    }


@pytest.mark.hardening("2", "downstream task data with one flipped byte")
def test_a_flipped_byte_in_the_task_data_is_refused(tmp_path):
    src = tmp_path / "src" / TINY_DATA.name
    src.parent.mkdir()
    data = bytearray(TINY_DATA.read_bytes())
    assert verified_copy(TINY_DATA, TINY_LOCK, tmp_path / "ok").read_bytes() == bytes(data)
    data[40] ^= 0x01
    src.write_bytes(bytes(data))
    with pytest.raises(TaskDataError, match="not the pinned"):
        verified_copy(src, TINY_LOCK, tmp_path / "bad")
    assert not (tmp_path / "bad" / TINY_DATA.name).exists()  # nothing altered left for lm-eval


def test_an_unpinned_hub_task_is_refused_naming_the_key():
    cfg = load_config("llama3-70b-uf")  # BBH's commit is the one left unresolved by default
    with pytest.raises(TaskDataError, match=r"downstream\.datasets\.bbh_cot_fewshot\.revision"):
        pinned_hub_tasks(cfg, ["bbh_cot_fewshot"])
    pinned = load_config("llama3-70b-uf", ["downstream.datasets.bbh_cot_fewshot.revision=abc1234"])
    assert pinned_hub_tasks(pinned, ["bbh_cot_fewshot"]) == {
        "bbh_cot_fewshot": ("SaylorTwift/bbh", "abc1234")
    }
    with pytest.raises(ConfigError, match="downstream.datasets.gsm8k_cot.revision"):
        load_config("llama3-70b-uf", ["downstream.datasets.gsm8k_cot.revision=main"])


def test_the_default_task_pins_are_full_commits():
    cfg = load_config("llama3-70b-uf")
    pins = pinned_hub_tasks(cfg, ["gsm8k_cot", "mmlu", "truthfulqa_mc2", "ifeval", "humaneval"])
    assert pins["gsm8k_cot"] == ("openai/gsm8k", "740312add88f781978c0658806c59bc2815b9866")
    assert all(len(rev) == 40 and int(rev, 16) >= 0 for _, rev in pins.values())


def test_overrides_point_lm_eval_tasks_at_the_local_snapshot(tmp_path):
    """Every lm-eval task reading the pinned dataset gets an override that changes only its
    dataset_path; prompts, shots, filters and metrics stay lm-eval's."""
    import lm_eval.tasks
    from lm_eval.tasks._index import TaskIndex
    from lm_eval.tasks._yaml_loader import load_yaml

    from paper_repro.downstream.taskdata import write_overrides

    index = TaskIndex.build([Path(lm_eval.tasks.__file__).parent / "gsm8k"])
    local = tmp_path / "openai--gsm8k" / "data"
    done = write_overrides(index, {"openai/gsm8k": local}, tmp_path / "tasks")
    assert "gsm8k_cot" in done and "gsm8k" in done
    ours = load_yaml(tmp_path / "tasks" / "gsm8k_cot.yaml", resolve_func=False, recursive=True)
    theirs = load_yaml(index["gsm8k_cot"].yaml_path, resolve_func=False, recursive=True)
    assert ours["dataset_path"] == str(local)
    assert {k: v for k, v in ours.items() if k != "dataset_path"} == {
        k: v for k, v in theirs.items() if k != "dataset_path"
    }
    assert ours["num_fewshot"] == 8  # the paper's 8-shot chain-of-thought


# --------------------------------------------------------------------------- backend wiring


def test_vllm_backend_wiring_carries_the_sampling_settings(tmp_path):
    """Not run here (no GPU): which lm-eval model and arguments the config produces."""
    from paper_repro.downstream.backend import lm_spec, sampling_kwargs

    cfg = load_config("llama3-70b-uf", ["downstream.bon.seed=7", "downstream.bon.top_p=0.9"])
    spec = lm_spec(cfg, tmp_path)
    assert spec.model_type == "vllm"
    assert spec.args == {
        "pretrained": str(tmp_path),
        "dtype": "bfloat16",
        "trust_remote_code": False,
        "tensor_parallel_size": 8,
        "gpu_memory_utilization": 0.45,
        "seed": 7,
        "batch_size": "auto",
    }
    hf = lm_spec(load_config("tiny"), tmp_path, device="cpu")
    assert hf.model_type == "hf" and hf.args["device"] == "cpu" and hf.args["dtype"] == "float32"
    kw = sampling_kwargs(cfg, {"until": ["Q:"], "do_sample": False, "max_gen_toks": 2048})
    assert kw == {
        "until": ["Q:"],
        "do_sample": True,
        "temperature": 0.7,
        "top_p": 0.9,
        "max_gen_toks": 512,
    }


# --------------------------------------------------------------------------- lm-eval's metric


def test_the_numbers_come_from_lm_evals_metric(tmp_path):
    """The tiny task through lm-eval: its regex filter and exact_match score a right sum 1 and a
    wrong sum 0; our per-document scores and value are lm-eval's."""
    import lm_eval
    from lm_eval.api.model import LM
    from lm_eval.tasks import TaskManager

    from paper_repro.downstream.taskdata import tiny_override

    class Answers(LM):  # answers every question, wrong on odd documents
        def generate_until(self, requests, disable_tqdm=False):
            out = []
            for r in requests:
                a, b = (int(x) for x in r.doc["question"][8:-1].split(" + "))
                out.append(f"{a} + {b} = {a + b + r.doc_id % 2}.")
            return out

        def loglikelihood(self, requests):
            raise NotImplementedError

        def loglikelihood_rolling(self, requests):
            raise NotImplementedError

    data = verified_copy(TINY_DATA, TINY_LOCK, tmp_path / "data")
    tiny_override(data, tmp_path / "tasks")
    tm = TaskManager(include_path=str(tmp_path / "tasks"), include_defaults=False)
    res = lm_eval.simple_evaluate(
        model=Answers(), tasks=["tiny_arithmetic"], task_manager=tm, limit=6, bootstrap_iters=0
    )
    s = R.task_scores(res, "tiny_arithmetic")
    assert s.metric == "exact_match,extract"
    assert s.docs == {f"tiny_arithmetic/{i}": float(i % 2 == 0) for i in range(6)}
    assert s.value == 0.5


# --------------------------------------------------------------------------- CIs and the table


def test_paired_delta_uses_the_shared_documents():
    a = R.TaskScores("t", "m", 0.75, {"t/0": 1.0, "t/1": 1.0, "t/2": 1.0, "t/3": 0.0})
    b = R.TaskScores("t", "m", 0.25, {"t/0": 0.0, "t/1": 1.0, "t/2": 0.0, "t/3": 0.0, "t/9": 1})
    d = R.paired_delta(a, b, ("a", "b"), samples=500, seed=0)
    assert d.docs == 4 and d.delta == pytest.approx(0.5) and d.lo <= 0.5 <= d.hi
    lo, hi = R.bootstrap_ci([1.0] * 10, 100, 0)
    assert lo == hi == 1.0


def test_report_lists_unrun_tasks_with_the_reason_not_as_zero():
    from paper_repro.reporting.downstream import markdown

    row = {"metric": "exact_match,flexible-extract", "value": 0.5, "ci": [0.4, 0.6], "docs": 9}
    body = {
        "tasks": {"gsm8k_cot": {"name": "GSM8k", "setting": "8-shot CoT", "kind": "generate"}},
        "models": {m: {"gsm8k_cot": row} for m in ("sft", "ppo", "bon_ours", "bon_published")},
        "deltas": [
            {
                "a": "ppo",
                "b": "sft",
                "task": "gsm8k_cot",
                "delta": 0.1,
                "lo": 0.0,
                "hi": 0.2,
                "docs": 9,
            }
        ],
        "not_run": plan_tasks(load_config("llama3-70b-uf")).not_run,
        "settings": {"sampling": {"n": 16}, "lm_eval_version": "0.4.13"},
    }
    text = markdown(body, "allenai/llama-3-tulu-2-70b")
    assert "| GSM8k (8-shot CoT) | SFT | 50.0 [40.0, 60.0] | n/a | 84.5 (8-shot CoT) |" in text
    assert "| PPO (ours) | 50.0 [40.0, 60.0] | +10.0 [+0.0, +20.0] |" in text
    assert "- AlpacaEval 2: not run: no judge configured" in text
    assert "AlpacaEval 2 |" not in text  # never a table row (no zero)


def test_report_shows_bon_minus_one_sample_on_the_one_sample_row():
    """Like with like: the one-sample row (best-of-1 at the BoN sampling) carries BoN ours - it,
    and the table names what the greedy SFT row is."""
    from paper_repro.reporting.downstream import markdown

    def row(v):
        return {"metric": "exact_match,extract", "value": v, "ci": [v - 0.1, v + 0.1], "docs": 9}

    values = {"sft": 0.3, "sft_sample": 0.2, "bon_ours": 0.5, "bon_published": 0.4}
    body = {
        "tasks": {"tiny_arithmetic": {"name": "sums", "setting": "0-shot", "kind": "generate"}},
        "models": {m: {"tiny_arithmetic": row(v)} for m, v in values.items()},
        "deltas": [
            {"a": a, "b": b, "task": "tiny_arithmetic", "delta": d, "lo": lo, "hi": hi, "docs": 9}
            for a, b, d, lo, hi in (
                ("bon_ours", "bon_published", 0.1, -0.1, 0.3),
                ("bon_ours", "sft_sample", 0.3, 0.1, 0.5),
            )
        ],
        "not_run": {},
        "settings": {"sampling": {"n": 4}, "lm_eval_version": "0.4.13"},
    }
    text = markdown(body)
    assert "| SFT, one sample | 20.0 [10.0, 30.0] | +30.0 [+10.0, +50.0] |" in text
    assert "| BoN (our RM) | 50.0 [40.0, 60.0] | +10.0 [-10.0, +30.0] |" in text
    assert "first of the best-of-4 samples" in text
