rule eval_rewardbench:
    """RewardBench scores of the exported RM, compared with the model card."""
    input:
        config=RUN.stage_config("eval_rewardbench"),
        manifests=upstream_manifests("eval_rewardbench"),
    output:
        **stage_outputs("eval_rewardbench"),
    params:
        run_dir=RUN.root,
    log:
        RUN.log("eval_rewardbench"),
    benchmark:
        RUN.benchmark("eval_rewardbench")
    threads: stage_threads("eval_rewardbench")
    resources:
        **stage_resources("eval_rewardbench"),
    conda:
        CONDA_ENV
    shell:
        stage_shell("eval_rewardbench")
