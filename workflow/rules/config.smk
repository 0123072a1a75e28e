# The per-stage config files: results/<run>/config/<stage>.yaml, the full resolved config that a
# stage job reads. The params carry only what the stage reads (config.STAGE_SECTIONS) and its own
# resources, so Snakemake's params trigger rewrites (and reruns) exactly the affected stages:
# an eval-only change reruns eval_rewardbench and report, never train_rm.
#
# A new config for a stage also retires that stage's checkpoints (they were written under another
# config and cannot be resumed: the trainer refuses them): results/<run>/checkpoints/<stage> is
# moved to <stage>.stale, one generation kept, so a changed setting retrains from scratch while a
# rerun under the same config (a retry, --rerun-incomplete) resumes.


localrules:
    stage_config,


rule stage_config:
    output:
        config=RUN.stage_config("{stage}"),
    params:
        depends_on=lambda wildcards: stage_config_params(wildcards.stage),
        checkpoints=lambda wildcards: RUN.checkpoints(wildcards.stage),
    log:
        RUN.log("config_{stage}"),
    wildcard_constraints:
        stage="|".join(STAGES),
    conda:
        CONDA_ENV
    shell:
        # $repro_preset and ${{repro_overrides[@]}}: set by the shell prefix (common.smk).
        'paper-repro config resolve "$repro_preset" "${{repro_overrides[@]}}"'
        " --out {output.config:q} > {log:q} 2>&1;"
        " if [ -d {params.checkpoints:q} ]; then"
        "  rm -rf {params.checkpoints:q}.stale && mv {params.checkpoints:q} {params.checkpoints:q}.stale"
        "  && echo 'stage config changed: moved {params.checkpoints} aside to .stale' >> {log:q};"
        " fi"
