rule eval_downstream:
    """The paper's evaluation suite through lm-evaluation-harness: the SFT and PPO policies, and
    best-of-N from the SFT policy's samples selected by our RM and by the published RM. Its
    params hash only the `downstream` and `reference` config sections, so a new task reruns only
    this stage (and the report); upstream models come in through their manifests."""
    input:
        config=RUN.stage_config("eval_downstream"),
        manifests=upstream_manifests("eval_downstream"),
        # after eval_reference, which fetches (or trains) the published RM into reference_model/;
        # ancient: re-scoring RewardBench (an eval.* change) leaves that model, and this stage,
        # alone; another reference (reference.*) reruns this stage through its config
        reference=ancient(RUN.manifest("eval_reference")),
    output:
        **stage_outputs("eval_downstream"),
    params:
        run_dir=RUN.root,
    log:
        RUN.log("eval_downstream"),
    benchmark:
        RUN.benchmark("eval_downstream")
    threads: stage_threads("eval_downstream")
    resources:
        **stage_resources("eval_downstream"),
    conda:
        CONDA_ENV
    shell:
        stage_shell("eval_downstream")
