"""One module per pipeline stage; each exposes ``run(cfg, paths)``.

``UPSTREAM`` is the DAG in Python: the stages whose outputs each stage reads (the Snakemake rules
declare the same files as inputs). Identities, input verification and the report's consistency
checks follow it. Kept free of heavy imports: the Snakefile reads it at every invocation.
"""

UPSTREAM: dict[str, tuple[str, ...]] = {
    "download_base": (),
    "download_data": (),
    "prepare_data": ("download_base", "download_data"),
    "train_rm": ("download_base", "prepare_data"),
    "export_rm": ("download_base", "prepare_data", "train_rm"),
    "eval_rewardbench": ("download_data", "prepare_data", "export_rm"),
    # the tiny stand-in is trained from download_base + prepare_data; a hub reference needs only
    # download_data (the rule declares what the configured source reads)
    "eval_reference": ("download_base", "download_data", "prepare_data"),
    "ppo": ("download_base", "prepare_data", "export_rm"),
    # the SFT and PPO policies and our RM; the published RM is reference_model/ (verified by its
    # own lock manifest, identity.upstream_artifacts), not eval_reference's RewardBench scores
    "eval_downstream": ("download_base", "export_rm", "ppo"),
    "report": (
        "prepare_data",
        "train_rm",
        "export_rm",
        "eval_rewardbench",
        "eval_reference",
        "ppo",
        "eval_downstream",
    ),
}


def reads(stage: str, cfg) -> tuple[str, ...]:
    """The upstream stages ``stage`` reads under ``cfg``: ``UPSTREAM``, except that a hub or local
    reference reads only the raw pairs (the tiny stand-in is trained from the base and the data)."""
    if stage == "eval_reference" and cfg.reference.source != "tiny":
        return ("download_data",)
    return UPSTREAM[stage]
