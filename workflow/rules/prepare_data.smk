rule prepare_data:
    """Tokenize in the EasyLM Tulu format; drop (never truncate) pairs over max_length."""
    input:
        config=RUN.stage_config("prepare_data"),
        manifests=upstream_manifests("prepare_data"),
    output:
        **stage_outputs("prepare_data"),
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
