rule eval_rewardbench:
    """RewardBench scores of the exported RM, compared with the model card."""
    input:
        config=RUN.stage_config("eval_rewardbench"),
        rm_manifest=RUN.manifest("export_rm"),  # pins the files of RUN.rm_model
        rewardbench=RUN.prepared("rewardbench"),
    output:
        pairs=RUN.eval_pairs,
        scores=RUN.eval_scores,
        comparison=RUN.eval_comparison,
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
