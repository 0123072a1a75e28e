rule download_base:
    """The SFT base model (hub at a pinned commit, a local folder, or the tiny Llama built here)."""
    input:
        config=RUN.stage_config("download_base"),
    output:
        **stage_outputs("download_base"),
    params:
        run_dir=RUN.root,
    log:
        RUN.log("download_base"),
    benchmark:
        RUN.benchmark("download_base")
    threads: stage_threads("download_base")
    resources:
        **stage_resources("download_base"),
    conda:
        CONDA_ENV
    shell:
        stage_shell("download_base")
