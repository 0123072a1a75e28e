rule export_rm:
    """The trained weights as a Hugging Face LlamaForSequenceClassification folder, verified."""
    input:
        config=RUN.stage_config("export_rm"),
        manifests=upstream_manifests("export_rm"),
    output:
        **stage_outputs("export_rm"),
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
