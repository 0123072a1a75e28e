rule train_rm:
    """Bradley-Terry reward-model training, one launcher per node (workflow/scripts/launch.sh).

    Checkpoints go to results/<run>/checkpoints/train_rm/, which is not an output: Snakemake
    deletes outputs before rerunning a job, so an interrupted run (--rerun-incomplete, a retry
    after a Slurm time limit) resumes from the last checkpoint of the same stage identity instead
    of starting over; any other rerun moves them aside (paper_repro/training/checkpoints.py).
    """
    input:
        config=RUN.stage_config("train_rm"),
        manifests=upstream_manifests("train_rm"),
    output:
        **stage_outputs("train_rm"),
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
