rule prepare_data:
    """Tokenize in the EasyLM Tulu format; drop (never truncate) pairs over max_length."""
    input:
        config=RUN.stage_config("prepare_data"),
        model=RUN.base_model,
        manifests=upstream_manifests("prepare_data"),
        preference=RUN.raw_data("preference"),
        rewardbench=RUN.raw_data("rewardbench"),
        ppo_prompts=RUN.raw_data("ppo_prompts"),
    output:
        train=RUN.prepared("train"),
        heldout=RUN.prepared("heldout"),
        rewardbench=RUN.prepared("rewardbench"),
        ppo_prompts=RUN.prepared("ppo_prompts"),
        fingerprint=RUN.fingerprint,
        data_report=RUN.data_report,
        identity=RUN.identity("prepare_data"),
        manifest=RUN.manifest("prepare_data"),
    params:
        run_dir=RUN.root,
    log:
        RUN.log("prepare_data"),
    benchmark:
        RUN.benchmark("prepare_data")
    threads: stage_threads("prepare_data")
    resources:
        **stage_resources("prepare_data"),
    conda:
        CONDA_ENV
    shell:
        stage_shell("prepare_data")
