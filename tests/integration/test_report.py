"""The report stage on synthetic stage outputs in the formats of docs/architecture.md.

The eval outputs are made by the real scoring code (``rewardbench.evaluate`` / ``scores_json`` /
``comparison_rows``) from seeded rewards, so the report reads exactly what eval_rewardbench
writes. Every number in the report tables is checked against the stage JSONs.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from manifests import remanifest

from paper_repro.config import load_config
from paper_repro.provenance.io import read_json, sha256_file, write_json, write_text
from paper_repro.provenance.manifest import write_manifest
from paper_repro.provenance.paths import RunPaths
from paper_repro.reporting.bibtex import cited_keys, parse_bibtex
from paper_repro.reporting.figures import FIGURES
from paper_repro.reporting.tables import format_cell, parse_markdown_table, rows_where
from paper_repro.rewardbench import sections as rb


def _jsonl(path: Path, rows: list[dict]) -> None:
    write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


def record_identities(paths: RunPaths, cfg=None, skip: tuple[str, ...] = ()) -> None:
    """What every stage does when it ends: a manifest of its files and ``identity.json`` (the
    content identity of what it consumed), in DAG order."""
    from paper_repro.config import STAGES
    from paper_repro.provenance.identity import record, stage_identity
    from paper_repro.provenance.manifest import write_manifest

    cfg = cfg or load_config("tiny")
    for stage in STAGES[:-1]:
        folder = paths.stage_dir(stage)
        if stage in skip:  # a stage that has not run
            continue
        if not paths.manifest(stage).is_file():
            write_manifest(paths.manifest(stage), folder)
        record(paths, stage_identity(cfg, paths, stage))


def write_evaluation(files, subsets, chosen, rejected, name, ids=None) -> None:
    """One evaluation's five files, by the writers eval_rewardbench itself uses."""
    from paper_repro.rewardbench import outputs as out
    from paper_repro.rewardbench.inputs import EvalInputs

    ev = rb.evaluate(subsets, chosen, rejected, bootstrap_samples=200, bootstrap_seed=0)
    scores = {"input_mode": "training-format", "dtype": "float32", **rb.scores_json(ev)}
    inputs = EvalInputs(list(ids or range(len(subsets))), list(subsets), [], [])
    out.write_outputs(
        files,
        inputs,
        np.asarray(chosen),
        np.asarray(rejected),
        {**scores, "model": name},
        out.comparison(ev, "training-format", "float32"),
        out.leaderboard(ev, name, "training-format"),
    )


def make_stage_outputs(paths: RunPaths, *, ppo: bool = True, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    write_json(
        paths.data_report,
        {
            "preference": {
                "total": 2400,
                "kept": 2390,
                "dropped": 10,
                "dropped_by_reason": {"too_long": 7, "empty_turn": 3},
            },
            "train": {"kept": 2390},
            "heldout": {"kept": 200, "source": "fixture file"},
            "rewardbench": {"total": 460, "kept": 460, "dropped": 0, "over_2048_tokens": 0},
            "ppo_prompts": {"total": 300, "kept": 298, "dropped": 2},
            "max_length": 256,
        },
    )
    # The manifests the report stage verifies before reading (no model files in this stand-in).
    write_manifest(paths.manifest("prepare_data"), paths.stage_dir("prepare_data"))
    export_record = write_json(paths.export_verification, {"files": {}})
    write_manifest(
        paths.manifest("export_rm"),
        paths.rm_model,
        [],
        records={paths.export_verification.name: export_record},
    )
    updates = 120
    _jsonl(
        paths.train_metrics,
        [
            {
                "update": u,
                "loss": float(0.69 * np.exp(-u / 40) + 0.05 * rng.random()),
                "accuracy": float(min(1.0, 0.5 + u / 200 + 0.05 * rng.random())),
                "lr": 3e-3 * min(1.0, (u + 1) / 4),
                "grad_norm": 1.0,
                "reward_chosen_mean": 0.1,
                "reward_rejected_mean": -0.1,
                "margin": 0.2,
            }
            for u in range(updates)
        ],
    )
    write_json(
        paths.train_summary,
        {
            "updates": updates,
            "warmup_updates": 4,
            "accumulation_steps": 2,
            "world_size": 1,
            "kept_pairs": 2390,
            "final_loss": 0.1234567,
            "final_accuracy": 0.953125,
            "heldout_accuracy": 0.9312,
            "heldout_pairs": 200,
            "wall_s": 61.25,
        },
    )
    subsets, chosen, rejected = [], [], []
    for j, s in enumerate(rb.EXAMPLE_COUNTS):
        n = 20
        subsets += [s] * n
        c = rng.normal(0.5 + 0.05 * (j % 5), 1.0, n)
        chosen += list(c)
        rejected += list(rng.normal(0.0, 1.0, n))
    write_evaluation(paths.eval_files(), subsets, chosen, rejected, "paper-repro/tiny-rm")
    # The "published" model: correlated rewards, written in reverse pair order (matched by id).
    ref_c = [0.8 * c + 0.3 * x for c, x in zip(chosen, rng.normal(0, 1, len(chosen)), strict=True)]
    order = list(range(len(subsets)))[::-1]
    write_evaluation(
        paths.eval_files("eval_reference"),
        [subsets[i] for i in order],
        [ref_c[i] for i in order],
        [rejected[i] for i in order],
        "allenai/llama-3-tulu-2-70b-uf-mean-rm",
        ids=order,
    )
    if ppo:
        _jsonl(
            paths.ppo_metrics,
            [
                {
                    "step": t,
                    "reward_mean": float(-1 + t / 10),
                    "raw_reward_mean": float(t / 10),
                    "kl": float(t / 50),
                    "entropy": 2.0,
                    "value_loss": 0.1,
                    "clip_frac": 0.01,
                    "response_len": 20.0,
                    "no_eos_frac": 0.1,
                }
                for t in range(20)
            ],
        )
        write_json(
            paths.ppo_summary,
            {
                "steps": 20,
                "eval_reward_before": -0.51234,
                "eval_reward_after": 0.43219,
                "reward_final": 0.9,
                "kl_final": 0.38,
                "no_eos_frac_final": 0.1,
                "kl_coef": 0.05,
                "train_prompts": 236,
                "heldout_prompts": 64,
            },
        )
        cell = {"docs": 100, "metric": "exact_match,extract"}
        write_json(  # eval_downstream's results.json, one task
            paths.downstream_results,
            {
                "tasks": {
                    "gsm8k_cot": {"kind": "generate", "name": "GSM8k", "setting": "8-shot CoT"}
                },
                "models": {
                    m: {"gsm8k_cot": {**cell, "value": v, "ci": [v - 0.05, v + 0.05]}}
                    for m, v in (
                        ("sft", 0.31),
                        ("sft_sample", 0.12),
                        ("ppo", 0.18),
                        ("bon_ours", 0.23),
                        ("bon_published", 0.16),
                    )
                },
                "deltas": [
                    {
                        "a": "ppo",
                        "b": "sft",
                        "task": "gsm8k_cot",
                        "docs": 100,
                        "delta": -0.13,
                        "lo": -0.2,
                        "hi": -0.04,
                        "within_noise": False,
                    }
                ],
                "settings": {"lm_eval_version": "0.4.13", "sampling": {"n": 4}},
                "not_run": {"IFEval": "not run: not in downstream.tasks"},
            },
        )
    record_identities(paths, skip=() if ppo else ("ppo",))


@pytest.fixture(scope="module")
def tiny_cfg_report():
    return load_config("tiny")


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_cfg_report):
    """One full report (figures included) shared by the checks below: figures take seconds."""
    from paper_repro.stages import report

    paths = RunPaths(tmp_path_factory.mktemp("report") / "run")
    make_stage_outputs(paths)
    assert report.run(tiny_cfg_report, paths) == 0
    return paths


def _section(md: str, caption: str) -> str:
    """The markdown from the numbered table whose caption starts with ``caption`` on."""
    return re.split(rf"\*\*Table \d+: {re.escape(caption)}", md, maxsplit=1)[1]


def test_report_files_and_figures_exist(built):
    out = built.report_dir
    for name in ("report.md", "report.tex", "references.bib", "provenance.json"):
        assert (out / name).stat().st_size > 0
    for name in FIGURES:
        png, pdf = out / "figures" / f"{name}.png", out / "figures" / f"{name}.pdf"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
        assert pdf.read_bytes()[:5] == b"%PDF-"


def test_tiny_report_says_it_is_not_a_reproduction(built):
    md = (built.report_dir / "report.md").read_text()
    tex = (built.report_dir / "report.tex").read_text()
    assert "Smoke-scale run, not a reproduction" in md.split("##")[0]
    assert r"\textbf{Smoke-scale run, not a reproduction.}" in tex


def test_rewardbench_table_equals_stage_jsons(built):
    md = (built.report_dir / "report.md").read_text()
    scores, comp = read_json(built.eval_scores), read_json(built.eval_comparison)
    rows = parse_markdown_table(_section(md, "RewardBench: current model cards"))
    by = {(r["model"], r["metric"]): r for r in comp["rows"]}
    for metric in rb.METRICS:
        row = rows_where(rows, Metric=metric)
        r70 = by[("llama-3-tulu-2-70b-uf-mean-rm", metric)]
        r8 = by[("llama-3-tulu-2-8b-uf-mean-rm", metric)]
        assert row["Reproduced"] == f"{r70['reproduced_pct']:.1f}"
        assert row["70B card"] == f"{r70['card_pct']:.1f}"
        assert row["Δ 70B card"] == f"{r70['delta_pct']:+.1f}"
        assert row["8B card"] == f"{r8['card_pct']:.1f}"
        assert row["Δ 8B card"] == f"{r8['delta_pct']:+.1f}"
        est = scores["score"] if metric == "Score" else scores["sections"][metric]
        assert row["95% CI"] == f"[{100 * est['ci_low']:.1f}, {100 * est['ci_high']:.1f}]"
        assert float(row["Reproduced"]) == pytest.approx(100 * est["score"], abs=0.051)
    old = rows_where(rows, Metric="Safety, pre-2024-09 xstest")
    safety_old = scores["variants"]["pre_2024_09_xstest"]["sections"]["Safety"]["score"]
    assert old["Reproduced"] == f"{100 * safety_old:.1f}"


def test_subset_and_data_and_summary_tables_equal_stage_jsons(built):
    md = (built.report_dir / "report.md").read_text()
    scores = read_json(built.eval_scores)
    rows = parse_markdown_table(_section(md, "RewardBench per-subset accuracy"))
    assert len(rows) == len(scores["subsets"]) == 23
    for name, v in scores["subsets"].items():
        row = rows_where(rows, Subset=name)
        assert (row["Pairs"], row["Correct"]) == (f"{v['n']:,}", f"{v['correct']:,}")
        assert row["Accuracy (%)"] == f"{100 * v['accuracy']:.1f}"
        assert row["Section"] == rb.SUBSET_SECTIONS[name]

    data = read_json(built.data_report)
    rows = parse_markdown_table(_section(md, "Data ("))
    pref = rows_where(rows, Split="preference (upstream rows)")
    assert (pref["Rows"], pref["Kept"], pref["Dropped"]) == ("2,400", "2,390", "10")
    assert pref["Notes"] == "empty_turn: 3, too_long: 7"  # write_json sorts keys
    assert rows_where(rows, Split="held-out")["Kept"] == f"{data['heldout']['kept']:,}"
    assert rows_where(rows, Split="PPO prompts")["Dropped"] == "2"

    train = read_json(built.train_summary)
    rows = parse_markdown_table(_section(md, "Reward-model training summary"))
    assert rows_where(rows, Quantity="final training loss")["Value"] == f"{train['final_loss']:.4g}"
    assert rows_where(rows, Quantity="held-out accuracy (%)")["Value"] == (
        f"{100 * train['heldout_accuracy']:.1f}"
    )

    ppo = read_json(built.ppo_summary)
    rows = parse_markdown_table(_section(md, "PPO with the trained reward model"))
    assert rows_where(rows, Quantity="held-out reward before PPO")["Value"] == (
        f"{ppo['eval_reward_before']:.4f}"
    )
    assert rows_where(rows, Quantity="held-out reward after PPO")["Value"] == (
        f"{ppo['eval_reward_after']:.4f}"
    )
    assert rows_where(rows, Quantity="PPO steps")["Value"] == "20"


def test_hyperparameters_show_this_run_and_card_interpretations(built, tiny_cfg_report):
    md = (built.report_dir / "report.md").read_text()
    rows = parse_markdown_table(_section(md, "Reward-model hyperparameters of this run"))
    assert rows_where(rows, Setting="peak learning rate")["This run"] == format_cell(
        f"{tiny_cfg_report.rm.lr:g}"
    )
    assert rows_where(rows, Setting="optimizer updates")["This run"] == "120"
    rows = parse_markdown_table(_section(md, "Reward-model hyperparameters in which the card"))
    lr = rows_where(rows, Setting="peak learning rate")
    assert (lr["Reconciled"], lr["Card literal"]) == ("1e-05", "1e-06")
    end = rows_where(rows, Setting="final learning rate (end_lr)")
    assert (end["Reconciled"], end["Card literal"]) == ("1e-06", "0")
    betas = rows_where(rows, Setting="Adam betas")
    assert (betas["Reconciled"], betas["EasyLM b2"]) == (
        "(0.9, 0.999)",
        "(0.9, 0.95)",
    )
    # settings the three readings share are in the notes, not repeated in three columns
    assert {r["Setting"] for r in rows} == {
        "peak learning rate",
        "final learning rate (end_lr)",
        "Adam betas",
    }
    assert "All of them share: warmup ratio 0.03;" in md
    assert "Preset `tiny`" in md and "card read literally" in md


def test_references_cover_every_cite_in_the_tex(built):
    tex = (built.report_dir / "report.tex").read_text()
    bib = parse_bibtex((built.report_dir / "references.bib").read_text())
    keys = cited_keys(tex)
    assert set(keys) == set(bib)  # every cited key present, nothing uncited
    assert {"ivison2024unpacking", "lambert2024rewardbench", "paper_repro2026"} <= set(keys)
    assert (
        r"\usepackage{booktabs}" in tex
        and r"\toprule" in tex
        and r"\bibliography{references}" in tex
    )
    # every figure the tex includes exists as a PDF
    for name in re.findall(r"\\includegraphics\[[^]]*\]\{figures/([^}]+)\.pdf\}", tex):
        assert (built.report_dir / "figures" / f"{name}.pdf").is_file()


def test_provenance_records_hashes_and_mlflow_runs(built, tiny_cfg_report):
    from paper_repro.config import STAGES, config_hash
    from paper_repro.provenance.identity import content_digest
    from paper_repro.tracking import recorded_run_ids

    prov = read_json(built.report_dir / "provenance.json")
    assert prov["config_hash"] == config_hash(tiny_cfg_report) and prov["git_commit"]
    assert prov["report_inputs"]["eval_rewardbench/scores.json"] == sha256_file(built.eval_scores)
    assert prov["report_inputs"]["train_rm/metrics.jsonl"] == sha256_file(built.train_metrics)
    assert prov["mlflow"]["run_ids"]["report"] == recorded_run_ids(built)["report"]
    assert prov["packages"]["mlflow"] and prov["packages"]["torch"]
    assert set(prov["stage_config_hashes"]) >= {"train_rm", "eval_rewardbench", "report"}
    ids = prov["stage_identities"]
    assert set(ids) == set(STAGES) - {"report"}
    assert ids["eval_rewardbench"]["upstream"]["export_rm"] == content_digest(built, "export_rm")
    assert ids["train_rm"]["code"] == prov["code_versions"]["train_rm"]


def test_report_logs_artifacts_and_ends_the_parent_run(built, tiny_cfg_report):
    from mlflow.tracking import MlflowClient

    from paper_repro.tracking import recorded_run_ids, tracking_uri

    c = MlflowClient(tracking_uri(tiny_cfg_report, built))
    ids = recorded_run_ids(built)
    arts = {a.path for a in c.list_artifacts(ids["report"])}
    assert {"report.md", "report.tex", "references.bib", "provenance.json", "figures"} <= arts
    assert c.get_run(ids["_parent"]).info.status == "FINISHED"


def test_report_without_ppo_outputs_says_so_and_is_deterministic(tmp_path, tiny_cfg_report):
    from paper_repro.stages.report import write_report

    paths = RunPaths(tmp_path / "run")
    make_stage_outputs(paths, ppo=False)
    files = write_report(tiny_cfg_report, paths)
    md = files["md"].read_text()
    assert "The PPO stage did not run for this report" in md
    assert "ppo/summary.json" in md.split("Stage outputs not found")[1]
    assert not (files["figures"] / "ppo_kl.png").exists()
    assert (files["figures"] / "train_loss.png").exists()

    def snapshot() -> dict[str, str]:
        return {
            str(f.relative_to(paths.report_dir)): sha256_file(f)
            for f in sorted(paths.report_dir.rglob("*"))
            if f.is_file()
        }

    first = snapshot()
    write_report(tiny_cfg_report, paths)  # a rerun on the same inputs: the same bytes
    assert snapshot() == first and len(first) == 4 + 2 * 5


def test_malformed_stage_file_names_file_and_line(tmp_path, tiny_cfg_report):
    from paper_repro.reporting.inputs import ReportInputError
    from paper_repro.stages.report import write_report

    paths = RunPaths(tmp_path / "run")
    make_stage_outputs(paths)
    with open(paths.train_metrics, "a") as fh:
        fh.write("{not json\n")
    remanifest(paths, "train_rm")  # as train_rm had written it: the parser, not the hash, refuses
    with pytest.raises(ReportInputError, match=r"train_rm/metrics.jsonl:121: not valid JSON"):
        write_report(tiny_cfg_report, paths)
    assert not (paths.report_dir / "report.md").exists()  # nothing half-written


@pytest.mark.parametrize("mixture", ["new export", "eval of other config", "no identity"])
def test_report_refuses_a_mixture_with_one_line(tmp_path, tiny_cfg_report, mixture):
    """Eval scores of a model other than the current export, scores made under another eval
    config, or files nothing says the origin of: exit 2, one line, no report written."""
    from paper_repro.provenance.identity import record, recorded
    from paper_repro.provenance.manifest import write_manifest
    from paper_repro.reporting.consistency import MixtureError
    from paper_repro.stages import report

    paths = RunPaths(tmp_path / "run")
    make_stage_outputs(paths)
    if mixture == "new export":  # export_rm reran (new weights); eval did not
        paths.rm_model.mkdir(parents=True, exist_ok=True)
        (paths.rm_model / "weights.bin").write_bytes(b"retrained")
        write_manifest(paths.manifest("export_rm"), paths.rm_model)
        expect = "eval_rewardbench was produced from export_rm outputs"
    elif mixture == "eval of other config":
        old = recorded(paths, "eval_rewardbench")
        record(paths, type(old)(**{**old.__dict__, "config": "0" * 16}))
        expect = "eval_rewardbench ran with stage config hash 0000000000000000"
    else:
        paths.identity("train_rm").unlink()
        expect = "train_rm/identity.json is missing"
    with pytest.raises(MixtureError) as err:  # the CLI prints it as one line, exit 2
        report.run(tiny_cfg_report, paths)
    assert expect in str(err.value) and "\n" not in str(err.value)
    assert not paths.report_md.exists() and not paths.report_provenance.exists()


@pytest.fixture(scope="module")
def compiled(built, tmp_path_factory) -> Path:
    """The report folder after pdflatex + bibtex + pdflatex x2, as the README tells users."""
    import shutil
    import subprocess

    tools = ("pdflatex", "bibtex", "pdffonts", "pdftotext", "pdftohtml")
    if not all(shutil.which(t) for t in tools):
        pytest.skip("pdflatex/bibtex/poppler-utils not installed (.ci/run installs them)")
    work = tmp_path_factory.mktemp("compiled") / "report"
    shutil.copytree(built.report_dir, work)
    latex = ("pdflatex", "-interaction=nonstopmode", "-halt-on-error", "report.tex")
    for cmd in (latex, ("bibtex", "report"), latex, latex):
        proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}"
    return work


def _poppler(work: Path, *cmd: str) -> str:
    import subprocess

    return subprocess.run(cmd, cwd=work, capture_output=True, text=True, check=True).stdout


def test_report_compiles_print_ready(compiled):
    """pdflatex + bibtex on the report as written: no overfull box (every table and line fits
    the text width), no LaTeX or BibTeX warning, only outline fonts (no Type 3), all embedded,
    and the arXiv ids survive into the bibliography."""
    log = (compiled / "report.log").read_text(errors="replace")
    assert "Overfull \\hbox" not in log, re.findall(r"Overfull \\hbox.*", log)
    assert "LaTeX Warning" not in log, re.findall(r"LaTeX Warning.*", log)
    blg = (compiled / "report.blg").read_text()
    assert "Warning--" not in blg and "error message" not in blg, blg
    bbl = (compiled / "report.bbl").read_text()
    assert "arXiv:2406.09279" in bbl and "arXiv:2403.13787" in bbl
    fonts = _poppler(compiled, "pdffonts", "report.pdf").splitlines()[2:]
    assert fonts and not [f for f in fonts if "Type 3" in f], fonts
    emb = [f.split()[-5] for f in fonts]  # name type encoding emb sub uni object ID
    assert set(emb) == {"yes"}, fonts


def test_report_pdf_reads_like_a_paper(compiled):
    """What a reader of a paper expects, checked on the compiled PDF: every table and figure is
    referred to from the text, no section heading is followed directly by another heading or
    by the end of its page, no float lands after the bibliography heading, and no text set in
    the report's own (Latin Modern) fonts -- tables and their notes included -- is below 8 pt
    (a table scaled down to the text width is)."""
    tex = (compiled / "report.tex").read_text()
    labels = re.findall(r"\\label\{([^}]+)\}", tex)
    assert len(labels) >= 17  # 10 tables and 7 figures in this report
    assert "tab:downstream" in labels
    unreferenced = [lab for lab in labels if f"\\ref{{{lab}}}" not in tex]
    assert not unreferenced, unreferenced

    pages = _poppler(compiled, "pdftotext", "-layout", "report.pdf", "-").split("\f")
    text = "\f".join(pages)
    captions = re.findall(r"\b(Table|Figure) (\d+):", text)
    assert len(captions) == len(labels)
    for kind, n in captions:  # the caption itself, and at least one mention in the prose
        assert len(re.findall(rf"\b{kind} {n}\b(?!:)", text)) >= 1, f"{kind} {n}"

    titles = re.findall(r"\\section\{([^}]+)\}", tex)
    heading = re.compile(
        r"^\s*(?:\d+\s+(?:" + "|".join(re.escape(t) for t in titles) + r")|References)\s*$"
    )
    seen_refs = False
    for no, page in enumerate(pages, 1):
        lines = [ln for ln in page.splitlines() if ln.strip()]
        if lines and lines[-1].strip().isdigit():
            lines = lines[:-1]  # the page number
        for i, line in enumerate(lines):
            if not heading.match(line):
                continue
            seen_refs = seen_refs or line.strip() == "References"
            nxt = lines[i + 1] if i + 1 < len(lines) else None
            assert nxt is not None, f"page {no}: heading {line.strip()!r} ends the page"
            assert not heading.match(nxt), f"page {no}: {line.strip()!r} then {nxt.strip()!r}"
            if line.strip() == "References":
                after = "\n".join(lines[i:] + pages[no:])
                assert not re.search(r"\b(Table|Figure) \d+:", after), f"float after page {no}"
    assert seen_refs

    xml = _poppler(compiled, "pdftohtml", "-xml", "-i", "-stdout", "-zoom", "1", "report.pdf")
    fonts = re.findall(r'<fontspec id="\d+" size="(\d+)" family="([^"]+)"', xml)
    own = [(fam, int(size)) for size, fam in fonts if "+LM" in fam]  # not the figures' DejaVu
    assert own and min(size for _, size in own) >= 8, sorted(own, key=lambda f: f[1])[:3]


def test_report_cites_only_files_in_the_repository(built):
    root = Path(__file__).resolve().parents[2]
    for name in ("report.md", "report.tex"):
        text = (built.report_dir / name).read_text()
        assert "reproduction_spec" not in text
        for ref in set(re.findall(r"docs/[\w.-]+\.md", text)):
            assert (root / ref).is_file(), ref
