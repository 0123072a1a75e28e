rule eval_reference:
    """The published RM (a locally trained stand-in on tiny) scored on RewardBench with exactly
    eval_rewardbench's code and settings: the report's "published RM re-evaluated here"."""
    input:
        unpack(eval_reference_inputs),
    output:
        **stage_outputs("eval_reference"),
    params:
        run_dir=RUN.root,
    log:
        RUN.log("eval_reference"),
    benchmark:
        RUN.benchmark("eval_reference")
    threads: stage_threads("eval_reference")
    resources:
        **stage_resources("eval_reference"),
    conda:
        CONDA_ENV
    shell:
        stage_shell("eval_reference")
