rule ppo:
    """PPO of the SFT policy against the trained RM (EasyLM recipe), same launcher as train_rm.

    Checkpoints live in results/<run>/checkpoints/ppo/ (never an output), so a rerun resumes.
    """
    input:
        config=RUN.stage_config("ppo"),
        model=RUN.base_model,
        model_manifest=RUN.base_manifest,
        rm_manifest=RUN.manifest("export_rm"),  # pins the files of RUN.rm_model
        prompts=RUN.prepared("ppo_prompts"),
    output:
        metrics=RUN.ppo_metrics,
        summary=RUN.ppo_summary,
        policy=directory(RUN.ppo_policy),
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
