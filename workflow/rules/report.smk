rule report:
    """The paper-ready report: tables, figures, references and provenance of this run."""
    input:
        config=RUN.stage_config("report"),
        # what each stage ran with and consumed: the report refuses a mixture (reporting/consistency.py)
        identities=[RUN.identity(stage) for stage in STAGES if stage != "report"],
        # they list (and pin) every file the report reads
        manifests=upstream_manifests("report"),
    output:
        markdown=report(RUN.report_md, caption="../report/report_md.rst", category="Report"),
        latex=RUN.report_tex,
        references=RUN.report_bib,
        provenance=report(
            RUN.report_provenance, caption="../report/provenance.rst", category="Report"
        ),
        figures=report(
            directory(RUN.report_figures),
            patterns=["{name}.png"],
            caption="../report/figures.rst",
            category="Figures",
        ),
        identity=RUN.identity("report"),
    params:
        run_dir=RUN.root,
    log:
        RUN.log("report"),
    benchmark:
        RUN.benchmark("report")
    threads: stage_threads("report")
    resources:
        **stage_resources("report"),
    conda:
        CONDA_ENV
    shell:
        stage_shell("report")
