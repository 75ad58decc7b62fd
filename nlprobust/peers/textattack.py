"""TextAttack's black-box ``seq2sick`` recipe (``textattack.attack_recipes.Seq2SickCheng2018BlackBox``,
TextAttack 0.3.11) against an nlprobust :class:`~nlprobust.victims.Seq2SeqVictim`, assembled by hand from the
stock recipe's four parts (goal function ``NonOverlappingOutput``, transformation ``WordSwapEmbedding``,
constraints ``RepeatModification`` / ``StopwordModification`` / ``LevenshteinEditDistance``, search
``GreedyWordSwapWIR``) so that it runs offline.

TextAttack does not fit the main venv: it is imported on first use (:func:`textattack_api`), from the venv
``make peers`` builds. :func:`run_peer` attacks sentences into a resumable JSON-lines log, :func:`summary_row`
gives their results row and :func:`notes` every difference from the stock recipe.

Deviations from TextAttack's stock recipe:

* Word embedding: a local table instead of the counter-fitted GloVe vectors the stock recipe downloads:
  :func:`embedding_from_onmt` (an OpenNMT-py victim's English source table, alphabetic words lowercased) or
  :func:`embedding_from_file` (GloVe-format text vectors).
* Nearest neighbours are computed on the fly by L2 distance, the word itself excluded (TextAttack 0.3.11's own
  path without ``nn_matrix`` raises AttributeError).
* Stop words: NLTK's English list when its corpus is installed, else spaCy's (:func:`stopword_list`); when the
  NLTK corpus is missing, spaCy's list stands in for it in a temporary NLTK data folder, because
  ``import textattack`` builds a ``StopwordModification()`` at import time.
* Ground truth: the victim's own beam-5 translation of the source, not the dataset's reference.
* Outputs are the victim's own beam decoding (no 20-token cap) and inputs are not truncated.
* Success is reported twice: TextAttack's and ours (:func:`nlprobust.metrics.nonoverlap_success` on the victim's
  output words of the beam-5 translation of the adversarial *text*).
"""

from __future__ import annotations

import argparse
import atexit
import functools
import hashlib
import json
import os
import random
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nlprobust.core.runio import JsonlLog
from nlprobust.metrics import changed_positions, changed_words, nonoverlap_success, sentence_bleu
from nlprobust.results import summarize
from nlprobust.text import tokenize
from nlprobust.victims import Seq2SeqVictim, VictimError

__all__ = ["METHOD", "PeerConfig", "PeerSetupError", "attack_one", "build_attack", "embedding_from_file",
           "embedding_from_onmt", "notes", "run_peer", "stopword_list", "summary_row", "textattack_api",
           "victim_words"]

METHOD = "textattack seq2sick (black-box)"
ONMT_SPECIALS = {"<unk>", "<blank>", "<s>", "</s>"}


class PeerSetupError(RuntimeError):
    """TextAttack is missing or a peer-attack input (embedding, sentences) is unusable."""


@dataclass(frozen=True, kw_only=True)
class PeerConfig:
    """Settings of one TextAttack seq2sick run; the first four are the stock recipe's values.

    Attributes:
        max_candidates: ``WordSwapEmbedding`` neighbours per word.
        max_edit_distance: ``LevenshteinEditDistance`` bound (characters, against the original text).
        wir_method: ``GreedyWordSwapWIR`` word-importance ranking.
        unk_token: the token that replaces a word when ranking importance (TextAttack's default).
        query_budget: ``NonOverlappingOutput`` query budget per sentence (None: unlimited, the default).
        model_batch_size: texts per victim call (the goal function's default).
        beam_size: beam of every victim translation (our attack judges with beam 5).
        stopwords: ``"nltk"`` or ``"spacy"``: the stop-word list actually used.
        embedding: description of the word embedding (kind and source).
    """

    max_candidates: int = 50
    max_edit_distance: int = 30
    wir_method: str = "unk"
    unk_token: str = "[UNK]"
    query_budget: int | None = None
    model_batch_size: int = 32
    beam_size: int = 5
    stopwords: str = "spacy"
    embedding: str = "lstm"

    def tag(self) -> str:
        """A short hash of every value: a resumed run never mixes settings."""
        return hashlib.sha1(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:8]


# ---- TextAttack, imported on first use ---------------------------------------------------------------
_NLTK_SHIM: list[str] = []  # NLTK data folders this process wrote (spaCy's list as the stopwords corpus)


def _nltk_has_stopwords() -> bool:
    """True when NLTK's own stopwords corpus is installed (our stand-in does not count)."""
    import nltk

    try:
        ptr = nltk.data.find("corpora/stopwords")
        found = str(getattr(ptr, "path", ptr))
    except LookupError:
        return False
    return not any(found.startswith(d) for d in _NLTK_SHIM)


@functools.cache
def textattack_api() -> Any:
    """Import TextAttack (offline-safe) and define the classes that subclass its bases.

    Returns a namespace with the ``textattack`` module, ``VictimModelWrapper`` and ``LocalWordEmbedding``.
    """
    try:
        import nltk
    except ImportError as exc:  # pragma: no cover - nltk is a dependency of nlprobust
        raise PeerSetupError(f"nltk is missing ({exc})") from exc
    if not _nltk_has_stopwords():
        # `import textattack` builds a StopwordModification() (NLTK's corpus) at import time
        from spacy.lang.en.stop_words import STOP_WORDS

        folder = tempfile.mkdtemp(prefix="nlprobust_nltk_")
        atexit.register(shutil.rmtree, folder, True)
        corpus = Path(folder) / "corpora" / "stopwords"
        corpus.mkdir(parents=True)
        (corpus / "english").write_text("".join(w + "\n" for w in sorted(STOP_WORDS)), encoding="utf-8")
        nltk.data.path.append(folder)
        _NLTK_SHIM.append(folder)
    try:
        import textattack
        from textattack.models.wrappers import ModelWrapper
        from textattack.shared import WordEmbedding
    except ImportError as exc:
        raise PeerSetupError(
            f"textattack cannot be imported ({exc}); build its venv with `make peers` and run this script "
            "with .venv-peers/bin/python"
        ) from exc

    class VictimModelWrapper(ModelWrapper):  # type: ignore[misc]
        """TextAttack's view of an nlprobust victim: a list of English texts in, beam-search German out.

        ``calls`` counts the sentences actually decoded (TextAttack's cache hits never get here). A text the
        victim cannot read (empty, too long) gets an empty output.
        """

        def __init__(self, victim: Seq2SeqVictim, *, beam_size: int = 5) -> None:
            self.victim = victim
            self.model = victim.model  # TextAttack's goal function looks at model.__class__
            self.beam_size = beam_size
            self.calls = 0

        def __call__(self, text_input_list: Sequence[str], **kwargs: Any) -> list[str]:
            texts = list(text_input_list)
            self.calls += len(texts)
            try:
                return self.victim.translate(texts, beam_size=self.beam_size)
            except VictimError:
                out = []
                for t in texts:
                    try:
                        out.extend(self.victim.translate([t], beam_size=self.beam_size))
                    except VictimError:
                        out.append("")
                return out

    class LocalWordEmbedding(WordEmbedding):  # type: ignore[misc]
        """``WordEmbedding`` built from a local matrix, with working on-the-fly nearest neighbours.

        TextAttack 0.3.11 computes neighbours without ``nn_matrix`` as ``dist.topk(k + 1)[1:].tolist()``,
        which slices the (values, indices) tuple and raises AttributeError; this computes what it means:
        the ``topn`` rows nearest in L2 distance, the word itself excluded.
        """

        def __init__(self, matrix: np.ndarray, words: list[str]) -> None:
            super().__init__(matrix, {w: i for i, w in enumerate(words)}, dict(enumerate(words)), nn_matrix=None)
            self._table = torch.from_numpy(matrix)

        def nearest_neighbours(self, index: int | str, topn: int) -> list[int]:
            row = int(self._word2index[index]) if isinstance(index, str) else index
            key = (row, topn)
            if key not in self._nn_cache:
                dist = torch.linalg.vector_norm(self._table - self._table[row], dim=1)
                dist[row] = float("inf")
                k = min(topn, self._table.shape[0] - 1)
                self._nn_cache[key] = dist.topk(k, largest=False).indices.tolist()
            return list(self._nn_cache[key])

    return argparse.Namespace(textattack=textattack, VictimModelWrapper=VictimModelWrapper,
                              LocalWordEmbedding=LocalWordEmbedding)


# ---- word embedding and stop words -------------------------------------------------------------------
def _alphabetic_lowercase(words: Sequence[str]) -> dict[str, int]:
    """Lowercase word -> row: alphabetic words only; the lowercase spelling's row wins, else the first one."""
    rows: dict[str, int] = {}
    for i, w in enumerate(words):
        if w in ONMT_SPECIALS or not w.isalpha():
            continue
        key = w.lower()
        if key not in rows or (w == key and words[rows[key]] != key):
            rows[key] = i
    return rows


def embedding_from_onmt(victim: Any) -> tuple[np.ndarray, list[str]]:
    """(matrix, words) from an OpenNMT-py victim's source embedding table and vocabulary."""
    itos = getattr(victim, "src_itos", None)
    if itos is None:
        raise PeerSetupError(f"{type(victim).__name__} has no word vocabulary (src_itos): not an OpenNMT-py victim")
    table = victim.source_embedding_table().detach().float().cpu().numpy()
    rows = _alphabetic_lowercase(itos)
    if not rows:
        raise PeerSetupError("the victim's source vocabulary holds no alphabetic word")
    words = sorted(rows, key=rows.__getitem__)
    return np.ascontiguousarray(table[[rows[w] for w in words]]), words


def embedding_from_file(path: str | os.PathLike[str], *, max_words: int | None = None) -> tuple[np.ndarray, list[str]]:
    """(matrix, words) from a GloVe-format text file (``word v1 ... vd`` per line; a word2vec ``N d`` header
    line is skipped), alphabetic words lowercased, the first occurrence of a word kept."""
    p = Path(path)
    if not p.is_file():
        raise PeerSetupError(f"embedding file not found: {p}")
    words: list[str] = []
    vecs: list[np.ndarray] = []
    seen: set[str] = set()
    dim = None
    with open(p, encoding="utf-8", errors="replace") as fh:
        for n, line in enumerate(fh, 1):
            parts = line.rstrip().split(" ")
            if n == 1 and len(parts) == 2 and all(x.isdigit() for x in parts):
                continue
            if len(parts) < 2:
                continue
            word, vals = parts[0], parts[1:]
            if dim is None:
                dim = len(vals)
            elif len(vals) != dim:
                raise PeerSetupError(f"{p}:{n}: {len(vals)} values, expected {dim} like the first vector")
            key = word.lower()
            if not word.isalpha() or key in seen:
                continue
            try:
                vecs.append(np.asarray(vals, dtype=np.float32))
            except ValueError as exc:
                raise PeerSetupError(f"{p}:{n}: not a GloVe-format vector line ({exc})") from exc
            words.append(key)
            seen.add(key)
            if max_words is not None and len(words) >= max_words:
                break
    if not words:
        raise PeerSetupError(f"{p}: no alphabetic word vectors found (expected GloVe text format)")
    return np.stack(vecs), words


def stopword_list(source: str) -> tuple[set[str], str]:
    """(stop words, source used) for ``source`` in ``auto`` (NLTK's list when installed, else spaCy's),
    ``nltk`` or ``spacy``."""
    if source not in ("auto", "nltk", "spacy"):
        raise ValueError(f"stopwords must be 'auto', 'nltk' or 'spacy', not {source!r}")
    if source in ("auto", "nltk") and _nltk_has_stopwords():
        import nltk

        return set(nltk.corpus.stopwords.words("english")), "nltk"
    if source == "nltk":
        raise PeerSetupError("NLTK's stopwords corpus is not installed (nltk.download('stopwords') needs a network)")
    from spacy.lang.en.stop_words import STOP_WORDS

    return set(STOP_WORDS), "spacy"


# ---- the attack --------------------------------------------------------------------------------------
def build_attack(victim: Seq2SeqVictim, embedding: tuple[np.ndarray, list[str]], stopwords: set[str],
                 cfg: PeerConfig) -> tuple[Any, Any]:
    """TextAttack's ``Seq2SickCheng2018BlackBox.build`` with a local embedding and stop-word list.

    Returns ``(attack, model_wrapper)``."""
    api = textattack_api()
    from textattack.constraints.overlap import LevenshteinEditDistance
    from textattack.constraints.pre_transformation import RepeatModification, StopwordModification
    from textattack.goal_functions import NonOverlappingOutput
    from textattack.search_methods import GreedyWordSwapWIR
    from textattack.transformations import WordSwapEmbedding

    wrapper = api.VictimModelWrapper(victim, beam_size=cfg.beam_size)
    budget = float("inf") if cfg.query_budget is None else cfg.query_budget
    goal_function = NonOverlappingOutput(wrapper, query_budget=budget, model_batch_size=cfg.model_batch_size)
    transformation = WordSwapEmbedding(max_candidates=cfg.max_candidates,
                                       embedding=api.LocalWordEmbedding(*embedding))
    constraints = [RepeatModification(), StopwordModification(stopwords=stopwords),
                   LevenshteinEditDistance(cfg.max_edit_distance)]
    search_method = GreedyWordSwapWIR(wir_method=cfg.wir_method, unk_token=cfg.unk_token)
    attack = api.textattack.Attack(goal_function, constraints, transformation, search_method)
    return attack, wrapper


def victim_words(victim: Seq2SeqVictim, text: str) -> list[str]:
    """The words changes and BLEU are counted on: tokens for word-level victims, whitespace words of the
    decoded text for subword victims (as our attack counts)."""
    if victim.word_level:
        return tokenize(text.lower() if getattr(victim, "lowercase", False) else text)
    return victim.decode_source(victim.encode_source(text).ids).split()


def attack_one(attack: Any, wrapper: Any, victim: Seq2SeqVictim, index: int, source: str, beam_size: int
               ) -> dict[str, Any]:
    """Attack one sentence; returns its JSONL record (with ``error`` when the sentence cannot be attacked)."""
    from textattack.attack_results import SkippedAttackResult, SuccessfulAttackResult

    t0 = time.perf_counter()
    try:
        [orig_ids] = victim.translate_ids([victim.encode_source(source).ids], beam_size=beam_size)
    except VictimError as exc:
        return {"index": index, "source": source, "error": str(exc)}
    if not victim.target_words(orig_ids):
        return {"index": index, "source": source, "original_output": "",
                "error": "the model's output for the original input is empty"}
    original_output = victim.decode_target(orig_ids)
    calls0 = wrapper.calls
    result = attack.attack(source, original_output)
    seconds = time.perf_counter() - t0
    adversarial = result.perturbed_result.attacked_text.text
    kind = type(result).__name__.replace("AttackResult", "").lower()
    # our own judgement: beam-5 output of the adversarial *text*, re-encoded, against the original output
    try:
        [adv_ids] = victim.translate_ids([victim.encode_source(adversarial).ids], beam_size=beam_size)
        changed = adversarial != source
        orig_w, adv_out_w = victim.target_words(orig_ids), victim.target_words(adv_ids)
        ours = changed and nonoverlap_success(orig_w, adv_out_w, criterion="at-least-as-long")
        positional = changed and nonoverlap_success(orig_w, adv_out_w, criterion="positional")
        adversarial_output = victim.decode_target(adv_ids)
    except VictimError:
        ours, positional, adversarial_output = False, False, ""
    src_w, adv_w = victim_words(victim, source), victim_words(victim, adversarial)
    ta_orig = result.original_result.attacked_text
    return {
        "index": index, "source": source, "adversarial": adversarial,
        "original_output": original_output, "adversarial_output": adversarial_output,
        "textattack_output": result.perturbed_result.output,
        "result": kind, "success": isinstance(result, SuccessfulAttackResult), "success_nlprobust": bool(ours),
        "success_positional": bool(positional),
        "source_words": src_w, "adversarial_words": adv_w, "changed_positions": changed_positions(src_w, adv_w),
        "changed": changed_words(src_w, adv_w), "bleu": sentence_bleu(src_w, adv_w),
        "changed_textattack": 0 if isinstance(result, SkippedAttackResult)
        else len(ta_orig.all_words_diff(result.perturbed_result.attacked_text)),
        "num_queries": int(result.perturbed_result.num_queries), "model_calls": wrapper.calls - calls0,
        "seconds": seconds,
    }


def run_peer(victim: Seq2SeqVictim, items: Sequence[tuple[int, str]], *, embedding: tuple[np.ndarray, list[str]],
             stopwords: set[str], cfg: PeerConfig, log: JsonlLog, seed: int = 0,
             progress: bool = True) -> list[dict[str, Any]]:
    """Attack every ``(index, source)`` not yet in ``log``; returns the records of ``items`` (old and new)."""
    from tqdm import tqdm

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    attack, wrapper = build_attack(victim, embedding, stopwords, cfg)
    todo = [(i, s) for i, s in items if i not in log.done]
    bar = tqdm(todo, desc=f"textattack seq2sick ({len(items) - len(todo)} done before)", unit="sent",
               disable=not progress)
    n_ok = 0
    for k, (i, s) in enumerate(bar, 1):
        rec = attack_one(attack, wrapper, victim, i, s, cfg.beam_size)
        log.append(rec)
        n_ok += bool(rec.get("success"))
        bar.set_postfix(success=f"{n_ok}/{k}", queries=rec.get("num_queries", "-"))
    wanted = {i for i, _ in items}
    return [r for r in log.records if r["index"] in wanted]


def summary_row(records: list[dict[str, Any]], name: str, cfg: PeerConfig) -> dict[str, Any]:
    """One results row: TextAttack's success and, beside it, the same attacks judged by nlprobust."""
    recs = [{**r, "time_s": r.get("seconds", 0.0)} for r in records]
    ta = summarize(recs)
    ours = summarize([{**r, "success": r.get("success_nlprobust")} for r in recs])
    ok = [r for r in recs if not r.get("error")]

    def mean(key: str) -> float | None:
        return sum(r[key] for r in ok) / len(ok) if ok else None

    n_ok = len(ok) or 1
    return {"table": "peer", "dataset": "multi30k", "victim": name, "method": METHOD, "n": ta["n"],
            "success": ta["success"], "bleu": ta["bleu"], "changed": ta["changed"],
            "success_nlprobust": ours["success"], "bleu_nlprobust": ours["bleu"],
            "changed_nlprobust": ours["changed"], "success_at_1": ours["success_at_1"],
            "success_positional": sum(1 for r in ok if r.get("success_positional")) / n_ok if ok else None,
            "queries": mean("num_queries"),
            "model_calls": mean("model_calls"), "seconds_per_sentence": ta["time_s"], "errors": ta["errors"],
            "config": asdict(cfg)}


def notes(cfg: PeerConfig, *, textattack_version: str) -> list[str]:
    """Every difference from TextAttack's stock Seq2SickCheng2018BlackBox, for the results file."""
    emb = ("the English source embedding table of our OpenNMT-py LSTM victim (" + cfg.embedding.partition(":")[2]
           + "): alphabetic words only, lowercased; its neighbours are words the translation model treats alike, "
           "not synonyms" if cfg.embedding.startswith("lstm:") else f"vectors read from {cfg.embedding}")
    sw = ("NLTK's English stop words (as stock)" if cfg.stopwords == "nltk"
          else "spaCy's English stop words (NLTK's stopwords corpus is a download; stock uses it)")
    budget = ("unlimited (as stock)" if cfg.query_budget is None
              else f"{cfg.query_budget} per sentence (stock: unlimited)")
    return [
        f"Recipe: TextAttack {textattack_version} Seq2SickCheng2018BlackBox assembled by hand from its parts: "
        f"NonOverlappingOutput, WordSwapEmbedding(max_candidates={cfg.max_candidates}), RepeatModification, "
        f"StopwordModification, LevenshteinEditDistance({cfg.max_edit_distance}), "
        f"GreedyWordSwapWIR(wir_method={cfg.wir_method!r}).",
        f"Word embedding: {emb}, instead of the counter-fitted GloVe vectors the stock recipe downloads.",
        "Nearest neighbours: computed on the fly by L2 distance, the word itself excluded (TextAttack 0.3.11's own "
        "on-the-fly path without nn_matrix raises AttributeError).",
        f"Stop words: {sw}.",
        f"Query budget: {budget}.",
        "Ground truth: the victim's own beam-5 translation of the original input (TextAttack's Attacker would pass "
        "the dataset's reference translation).",
        f"Victim outputs: the victim's own beam-{cfg.beam_size} decoding, up to 2 x source tokens + 10, no 20-token "
        "cap (TextAttack's T5ForTextToText and HuggingFaceModelWrapper default to 20 output tokens); inputs are not "
        "truncated.",
        "success: TextAttack's SuccessfulAttackResult (NonOverlappingOutput on TextAttack's punctuation-free words; "
        "the new output must be at least as long). success_nlprobust: nlprobust.metrics.nonoverlap_success on the "
        "victim's output words for the adversarial text, as our attack judges. bleu and changed average the "
        "successful attacks of each judgement (nlprobust.metrics.sentence_bleu / changed_words on the victim's "
        "words, as our recipe).",
        "queries: TextAttack's num_queries per sentence (every goal-function evaluation, cache hits and the "
        "original input included); model_calls: sentences the victim actually decoded. seconds_per_sentence "
        "includes the ground-truth translation.",
    ]

