"""Results files and their rendering (``nlprobust.core.results``), the project's results document, and the
command-line helpers the recipes share (``nlprobust.core.cli``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from nlprobust.core.cli import display_path, parse_choices, parse_counts
from nlprobust.core.results import ResultsDocument, markdown_table
from nlprobust.experiments.report import results_document

PAYLOAD = {"recipe": "demo", "title": "Demo", "scale": "tiny", "seed": 0, "wall_time_s": 60.0, "hardware": "cpu",
           "command": "python recipes/demo.py --note x", "git_sha": "0123456789abcdef",
           "victim": {"lstm": {"test_bleu": {"bleu": 30.1, "n": 5}}},
           "rows": [{"table": "1", "attack": "a", "success": 0.5, "changed": 1.25, "paper": {"success": 0.9}}],
           "notes": ["a note"], "examples": [{"source": "s", "adversarial": "**t**", "original_output": "o",
                                              "adversarial_output": "p", "keywords": ["k"]}],
           "transcripts": [{"attack": "reactive", "index": 3, "text": "Input ...", "edits": ["turn 1"]}]}


def test_markdown_table_shows_rates_in_percent_beside_the_paper() -> None:
    table = markdown_table(PAYLOAD["rows"])
    assert table.splitlines() == ["| attack | success | changed | paper success |", "|---|---|---|---|",
                                  "| a | 50.0 | 1.250 | 90.0 |"]
    rows = [{"pairing": "RL vs SV", "agreement": 0.875, "advantage": 2.5, "turns": 6.0,
             "ci95": {"agreement": 0.0231, "advantage": 0.31, "turns": None}}]
    assert markdown_table(rows).splitlines()[-1] == "| RL vs SV | 87.5 ± 2.3 | 2.500 ± 0.310 | 6.000 |"


def test_project_document_renders_every_domain_section(tmp_path: Path) -> None:
    doc = results_document(tmp_path)
    doc.publish(tmp_path / "elsewhere.json", PAYLOAD)  # outside recipes/results: nothing rendered
    assert json.loads((tmp_path / "elsewhere.json").read_text()) == PAYLOAD and not doc.out.exists()
    doc.publish(doc.results_dir / "demo.json", PAYLOAD)
    text = doc.out.read_text()
    assert text.startswith("# Results") and "## Demo" in text and "--note ..." in text
    assert "Victim `lstm`: test BLEU 30.1 on 5 sentences" in text  # the text section
    assert "- keywords: k  \n  input: s  " in text  # the examples section
    assert "*reactive* (scenario 3)" in text and "- turn 1" in text
    assert (doc.results_dir / "demo.md").read_text().startswith("## Demo")
    assert doc.publish(doc.results_dir / "demo.json", PAYLOAD, render_docs=False) is None


def test_generic_document_renders_only_its_sections(tmp_path: Path) -> None:
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "b.json").write_text(json.dumps({**PAYLOAD, "recipe": "b", "title": "B"}))
    (tmp_path / "r" / "a.json").write_text(json.dumps({**PAYLOAD, "recipe": "a", "title": "A"}))
    (tmp_path / "r" / "other.json").write_text(json.dumps({"no": "recipe"}))
    doc = ResultsDocument(results_dir=tmp_path / "r", out=tmp_path / "docs" / "R.md", root=tmp_path, header="# H\n",
                          order=("b",))
    text = doc.render()
    assert text.index("## B") < text.index("## A") and "Victim" not in text and "Examples" not in text


def test_choice_and_count_options() -> None:
    ap = argparse.ArgumentParser()
    assert parse_choices(ap, "a,,b", ("a", "b"), "victim") == ["a", "b"]
    assert parse_counts(ap, ["a=3"], ("a",), "--n") == {"a": 3}
    with pytest.raises(SystemExit):
        parse_choices(ap, "c", ("a", "b"), "victim")
    with pytest.raises(SystemExit):
        parse_counts(ap, ["a=0"], ("a",), "--n")
    assert display_path(Path("/r/runs/x"), Path("/r")) == "runs/x"
    assert display_path(Path("/t/x"), Path("/r")) == "/t/x" and display_path(Path("/t/x"), None) == "/t/x"
