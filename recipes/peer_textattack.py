"""Peer benchmark: TextAttack's black-box ``seq2sick`` recipe against an nlprobust victim.

    .venv-peers/bin/python recipes/peer_textattack.py --victim onmt:runs/multi30k_lstm_small/best.pt --scale small
    .venv-peers/bin/python recipes/peer_textattack.py --victim hf:runs/multi30k_marian_small --n 50 \\
        --out recipes/results/peer_textattack_marian.json

TextAttack does not fit the main venv: build its own with ``make peers`` (``.venv-peers``). The attack is
``textattack.attack_recipes.Seq2SickCheng2018BlackBox`` (TextAttack 0.3.11) assembled by hand from the same
four parts, because the stock recipe downloads its word embedding at run time:

* goal function: ``NonOverlappingOutput`` (query budget ``--query-budget``, unlimited by default);
* transformation: ``WordSwapEmbedding(max_candidates=50)``;
* constraints: ``RepeatModification()``, ``StopwordModification()``, ``LevenshteinEditDistance(30)``;
* search method: ``GreedyWordSwapWIR(wir_method="unk")``.

The sentences are the test_2016_flickr indices our own recipe attacked (key ``sentences`` of
``--results``, first ``--n``). One JSON line per sentence goes to
``runs/recipes/peer_textattack/<victim>_<settings hash>.jsonl`` as it finishes (re-running resumes), and
the summary to ``--out`` in the recipes' results format. Then our own attacks (``--ours``, default
``word-swap,seq2sick``) attack the same sentences in the same process, aiming at the ``at-least-as-long``
non-overlap criterion, so the rows compare success, size and time from one run on one machine.

Deviations from TextAttack's stock recipe (each also written into the results' ``notes``):

* Word embedding: the stock counter-fitted GloVe vectors are downloaded from TextAttack's S3 bucket at run
  time, which is impossible offline. By default the English source embedding table of our OpenNMT-py LSTM
  victim (``--embedding-checkpoint``) is used instead: alphabetic vocabulary words only (specials,
  punctuation, numbers, hyphenated and apostrophe words dropped), lowercased like the counter-fitted
  vocabulary (the row of the lowercase spelling, else of the most frequent spelling). Its neighbours are
  words the translation model treats alike, not synonyms. ``--embedding-file`` reads GloVe-format text
  vectors instead (e.g. the real counter-fitted ones).
* Nearest neighbours: TextAttack 0.3.11's ``WordEmbedding.nearest_neighbours`` without a precomputed
  ``nn_matrix`` fails (it slices the ``topk`` result tuple instead of its indices: AttributeError). We
  subclass ``WordEmbedding`` and compute what it intends: the ``k`` nearest rows by L2 distance, the word
  itself excluded, cached per word.
* Stop words: the stock ``StopwordModification()`` reads NLTK's ``stopwords`` corpus, a download. We pass
  NLTK's English list when that corpus is installed, else spaCy's English stop words (``--stopwords``).
  ``import textattack`` itself needs the NLTK corpus (its augmentation module builds a
  ``StopwordModification()`` at import time); when it is missing, spaCy's list is written as the NLTK
  ``stopwords/english`` corpus into a temporary NLTK data folder for this process.
* Ground truth: TextAttack's ``Attacker`` passes the dataset label (the reference translation) as
  ``ground_truth_output``; we call ``Attack.attack(source, original_output)`` with the victim's *own*
  beam-5 translation of the source, as our attack does.
* No truncation: TextAttack's ``T5ForTextToText`` caps outputs at 20 tokens, and its
  ``HuggingFaceModelWrapper`` leaves ``generate`` at the library default ``max_length`` of 20 unless told
  otherwise. Our wrapper calls the victim's own beam-5 decoding (outputs up to ``2 * source tokens + 10``),
  and inputs are not cut either (``GreedyWordSwapWIR(truncate_words_to=None)``, the default).
* Word-importance ranking replaces a word with TextAttack's default ``"[UNK]"``; a word-level victim
  tokenises it as ``[ UNK ]`` (unknown tokens), as it would under the stock recipe.
* Success is reported twice: TextAttack's (``NonOverlappingOutput``: TextAttack's own word split without
  punctuation, and the new output must be at least as long as the original) and ours
  (:func:`nlprobust.metrics.nonoverlap_success` on the victim's output words of the beam-5 translation of
  the adversarial *text*, as our attack judges).
* Queries: ``num_queries`` is TextAttack's count (every goal-function evaluation, cache hits included, the
  original input included); ``model_calls`` counts the sentences the victim actually decoded for the
  attack. The ground-truth translation and our re-judging are outside both.
"""

from __future__ import annotations

import argparse
import atexit
import functools
import hashlib
import json
import os
import random
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from nlprobust.core.data import DataNotFoundError  # noqa: E402
from nlprobust.core.results import write_recipe_results  # noqa: E402
from nlprobust.core.runio import JsonlLog, run_metadata  # noqa: E402
from nlprobust.corpora import load_multi30k  # noqa: E402
from nlprobust.metrics import changed_positions, changed_words, mark_changes, nonoverlap_success, sentence_bleu  # noqa: E402
from nlprobust.results import summarize  # noqa: E402
from nlprobust.text import tokenize  # noqa: E402
from nlprobust.victims import Seq2SeqVictim, VictimError, load_victim  # noqa: E402

METHOD = "textattack seq2sick (black-box)"
DEFAULT_N = {"tiny": 3, "small": 100, "paper": None}  # None: every sentence of --results
DEFAULT_EMBEDDING_CKPT = ROOT / "runs" / "multi30k_lstm_small" / "best.pt"
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


OURS_PRESET = {True: "multi30k-lstm", False: "multi30k-marian"}  # Seq2Sick preset by victim kind (word level?)
WORD_SWAP_PRESET = {True: "multi30k-lstm", False: "multi30k-marian"}  # word-swap settings by victim kind


def run_ours(victim: Seq2SeqVictim, items: Sequence[tuple[int, str]], attacks: Sequence[str], name: str,
             runs: Path, batch_size: int = 25) -> list[dict[str, Any]]:
    """Our attacks (non-overlap, ``at-least-as-long``) on the same sentences in the same process: one row per
    attack (Seq2Sick twice: without and with the reduction pass, one search)."""
    from common import attack_views

    from nlprobust.attacks import AttackItem, build_attack, preset, word_swap_preset

    rows = []
    for attack_name in attacks:
        cfg: Any = preset(OURS_PRESET[victim.word_level], "nonoverlap") if attack_name == "seq2sick" \
            else word_swap_preset(WORD_SWAP_PRESET[victim.word_level], "nonoverlap")
        log = JsonlLog(runs / "recipes" / "peer_textattack" / f"ours_{name}_{attack_name}_{cfg.tag()}.jsonl")
        attack = build_attack(attack_name, victim, cfg)
        todo = [AttackItem(i, s) for i, s in items if i not in log.done]
        for k in range(0, len(todo), batch_size):
            for r in attack.attack_batch(todo[k : k + batch_size]):
                log.append(r.to_dict())
            print(f"  ours {attack_name}: {len(log.done)}/{len(items)} sentences", flush=True)
        wanted = {i for i, _ in items}
        recs = [r for r in log.records if r["index"] in wanted]
        for label, _, view in attack_views(attack_name, cfg, recs):
            s = summarize(view)
            label = f"nlprobust {label} (white-box)"
            rows.append({"table": "peer", "dataset": "multi30k", "victim": name, "method": label, "n": s["n"],
                         "success": s["success"], "bleu": s["bleu"], "changed": s["changed"],
                         "success_nlprobust": s["success"], "bleu_nlprobust": s["bleu"],
                         "changed_nlprobust": s["changed"], "success_at_1": s["success_at_1"],
                         "success_positional": (s.get("success_by_criterion") or {}).get("positional"),
                         "queries": s["forward_passes"], "model_calls": s["beam_decodes"],
                         "seconds_per_sentence": s["time_s"], "errors": s["errors"],
                         "config": {"attack": attack_name, "preset": cfg.preset, "criterion": cfg.criterion}})
    return rows


# ---- command line ------------------------------------------------------------------------------------
def package_version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"


def victim_name(spec: str) -> str:
    """A file-name-safe name for a victim spec: the run folder of a checkpoint (``multi30k_lstm_small`` for
    ``onmt:runs/multi30k_lstm_small/best.pt``) or the model folder (``hf:runs/multi30k_marian_small``)."""
    kind, _, where = spec.partition(":")
    p = Path(where.rstrip("/"))
    name = p.parent.name if kind == "onmt" and p.parent.name else p.name
    return re.sub(r"[^\w.-]+", "_", name) or kind


def read_sentence_indices(path: str | os.PathLike[str], victim: str | None = None) -> list[int]:
    """Test-sentence indices of our results file: those attacked on ``victim`` (key ``victim.<name>.sentences``)
    when given, else the top-level ``sentences``."""
    p = Path(path)
    if not p.is_file():
        raise PeerSetupError(f"results file not found: {p} (run recipes/multi30k_seq2sick.py first, or pass --results)")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise PeerSetupError(f"{p} is not valid JSON ({exc})") from exc
    if victim is not None:
        entry = (data.get("victim") or {}).get(victim) if isinstance(data, dict) else None
        if not isinstance(entry, dict) or "sentences" not in entry:
            raise PeerSetupError(f"{p} has no sentence list for victim {victim!r} (key victim.{victim}.sentences)")
        idx = entry["sentences"]
    else:
        idx = data.get("sentences") if isinstance(data, dict) else None
    if not isinstance(idx, list) or not all(isinstance(i, int) for i in idx):
        raise PeerSetupError(f"{p} has no list of sentence indices under key 'sentences'")
    return idx


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--victim", default=f"onmt:{DEFAULT_EMBEDDING_CKPT}",
                    help="hf:MODEL_DIR or onmt:CHECKPOINT.pt (OpenNMT-py checkpoints are unpickled: pass only "
                         "checkpoints you trust, e.g. ones this project trained)")
    ap.add_argument("--results", default=str(ROOT / "recipes" / "results" / "multi30k_seq2sick.json"),
                    help="results JSON of our recipe; its 'sentences' are the test_2016_flickr indices attacked")
    ap.add_argument("--sentences-of", default=None, metavar="VICTIM",
                    help="take the sentences our recipe attacked on this victim (e.g. marian) instead of the "
                         "top-level list")
    ap.add_argument("--scale", choices=["tiny", "small", "paper"], default="small")
    ap.add_argument("--n", type=int, default=None, help="first n sentences of --results (tiny: 3, small: 100, "
                                                         "paper: all)")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--embedding", choices=["lstm", "file"], default=None,
                    help="lstm (default): source embedding table of --embedding-checkpoint; file: --embedding-file")
    ap.add_argument("--embedding-checkpoint", default=str(DEFAULT_EMBEDDING_CKPT))
    ap.add_argument("--embedding-file", default=None, help="GloVe-format text vectors (e.g. counter-fitted GloVe)")
    ap.add_argument("--embedding-max-words", type=int, default=None, help="read only the first N words of the file")
    ap.add_argument("--stopwords", choices=["auto", "nltk", "spacy"], default="auto",
                    help="auto: NLTK's English list when its corpus is installed (the stock recipe), else spaCy's")
    ap.add_argument("--query-budget", type=int, default=None, help="queries per sentence (default: unlimited)")
    ap.add_argument("--model-batch-size", type=int, default=32)
    ap.add_argument("--beam-size", type=int, default=5)
    ap.add_argument("--device", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--runs", default=str(ROOT / "runs"))
    ap.add_argument("--out", default=str(ROOT / "recipes" / "results" / "peer_textattack.json"))
    ap.add_argument("--ours", default="word-swap,seq2sick",
                    help="our attacks to run on the same sentences in the same process (comma-separated; '' for none)")
    args = ap.parse_args(argv)
    t0 = time.time()
    emb_kind = args.embedding or ("file" if args.embedding_file else "lstm")
    if emb_kind == "file" and not args.embedding_file:
        ap.error("--embedding file needs --embedding-file PATH")
    if emb_kind == "lstm" and args.embedding_file:
        ap.error("--embedding-file goes with --embedding file, not lstm")
    if args.query_budget is not None and args.query_budget < 1:
        ap.error("--query-budget must be a positive number of queries")
    try:
        indices = read_sentence_indices(args.results, args.sentences_of)
        n = args.n if args.n is not None else DEFAULT_N[args.scale]
        indices = indices[:n] if n is not None else indices
        data = load_multi30k("test_2016_flickr", args.data_dir)
        bad = [i for i in indices if not 0 <= i < len(data)]
        if bad:
            raise PeerSetupError(f"sentence indices {bad[:5]} are outside test_2016_flickr (0..{len(data) - 1})")
        textattack_api()  # fail early, before loading models, when TextAttack is missing
        kind = args.victim.partition(":")[0]
        victim = load_victim(args.victim, trust_checkpoint=kind == "onmt", device=args.device)
        if emb_kind == "lstm":
            same = kind == "onmt" and Path(args.victim.partition(":")[2]).resolve() == \
                Path(args.embedding_checkpoint).resolve()
            emb_victim = victim if same else load_victim(f"onmt:{args.embedding_checkpoint}", trust_checkpoint=True,
                                                         device="cpu")
            embedding = embedding_from_onmt(emb_victim)
            emb_desc = f"lstm:{os.path.relpath(args.embedding_checkpoint, ROOT)}"
        else:
            embedding = embedding_from_file(args.embedding_file, max_words=args.embedding_max_words)
            emb_desc = f"file:{Path(args.embedding_file).name}" + (f":{args.embedding_max_words}"
                                                                    if args.embedding_max_words else "")
        stopwords, sw_source = stopword_list(args.stopwords)
    except (PeerSetupError, DataNotFoundError, VictimError) as exc:
        raise SystemExit(f"error: {exc}") from exc
    cfg = PeerConfig(query_budget=args.query_budget, model_batch_size=args.model_batch_size,
                     beam_size=args.beam_size, stopwords=sw_source, embedding=emb_desc)
    name = victim_name(args.victim)
    log = JsonlLog(Path(args.runs) / "recipes" / "peer_textattack" / f"{name}_{cfg.tag()}.jsonl", key="index")
    print(f"victim {args.victim}: {len(indices)} sentences, embedding {emb_desc} ({len(embedding[1])} words), "
          f"{sw_source} stop words ({len(stopwords)}); per-sentence records in {log.path}", flush=True)
    items = [(i, data.src[i]) for i in indices]
    recs = run_peer(victim, items, embedding=embedding, stopwords=stopwords, cfg=cfg, log=log, seed=args.seed)
    row = summary_row(recs, name, cfg)
    rows = [row]
    ours = [a for a in args.ours.split(",") if a]
    if ours:
        rows += run_ours(victim, items, ours, name, Path(args.runs))
    ok = [r for r in recs if r.get("success")][:2]
    examples = [{"source": r["source"], "adversarial": mark_changes(r["adversarial_words"], r["changed_positions"],
                                                                    "**", "**"),
                 "original_output": r["original_output"], "adversarial_output": r["adversarial_output"]} for r in ok]
    meta = run_metadata()
    for dist in ("textattack", "flair"):
        meta["versions"][dist] = package_version(dist)
    payload = {
        "recipe": "peer_textattack",
        "title": f"Peer: TextAttack's black-box seq2sick recipe on Multi30k en-de ({victim_name(args.victim)}), "
                 f"{len(recs)} test sentences",
        "scale": args.scale, "seed": args.seed, "wall_time_s": round(time.time() - t0, 1), **meta,
        "victim": {name: {"spec": args.victim}}, "sentences": indices, "sentences_from": os.path.relpath(args.results),
        "records": os.path.relpath(log.path), "embedding": {"source": emb_desc, "words": len(embedding[1]),
                                                            "dim": int(embedding[0].shape[1])},
        "stopwords": {"source": sw_source, "n": len(stopwords)}, "rows": rows, "examples": examples,
        "notes": notes(cfg, textattack_version=meta["versions"]["textattack"]),
    }
    if len(rows) > 1:
        payload["notes"].append(
            "The 'nlprobust ...' rows are our white-box attacks on the same sentences, run after TextAttack in the "
            "same process on the same machine, aiming at the at-least-as-long non-overlap criterion "
            "(success_nlprobust; success_positional: the thesis's looser rule). For them, queries counts victim "
            "forward passes per sentence (one per candidate decoded under the surrogate loss) and model_calls "
            "counts beam-5 decodes (each judged candidate). word-swap ranks substitutions by first-order "
            "gradient scores and tests the best ones; seq2sick is the paper's attack (the victim's tuned preset), "
            "+ reduction the same search followed by reverting unneeded changes. TextAttack swaps whole words for "
            "embedding neighbours and decodes the real beam output after every candidate swap.")
    write_recipe_results(args.out, payload)
    print(f"success {row['success']} (TextAttack) / {row['success_nlprobust']} (nlprobust), BLEU {row['bleu']}, "
          f"changed {row['changed']}, queries {row['queries']}, {row['seconds_per_sentence']} s/sentence")
    print(f"wrote {args.out} in {time.time() - t0:.0f}s")
    return 0


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


if __name__ == "__main__":
    sys.exit(main())
