# The per-stage config files: results/<run>/config/<stage>.yaml, the full resolved config that a
# stage job reads. The params carry only what the stage reads (config.STAGE_SECTIONS), its own
# resources and its code version, so Snakemake's params trigger rewrites (and reruns) exactly the
# affected stages: an eval-only change reruns eval_rewardbench and report, never train_rm; an edit
# of paper_repro/stages/eval_rewardbench.py the same two.
#
# Checkpoints are not touched here: a stage resumes only from checkpoints of its own identity
# (config, code, upstream content, world size) and moves any others aside itself
# (paper_repro/training/checkpoints.py), so one mechanism decides, whoever starts the stage.


localrules:
    stage_config,


rule stage_config:
    output:
        config=RUN.stage_config("{stage}"),
    params:
        depends_on=lambda wildcards: stage_config_params(wildcards.stage),
    log:
        RUN.log("config_{stage}"),
    wildcard_constraints:
        stage="|".join(STAGES),
    conda:
        CONDA_ENV
    shell:
        # $repro_preset and ${{repro_overrides[@]}}: set by the shell prefix (common.smk).
        'paper-repro config resolve "$repro_preset" "${{repro_overrides[@]}}"'
        " --out {output.config:q} > {log:q} 2>&1"
