"""Does the exported folder read the same with the transformers versions users run?

reward-bench 0.1.4 pins transformers 4.51.0, its main branch 4.57.6; the pipeline itself runs 5.x.
For each version a *side environment* is a ``pip install --target`` folder holding only that
transformers and the tokenizers / huggingface_hub it pins, put first on ``PYTHONPATH`` over this
environment (torch, accelerate, numpy, safetensors come from here; 4.51.0 needs accelerate to load
a model). Built once and kept in the user cache (``paths.cache_root()/side-envs``).

``crosscheck`` runs ``export.sidecheck`` on the export's verification pairs in this environment and
in each side environment, and requires the same tokenizer behaviour (special ids, decoded text and
its re-encoding, the rendered chat template, BOS on ``add_special_tokens``) and the same fp32 rewards
to ``REWARD_ATOL``; in each environment the calls users make must run and give those rewards:
``model(**tok(texts, return_tensors="pt", padding=True))``, the text-classification pipeline and
the model card's snippet as written (a call that raises fails the check). Then reward-bench 0.1.4's
own ``rewardbench`` CLI scores the folder on a few local pairs (``export.rbcli``) and must give our
rewards. The result goes to ``export_rm/crosscheck.json``::

    python -m paper_repro.export.crosscheck results/<run> [--versions 4.51.0 4.57.6] [--pairs N]
        [--no-rewardbench]

Building a side environment needs PyPI (about 20 MB each); checking needs no network.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from ..provenance.integrity import read_record
from ..provenance.io import read_json, write_json
from ..provenance.paths import RunPaths, cache_root
from .build import ExportError, verification_batch

# transformers version -> the packages of its side environment (the tokenizers and
# huggingface_hub releases that version's own pins resolve to on Python 3.11).
SIDE_ENVS: dict[str, dict[str, str]] = {
    "4.51.0": {"transformers": "4.51.0", "tokenizers": "0.21.4", "huggingface-hub": "0.36.2"},
    "4.57.6": {"transformers": "4.57.6", "tokenizers": "0.22.2", "huggingface-hub": "0.36.2"},
}
REWARD_ATOL = 1e-5  # fp32, same weights, same kernels: only summation order may differ
SNIPPET_ATOL = 0.05  # the card snippet's reward in the model's dtype, bf16 included
CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Héllo — naïve café? 東京 😀"},
    {"role": "assistant", "content": "Sure.\n\nLine two."},
]
SAME_KEYS = ("model_class", "rope_theta", "special_ids", "vocab", "texts", "with_special_tokens")
SAME_KEYS += ("chat_template", "reencoded_equal")


def side_env(version: str, root: Path | None = None) -> Path:
    """The cached side environment of ``version``, built with pip on first use."""
    if version not in SIDE_ENVS:
        raise ExportError(
            f"no side environment for transformers {version} (known: {list(SIDE_ENVS)})"
        )
    return build_env(f"transformers-{version}", SIDE_ENVS[version], root)


def build_env(name: str, pins: dict[str, str], root: Path | None = None) -> Path:
    """``pip install --no-deps --target`` of exactly ``pins`` into ``<cache>/side-envs/<name>``,
    once (a marker file holds the pins; other pins rebuild it); returns the folder."""
    folder = (root or cache_root()) / "side-envs" / name
    marker = folder / "paper-repro-side-env.json"
    if marker.is_file() and read_json(marker) == pins:
        return folder
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(tmp)]
    proc = subprocess.run(
        [*cmd, *(f"{pkg}=={v}" for pkg, v in pins.items())], capture_output=True, text=True
    )
    if proc.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        raise ExportError(f"building the {name} side environment failed: {last}")
    write_json(tmp / marker.name, pins)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    return folder


def read_folder(folder: Path, sequences: list[list[int]], env: Path | None = None) -> dict:
    """``export.sidecheck`` on ``folder`` in a subprocess: this environment, or ``env`` first."""
    repo = str(Path(__file__).resolve().parents[2])
    path = [str(env)] if env else []
    environ = {**os.environ, "PYTHONPATH": os.pathsep.join([*path, repo])}
    with tempfile.TemporaryDirectory() as tmp:
        request, result = Path(tmp) / "request.json", Path(tmp) / "result.json"
        request.write_text(
            json.dumps(
                {
                    "folder": str(folder),
                    "sequences": sequences,
                    "conversation": CONVERSATION,
                    "snippet": card_snippet(folder),
                }
            )
        )
        cmd = [sys.executable, "-m", "paper_repro.export.sidecheck", str(request), str(result)]
        proc = subprocess.run(cmd, env=environ, capture_output=True, text=True)
        if proc.returncode != 0:
            where = f"transformers side environment {env}" if env else "this environment"
            tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
            raise ExportError(f"reading {folder} in {where} failed: {tail}")
        return json.loads(result.read_text())


def card_snippet(folder: Path) -> str | None:
    """The Python example of the folder's model card (README.md), as users copy it."""
    card = Path(folder) / "README.md"
    if not card.is_file():
        return None
    text = card.read_text()
    start = text.find("```python\n")
    if start < 0:
        return None
    start += len("```python\n")
    return text[start : text.index("```", start)]


def _max_diff(a: list[float], b: list[float]) -> float:
    return max(abs(x - y) for x, y in zip(a, b, strict=True))


def user_call_diff(res: dict) -> float:
    """How far the users' calls (``sidecheck.user_calls``) are from the explicit-ids rewards of
    the same environment."""
    return max(
        _max_diff(res["user_call_rewards"], res["rewards"]),
        _max_diff(res["pipeline_rewards"], res["rewards"]),
    )


def compare(ref: dict, got: dict) -> dict[str, Any]:
    """What differs between two ``sidecheck`` results, and the largest reward difference."""
    diff = _max_diff(ref["rewards"], got["rewards"])
    differs = [k for k in SAME_KEYS if ref[k] != got[k]]
    users = user_call_diff(got)
    snippet = abs(ref["snippet_reward"] - got["snippet_reward"]) if "snippet_reward" in ref else 0
    # the snippet runs in the card's dtype (bf16 for the 70B export): kernels may round apart
    ok = diff <= REWARD_ATOL and not differs and all(got["reencoded_equal"])
    ok = ok and users <= REWARD_ATOL and snippet <= SNIPPET_ATOL
    return {
        "passed": ok,
        "user_calls_max_abs_diff": users,
        "snippet_abs_diff": snippet,
        "reward_max_abs_diff": diff,
        "reward_tolerance": REWARD_ATOL,
        "differs": differs,
        "versions": {k: got[k] for k in ("transformers", "tokenizers", "torch")},
        "tokenizer_class": got["tokenizer_class"],
    }


def crosscheck(
    paths: RunPaths,
    versions: list[str],
    pairs: int | None = None,
    cache: Path | None = None,
    rewardbench: bool = True,
) -> dict[str, Any]:
    """Read ``paths.rm_model`` with this environment's and each side environment's transformers
    on the export's verification pairs, and (``rewardbench``) score it with reward-bench's CLI
    (``export.rbcli``); write and return ``export_rm/crosscheck.json``."""
    ver = read_record(paths, "export_rm", paths.export_verification)
    n = pairs or ver["verify_pairs"]
    batch = verification_batch(paths, ver["pad_token_id"], n)
    sequences = batch.chosen + batch.rejected
    ref = read_folder(paths.rm_model, sequences)
    if not all(ref["reencoded_equal"]):
        raise ExportError(f"{paths.rm_model}: decoded text does not re-encode to the same ids")
    if user_call_diff(ref) > REWARD_ATOL:
        raise ExportError(
            f"{paths.rm_model}: model(**tok(texts, padding=True)) or the text-classification "
            f"pipeline gives other rewards (max |diff| {user_call_diff(ref):.3g})"
        )
    record = {
        "model_files": ver["files"],
        "pairs": len(batch.chosen),
        "split": batch.split,
        "reference": {k: ref[k] for k in ("transformers", "tokenizers", "torch")},
        "checked": {
            v: compare(ref, read_folder(paths.rm_model, sequences, side_env(v, cache)))
            for v in versions
        },
    }
    if rewardbench:
        from .rbcli import check

        record["rewardbench_cli"] = check(paths.rm_model, cache)
    checks = [*record["checked"].values(), record.get("rewardbench_cli", {"passed": True})]
    record["passed"] = all(c["passed"] for c in checks)
    write_json(paths.export_crosscheck, record)
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m paper_repro.export.crosscheck")
    parser.add_argument("run_dir", nargs="?", help="results/<run> with a finished export_rm")
    parser.add_argument("--versions", nargs="+", default=list(SIDE_ENVS))
    parser.add_argument("--pairs", type=int, default=None, help="default: the export's own")
    parser.add_argument("--envs-only", action="store_true", help="only build the side envs")
    parser.add_argument(
        "--no-rewardbench", action="store_true", help="skip reward-bench's CLI on the folder"
    )
    args = parser.parse_args(argv)
    try:
        if args.envs_only:
            for v in args.versions:
                print(f"transformers {v}: {side_env(v)}")
            if not args.no_rewardbench:
                from ..rewardbench.rbcheck import rewardbench_env
                from .rbcli import cli_env

                print(f"reward-bench CLI: {rewardbench_env()} + {cli_env()}")
            return 0
        if not args.run_dir:
            parser.error("run_dir is required")
        run = RunPaths(Path(args.run_dir))
        record = crosscheck(run, args.versions, args.pairs, rewardbench=not args.no_rewardbench)
    except ExportError as exc:
        print(f"crosscheck: {exc}", file=sys.stderr)
        return 2
    for v, c in record["checked"].items():
        state = "same" if c["passed"] else f"DIFFERS ({', '.join(c['differs']) or 'rewards'})"
        print(
            f"transformers {v} vs {record['reference']['transformers']}: {state}, reward max "
            f"|diff| {c['reward_max_abs_diff']:.3g} on {2 * record['pairs']} sequences"
        )
    if "rewardbench_cli" in record:
        c = record["rewardbench_cli"]
        print(
            f"reward-bench CLI: accuracy {c['rewardbench_accuracy']:.2f} (ours "
            f"{c['ours_accuracy']:.2f}), reward max |diff| {c['reward_max_abs_diff']:.3g} on "
            f"{c['pairs']} pairs: {'same' if c['passed'] else 'DIFFERS'}"
        )
    return 0 if record["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
