"""The HTML report (nlprobust.report): escaped texts, highlighted changes and keywords, counts, side by side."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from nlprobust.cli import main
from nlprobust.report import build_report, load_run


def _rec(index: int, source: str, adversarial: str, changed: list[int], success: bool, **extra: object) -> dict:
    return {"index": index, "mode": "nonoverlap", "attack": "word-swap", "reduction": True, "criterion":
            "at-least-as-long", "source": source, "source_words": source.split(), "adversarial": adversarial,
            "adversarial_words": adversarial.split(), "changed_positions": changed, "changed": len(changed),
            "original_output": "Ein Hund rennt .", "adversarial_output": "Eine Katze schläft .",
            "keywords": [], "success": success, "bleu": 0.5, "chrf": 0.6, "ter": 0.2, "time_s": 1.5,
            "error": None, **extra}


def _write(path: Path, recs: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path


def test_report_escapes_highlights_and_counts(tmp_path: Path) -> None:
    evil = 'A <script>alert("x")</script> dog "runs" & jumps'
    a = _write(tmp_path / "swap.jsonl", [
        _rec(0, "A dog runs", "A cat runs", [1], True),
        _rec(1, evil, evil.replace("dog", "cow"), [2], True, keywords=["Katze"]),
        _rec(2, "A bird sings", "A bird sings", [], False),
        {**_rec(3, "", "", [], False), "error": "empty input: nothing to attack"}])
    page = build_report([load_run(a)])
    assert "<script>alert" not in page and "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert page.count("<script>") == 1  # only the report's own sorting/filtering code
    assert '<mark class="chg">cat</mark>' in page and '<mark class="chg">cow</mark>' in page
    assert '<mark class="kw">Katze</mark>' in page
    assert page.count('data-status="success"') == 2 and page.count('data-status="failure"') == 1
    assert page.count('data-status="error"') == 1 and "empty input: nothing to attack" in page
    summary = re.search(r"<h2>Summary</h2>(.*?)</table>", page, re.S)
    assert summary and ">3</td>" in summary.group(1) and ">66.67</td>" in summary.group(1)  # 3 attacked, 2/3 won
    assert "<svg" in page and "http://" not in page.replace('http://www.w3.org', '') and "https://" not in page


def test_side_by_side_and_cli(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    a = _write(tmp_path / "a.jsonl", [_rec(i, f"s{i} x y", f"t{i} x y", [0], True) for i in range(3)])
    b = _write(tmp_path / "b.jsonl", [{**_rec(i, f"s{i} x y", f"s{i} x z", [2], i != 1), "attack": "seq2sick"}
                                      for i in range(1, 4)])
    out = tmp_path / "r.html"
    assert main(["report", str(a), str(b), "-o", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    page = out.read_text()
    side = re.search(r"<h2>Side by side.*?</table>", page, re.S)
    assert side is not None
    assert side.group(0).count("<tr data-status") == 4  # sentences 1 and 2, two runs each
    assert "word-swap · nonoverlap + reduction" in page and "seq2sick · nonoverlap + reduction" in page
    with pytest.raises(SystemExit, match="run file not found"):
        main(["report", str(tmp_path / "none.jsonl"), "-o", str(out)])


def test_negotiation_games_and_images(tmp_path: Path) -> None:
    game = {"index": 0, "contexts": [[1, 4, 4, 1, 1, 2], [1, 0, 4, 2, 1, 2]], "first": "a",
            "messages": [["a", "i want the <b>book</b> <eos>"], ["b", "<selection>"]], "agreed": True,
            "scores": [8, 2], "events": [{"turn": 0, "kind": "reactive", "draft": "i want the hats <eos>",
                                          "message": "i want the <b>book</b> <eos>", "success": True}]}
    img = {"index": 0, "image": "data:image/png;base64,AAAA", "adversarial_image": "javascript:alert(1)",
           "label": 3, "adversarial_label": 5, "success": True, "distance": 0.8, "queries": 4000}
    page = build_report([load_run(_write(tmp_path / "g.jsonl", [game])), load_run(_write(tmp_path / "i.jsonl", [img]))])
    assert "Negotiation games" in page and "&lt;b&gt;book&lt;/b&gt;" in page and "<b>book</b>" not in page
    assert "Image attacks" in page and 'src="data:image/png;base64,AAAA"' in page and "javascript:" not in page
