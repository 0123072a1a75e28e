rule export_rm:
    """The trained weights as a Hugging Face LlamaForSequenceClassification folder, verified."""
    input:
        config=RUN.stage_config("export_rm"),
        model=RUN.base_model,
        state=RUN.trained_state,
        heldout=RUN.prepared("heldout"),
    output:
        # The model folder (RUN.rm_model) is not a directory() output: Snakemake would leave its
        # .snakemake_timestamp marker inside the folder users share. Consumers depend on the
        # manifest instead, which the stage writes last and which pins every file of the folder.
        manifest=RUN.manifest("export_rm"),
        verification=RUN.export_verification,
    params:
        run_dir=RUN.root,
    log:
        RUN.log("export_rm"),
    benchmark:
        RUN.benchmark("export_rm")
    threads: stage_threads("export_rm")
    resources:
        **stage_resources("export_rm"),
    conda:
        CONDA_ENV
    shell:
        stage_shell("export_rm")
