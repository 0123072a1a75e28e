"""What each ``paper-repro`` subcommand reads and writes, with an example: the text of its
``--help``. Paths are relative to the run folder (``--run-dir``, default ``results/<preset>``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Help:
    summary: str
    reads: str
    writes: str
    example: str

    def epilog(self) -> str:
        return f"reads:   {self.reads}\nwrites:  {self.writes}\nexample: {self.example}"


STAGE_HELP: dict[str, Help] = {
    "download_base": Help(
        "the SFT base model, pinned and verified (hub commit, local folder or the tiny Llama)",
        "the hub (or model.local_path; nothing for tiny)",
        "download_base/model/, download_base/manifest.json",
        "paper-repro download-base llama3-70b-uf",
    ),
    "download_data": Help(
        "preference pairs, RewardBench and PPO prompts at pinned revisions",
        "the hub (or the shipped fixtures for tiny)",
        "download_data/{preference,rewardbench,ppo_prompts}.jsonl, download_data/manifest.json",
        "paper-repro download-data tiny",
    ),
    "prepare_data": Help(
        "tokenize in the EasyLM Tulu format; drop (never truncate) pairs over data.max_length",
        "download_base/model/, download_data/*.jsonl",
        "prepare_data/{train,heldout,rewardbench,ppo_prompts}.parquet, fingerprint.json, "
        "data_report.json",
        "paper-repro prepare-data tiny",
    ),
    "train_rm": Help(
        "Bradley-Terry reward-model training (resumes from checkpoints/train_rm/)",
        "download_base/model/, prepare_data/{train,heldout}.parquet",
        "train_rm/{metrics.jsonl,summary.json,final.safetensors}, checkpoints/train_rm/",
        "paper-repro train-rm tiny rm.lr=0.002",
    ),
    "export_rm": Help(
        "the trained weights as a verified Hugging Face LlamaForSequenceClassification folder",
        "download_base/model/, train_rm/final.safetensors, prepare_data/heldout.parquet",
        "export_rm/model/ (safetensors, tokenizer, card, licenses), export_rm/verification.json",
        "paper-repro export-rm tiny",
    ),
    "eval_rewardbench": Help(
        "RewardBench scores of the exported RM (or, with --model, of any sequence-"
        "classification RM: a folder or ORG/NAME@COMMIT)",
        "export_rm/model/, prepare_data/rewardbench.parquet or download_data/rewardbench.jsonl",
        "eval_rewardbench/{pairs.parquet,scores.json,comparison.json,comparison.md,"
        "leaderboard.json}, the RewardBench section of export_rm/model/README.md, an MLflow "
        "model version; with --model: the same five files in --out",
        "paper-repro eval-rewardbench llama3-70b-uf --model "
        "allenai/llama-3-tulu-2-8b-uf-mean-rm@7a3dfb3 eval.input_mode=training-format",
    ),
    "eval_reference": Help(
        "the published RM (reference.hub_id at reference.revision; a locally trained stand-in "
        "on tiny) scored with exactly eval_rewardbench's code and settings",
        "the hub (or download_base/model/ and prepare_data/ for the stand-in), "
        "download_data/rewardbench.jsonl or prepare_data/rewardbench.parquet",
        "eval_reference/{pairs.parquet,scores.json,comparison.json,comparison.md,"
        "leaderboard.json}, reference_model/",
        "paper-repro eval-reference llama3-70b-uf",
    ),
    "ppo": Help(
        "PPO of the SFT policy against the trained RM (EasyLM recipe)",
        "download_base/model/, export_rm/model/, prepare_data/ppo_prompts.parquet",
        "ppo/{metrics.jsonl,summary.json,policy/}, checkpoints/ppo/",
        "paper-repro ppo tiny ppo.max_steps=10",
    ),
    "eval_downstream": Help(
        "the paper's evaluation suite (lm-evaluation-harness) for the SFT policy, the PPO policy "
        "and best-of-N selected by our RM and by the published RM (or, with --policy/--rm, for "
        "any policy/RM pair)",
        "download_base/model/, ppo/policy/, export_rm/model/, reference_model/model/, the "
        "pinned task data",
        "eval_downstream/{results.json,samples/}, downstream_data/ (pinned task data), the "
        "Downstream section of export_rm/model/README.md; with --policy/--rm: results.json, "
        "results.md and samples/ in --out",
        "paper-repro eval-downstream llama3-70b-uf --policy /path/sft --rm /path/rm",
    ),
    "report": Help(
        "the citation-ready report of the run: tables, verdict, figures, references, provenance",
        "the outputs of prepare_data, train_rm, export_rm, eval_rewardbench, eval_reference, ppo, "
        "eval_downstream",
        "report/{report.md,report.tex,references.bib,provenance.json,figures/}",
        "paper-repro report tiny && (cd results/tiny/report && pdflatex report && bibtex report)",
    ),
}

TOOL_HELP: dict[str, Help] = {
    "config": Help(
        "show, validate or resolve a preset + overrides, or list the presets",
        "paper_repro/presets/<preset>.yaml (or a resolved YAML file)",
        "stdout; with resolve --out FILE: the frozen YAML",
        "paper-repro config show llama3-70b-uf rm.seed=1",
    ),
    "render": Help(
        "print the exact strings and token ids the model sees",
        "download_base/model/ (tokenizer), download_data/*.jsonl",
        "stdout",
        "paper-repro render tiny --split rewardbench --rows 2",
    ),
    "plan": Help(
        "parameters, tokens, FLOPs, memory and GPU-hours of a preset",
        "the preset; prepare_data/data_report.json when present (real token counts)",
        "stdout",
        "paper-repro plan llama3-70b-uf --nodes 4 --gpus-per-node 8",
    ),
    "prune": Help(
        "delete checkpoint folders set aside (superseded, completed, corrupt); never live ones",
        "RUN_DIR/checkpoints/",
        "removes RUN_DIR/checkpoints/<stage>.{superseded,completed}-*/ and <stage>/*.corrupt-*/ "
        "(corrupt ones only while the stage is not running); stdout: each folder with its size",
        "paper-repro prune results/tiny --dry-run",
    ),
    "push-to-hub": Help(
        "upload the run's exported reward model and card to a Hugging Face repo (opt-in)",
        "RUN_DIR/export_rm/model/ (checked against its manifest first); token: HF_TOKEN or the "
        "stored `hf auth login`",
        "the hub repo REPO_ID (created when missing), branch --revision (default main)",
        "paper-repro push-to-hub results/llama3-70b-uf your-user/llama-3-tulu-2-70b-uf-rm --private",
    ),
}
