# The whole reproduction as one DAG: download_base -> download_data -> prepare_data -> train_rm ->
# export_rm -> eval_rewardbench / ppo -> report, with eval_reference (the published RM) beside.
# Each rule is a thin call of the `paper-repro` CLI; what to run is config/config.yaml, resources
# come from the preset (workflow/rules/common.smk).
#
#   snakemake --cores 2 all                  # tiny preset on CPU (`make run`)
#   snakemake --profile slurm all            # on a Slurm cluster (see README)
#   snakemake --cores 2 eval_rewardbench     # one stage and what it needs

from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config/config.yaml"


validate(config, "workflow/schemas/config.schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/config.smk"
include: "workflow/rules/download_base.smk"
include: "workflow/rules/download_data.smk"
include: "workflow/rules/prepare_data.smk"
include: "workflow/rules/train_rm.smk"
include: "workflow/rules/export_rm.smk"
include: "workflow/rules/eval_rewardbench.smk"
include: "workflow/rules/eval_reference.smk"
include: "workflow/rules/ppo.smk"
include: "workflow/rules/eval_downstream.smk"
include: "workflow/rules/report.smk"


localrules:
    all,


rule all:
    input:
        rules.report.output,


onstart:
    check_slurm_commands(getattr(workflow.executor_plugin, "name", None))


onsuccess:
    if RUN.report_md.is_file():
        print(f"\nReport of run '{RUN_NAME}': {RUN.report_md.resolve()} (LaTeX: {RUN.report_tex})")
