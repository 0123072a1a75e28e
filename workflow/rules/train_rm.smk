rule train_rm:
    """Bradley-Terry reward-model training, one launcher per node (workflow/scripts/launch.sh).

    Checkpoints go to results/<run>/checkpoints/train_rm/, which is not an output: Snakemake
    deletes outputs before rerunning a job, so a rerun (--rerun-incomplete, a retry after a Slurm
    time limit) resumes from the last checkpoint instead of starting over.
    """
    input:
        config=RUN.stage_config("train_rm"),
        model=RUN.base_model,
        manifests=upstream_manifests("train_rm"),
        train=RUN.prepared("train"),
        heldout=RUN.prepared("heldout"),
    output:
        metrics=RUN.train_metrics,
        summary=RUN.train_summary,
        state=RUN.trained_state,
    params:
        run_dir=RUN.root,
    log:
        RUN.log("train_rm"),
    benchmark:
        RUN.benchmark("train_rm")
    threads: stage_threads("train_rm")
    resources:
        **stage_resources("train_rm"),
    conda:
        CONDA_ENV
    shell:
        stage_shell("train_rm")
