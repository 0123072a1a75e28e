"""Packaging promises: pins agree, the Llama 3 license ships verbatim with its attribution."""

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
SHARED_LICENSE = ROOT.parent / "shared" / "third_party" / "llama_3_license.txt"


def _pins(lines):
    pins = {}
    for line in lines:
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s;#]+)", line.strip())
        if m:
            pins[m.group(1).lower().replace("_", "-")] = m.group(2)
    return pins


def test_environment_yml_pins_match_constraints():
    lock = _pins((ROOT / "constraints.txt").read_text().splitlines())
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert "-c constraints.txt" in pip and "-e .[dev]" in pip
    env_pins = _pins(pip)
    assert len(env_pins) >= 10
    drift = {k: (v, lock.get(k)) for k, v in env_pins.items() if lock.get(k) != v}
    assert not drift, f"environment.yml and constraints.txt disagree: {drift}"
    assert lock["torch"] == "2.13.0"


def test_requirements_in_agrees_with_the_lock():
    lock = _pins((ROOT / "constraints.txt").read_text().splitlines())
    wanted = _pins((ROOT / "requirements.in").read_text().splitlines())
    assert {k: v for k, v in wanted.items() if lock.get(k) != v} == {}


def test_required_top_level():
    for name in (
        "Snakefile",
        "environment.yml",
        "README.md",
        "CITATION.bib",
        "llama_3_license.txt",
        "NOTICE",
        "workflow",
        "paper_repro",
        "tests",
        ".ci/run",
    ):
        assert (ROOT / name).exists(), name


def test_llama_license_is_verbatim_and_attributed():
    shipped = (ROOT / "llama_3_license.txt").read_bytes()
    if SHARED_LICENSE.exists():
        assert shipped == SHARED_LICENSE.read_bytes()
    assert b"META LLAMA 3 COMMUNITY LICENSE AGREEMENT" in shipped
    notice = (ROOT / "NOTICE").read_text()
    assert (
        "Meta Llama 3 is licensed under the Meta Llama 3 Community License, "
        "Copyright \u00a9 Meta Platforms, Inc. All Rights Reserved."
    ) in notice
    assert "Built with Meta Llama 3" in (ROOT / "README.md").read_text()


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in readme and re.search(r"^make test$", ci, re.M)
