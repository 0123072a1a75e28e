rule download_data:
    """Preference pairs, RewardBench and PPO prompts in their upstream schema (pinned revisions)."""
    input:
        config=RUN.stage_config("download_data"),
    output:
        **stage_outputs("download_data"),
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
