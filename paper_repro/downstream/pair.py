"""``paper-repro eval-downstream PRESET --policy DIR --rm DIR``: the downstream evaluation of any
policy / reward-model pair, outside a pipeline run: the policy on the configured tasks, and
best-of-N from its samples selected by the RM. Writes results.json, results.md and samples/ to
``--out`` (default ``results/downstream/<policy>--<rm>``)."""

from __future__ import annotations

from pathlib import Path

from ..config import ReproConfig
from ..errors import ReproError
from ..provenance.io import write_text
from .run import Models, evaluate


class PairError(ReproError, ValueError):
    pass


def _folder(path: str, flag: str) -> Path:
    p = Path(path)
    if not (p / "config.json").is_file():
        raise PairError(f"{flag} {p}: not a Hugging Face model folder (no config.json)")
    return p


def run_pair(cfg: ReproConfig, policy: str, rm: str, out: str | None) -> int:
    from ..reporting.downstream import markdown

    pol, rew = _folder(policy, "--policy"), _folder(rm, "--rm")
    folder = Path(out) if out else Path("results") / "downstream" / f"{pol.name}--{rew.name}"
    models = Models(policies={"sft": pol}, rms={"ours": rew}, names={"bon_ours": str(rew)})
    body = evaluate(cfg, models, folder, folder / "downstream_data")
    text = markdown(body)
    write_text(folder / "results.md", text)
    print(text, end="")
    print(f"eval-downstream: {folder / 'results.json'}")
    return 0
