"""Best-of-N with real components: lm-eval's HFLM sampling from the tiny SFT base and a real
sequence-classification RM scoring through the packed scorer."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def rm_dir(tiny_run, tmp_path_factory):
    """A reward model on the tiny base's trunk with a seeded head: any RM does for selection."""
    import torch
    from transformers import AutoTokenizer, LlamaForSequenceClassification

    out = tmp_path_factory.mktemp("rm")
    torch.manual_seed(3)
    model = LlamaForSequenceClassification.from_pretrained(str(tiny_run.base_model), num_labels=1)
    torch.nn.init.normal_(model.score.weight, std=1.0)
    model.save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(str(tiny_run.base_model)).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def policy(tiny_run):
    from lm_eval.models.huggingface import HFLM

    return HFLM(pretrained=str(tiny_run.base_model), device="cpu", batch_size=8, dtype="float32")


@pytest.fixture(scope="module")
def scorer(rm_dir):
    from paper_repro.downstream.bon import RewardScorer

    return RewardScorer(rm_dir, "float32", token_budget=4096)


def requests(n: int):
    from lm_eval.api.instance import Instance

    from paper_repro.fixtures import arithmetic

    kw = {"until": ["<|end_of_text|>"], "do_sample": False, "max_gen_toks": 12}
    return [
        Instance(
            "generate_until",
            {"i": i},
            (f"<|user|>\n{arithmetic.question(i, 9 - i)}\n<|assistant|>\n", dict(kw)),
            i,
            ("tiny_arithmetic", i, 1),
        )
        for i in range(n)
    ]


def bon(policy, score, n, cache=None):
    from functools import partial

    from paper_repro.config import load_config
    from paper_repro.downstream.backend import sampling_kwargs
    from paper_repro.downstream.bon import BestOfN, SampleCache

    cfg = load_config("tiny", ["downstream.bon.max_new_tokens=12"])
    return BestOfN(policy, score, n, partial(sampling_kwargs, cfg), cache or SampleCache())


def test_best_of_n_keeps_the_rms_top_sample_whatever_the_batch(policy, scorer):
    """The pick is the argmax of the RM's rewards; scoring each candidate alone, or the prompts
    in another order and grouping, picks the same (the scorer is batch-invariant)."""
    import torch

    torch.manual_seed(0)
    b = bon(policy, scorer, 4)
    picks = b.generate_until(requests(3))
    assert len(b.selections) == 3
    for sel, pick in zip(b.selections, picks, strict=True):
        assert len(sel.candidates) == 4
        assert pick == sel.candidates[sel.chosen]
        assert sel.rewards[sel.chosen] == max(sel.rewards)
        alone = [
            float(scorer([[*b.messages(sel.context), {"role": "assistant", "content": c}]])[0])
            for c in sel.candidates
        ]
        assert alone == pytest.approx(sel.rewards, abs=1e-5)
    again = bon(policy, scorer, 4, b.cache)  # same samples, other batch composition
    reordered = again.generate_until(requests(3)[::-1][:2])
    assert reordered == [picks[2], picks[1]]


def test_ties_go_to_the_first_sample(policy):
    import numpy as np
    import torch

    torch.manual_seed(1)
    b = bon(policy, lambda convs: np.zeros(len(convs)), 3)
    picks = b.generate_until(requests(2))
    assert picks == [s.candidates[0] for s in b.selections]


def test_n_1_equals_plain_sampling(policy, scorer):
    """Best-of-1 returns exactly what the policy samples with the same settings and seed."""
    import torch

    from paper_repro.config import load_config
    from paper_repro.downstream.backend import sampling_kwargs

    cfg = load_config("tiny", ["downstream.bon.max_new_tokens=12"])
    plain = requests(4)
    for r in plain:
        r.arguments = (r.args[0], sampling_kwargs(cfg, r.args[1]))
    torch.manual_seed(5)
    want = policy.generate_until(plain)
    torch.manual_seed(5)
    got = bon(policy, scorer, 1).generate_until(requests(4))
    assert got == want


@pytest.mark.parametrize("arch", ["gpt2", "mistral"])
def test_any_classifier_scores_as_its_own_forward(tmp_path, arch):
    """The best-of-N scorer on RMs packed attention would get wrong, GPT-2 (no packed path) and a
    Mistral whose 16-token window (tests/rmzoo.py) is shorter than the conversations: padded,
    each reward is the model's own forward on the same ids."""
    import numpy as np
    import torch
    from rmzoo import build_rm
    from transformers import AutoModelForSequenceClassification

    from paper_repro.downstream.bon import RewardScorer

    folder = build_rm(tmp_path, arch, "pad+bos+template")
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    scorer = RewardScorer(folder, "float32", token_budget=4096)
    convs = [
        [{"role": "user", "content": f"What is {i} + {i}?"}, {"role": "assistant", "content": a}]
        for i, a in ((1, "2"), (2, "It is four."), (3, "6, I think, but let me check again."))
    ]
    assert min(len(scorer.ids(c)) for c in convs) > 16
    with torch.no_grad():
        own = [model(torch.tensor([scorer.ids(c)])).logits[0, 0].item() for c in convs]
    assert np.allclose(scorer(convs), own, atol=1e-5)
