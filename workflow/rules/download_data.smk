rule download_data:
    """Preference pairs, RewardBench and PPO prompts in their upstream schema (pinned revisions)."""
    input:
        config=RUN.stage_config("download_data"),
    output:
        preference=RUN.raw_data("preference"),
        rewardbench=RUN.raw_data("rewardbench"),
        ppo_prompts=RUN.raw_data("ppo_prompts"),
        manifest=RUN.data_manifest,
        identity=RUN.identity("download_data"),
    params:
        run_dir=RUN.root,
    log:
        RUN.log("download_data"),
    benchmark:
        RUN.benchmark("download_data")
    threads: stage_threads("download_data")
    resources:
        **stage_resources("download_data"),
    conda:
        CONDA_ENV
    shell:
        stage_shell("download_data")
