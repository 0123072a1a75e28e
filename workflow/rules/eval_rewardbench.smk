rule eval_rewardbench:
    """RewardBench scores of the exported RM, compared with the model card."""
    input:
        config=RUN.stage_config("eval_rewardbench"),
        rewardbench=RUN.prepared("rewardbench"),
        manifests=upstream_manifests("eval_rewardbench"),  # they pin the files of RUN.rm_model
    output:
        pairs=RUN.eval_pairs,
        scores=RUN.eval_scores,
        comparison=RUN.eval_comparison,
        leaderboard=RUN.eval_files().leaderboard,
        identity=RUN.identity("eval_rewardbench"),
        manifest=RUN.manifest("eval_rewardbench"),
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
