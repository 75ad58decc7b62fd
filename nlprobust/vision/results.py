"""The section a results document (:class:`nlprobust.core.results.ResultsDocument`) adds for image classifiers."""

from __future__ import annotations

from typing import Any

__all__ = ["victim_lines"]


def victim_lines(data: dict[str, Any]) -> list[str]:
    """A results file's image classifiers (key ``victims``): test accuracy beside the thesis's, training size and
    time, and the accuracy on the test images whose original pixels are known."""
    out = []
    for name, v in (data.get("victims") or {}).items():
        if isinstance(v, dict) and "test_accuracy" in v:
            paper = f" (thesis: {100 * v['paper_accuracy']:.1f}%)" if v.get("paper_accuracy") else ""
            out.append(f"Victim `{name}`: test accuracy {100 * v['test_accuracy']:.2f}%{paper}, trained on "
                       f"{v.get('n_train')} images for {v.get('epochs')} epochs ({v.get('seconds_per_epoch')} s per "
                       "epoch).  ")
            if "accuracy_exact_pixels" in v:
                out.append("On the 761 test images whose original pixels are known: "
                           f"{100 * v['accuracy_exact_pixels']:.1f}% with the original pixels, "
                           f"{100 * v['accuracy_jpeg_same_images']:.1f}% with their JPEG copies.  ")
    return out
