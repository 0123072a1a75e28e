rule ppo:
    """PPO of the SFT policy against the trained RM (EasyLM recipe), same launcher as train_rm.

    Checkpoints live in results/<run>/checkpoints/ppo/ (never an output): an interrupted run
    resumes from them; any other rerun moves them aside (paper_repro/training/checkpoints.py). The trained
    policy folder is not an output either: the stage renames it into place whole and lists its
    files in the manifest, so it stays a clean HF folder (no Snakemake marker inside).
    """
    input:
        config=RUN.stage_config("ppo"),
        manifests=upstream_manifests("ppo"),
    output:
        **stage_outputs("ppo"),
    params:
        run_dir=RUN.root,
    log:
        RUN.log("ppo"),
    benchmark:
        RUN.benchmark("ppo")
    threads: stage_threads("ppo")
    resources:
        **stage_resources("ppo"),
    conda:
        CONDA_ENV
    shell:
        stage_shell("ppo")
