"""Every text attack x goal x victim kind on tiny trained victims, the judging rules, and the reduction pass.

The matrix is parametrised over the attack registry (``nlprobust.attacks.ATTACKS``), so a new attack cannot
go untested. Victims: the session's tiny OpenNMT-py LSTM (word level) and tiny Marian transformer (subwords),
both trained on the synthetic corpus, and that Marian after adversarial fine-tuning (``nlprobust.training.robust``).
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from nlprobust.attacks import ATTACKS, MODES, AttackItem, PortfolioConfig, Seq2Sick, build_attack, preset
from nlprobust.attacks.goals import Keywords, NonOverlap
from nlprobust.attacks.losses import nearest_word_distance, nonoverlap_loss
from nlprobust.metrics import nonoverlap_success
from nlprobust.synthetic import synthetic_corpus
from nlprobust.victims.base import GreedyOutputs
from nlprobust.victims.opennmt import OpenNMTVictim

pytestmark = pytest.mark.filterwarnings("ignore:Recommended. pip install sacremoses")

# settings that succeed within a few steps on the tiny victims (tests only; tuned presets live in seq2sick.py)
SEQ2SICK_TINY = {"lstm": dict(iterations=60, lr=2.0, lr_late=None, lambda1=0.1, lambda2=0.0, epsilon=1.0),
                 "marian": dict(iterations=60, lr=0.5, lr_late=None, lambda1=0.05, lambda2=0.0, epsilon=1.0)}


def _config(attack: str, mode: str, kind: str, **extra: object):  # noqa: ANN202
    if attack == "seq2sick":
        return preset("paper", mode, **SEQ2SICK_TINY[kind], **extra)  # type: ignore[arg-type]
    if attack == "portfolio":
        members = tuple((a, _config(a, mode, kind, **extra)) for a in ("word-swap", "seq2sick"))
        return PortfolioConfig(mode=mode, members=members, **extra)  # type: ignore[arg-type]
    return ATTACKS[attack][0].config_class(mode=mode, **extra)  # type: ignore[arg-type]


def _items(victim, mode: str, n: int = 6) -> list[AttackItem]:  # noqa: ANN001
    data = synthetic_corpus(n, 11)
    outs = [victim.target_words(o) for o in victim.translate_ids([victim.encode_source(s).ids for s in data.src])]
    if mode != "keywords":
        return [AttackItem(i, s) for i, s in enumerate(data.src)]
    items = []
    for i, (s, o) in enumerate(zip(data.src, outs)):
        kw = next(w for w in KEYWORDS if w not in o and _emits(victim, w))
        items.append(AttackItem(i, s, (kw,)))
    return items


KEYWORDS = ("Katze", "kleine", "alte", "junge", "große")  # single tokens of both tiny victims' vocabularies


def _emits(victim, word: str) -> bool:  # noqa: ANN001
    try:
        victim.keyword_id(word)
    except ValueError:
        return False
    return True


VICTIM_FIXTURES = {"lstm": "tiny_victim", "marian": "tiny_marian_victim",
                   "robust-marian": "tiny_robust_marian_victim"}  # the last: adversarially fine-tuned


@pytest.fixture(scope="module", params=sorted(VICTIM_FIXTURES))
def victim(request: pytest.FixtureRequest):  # noqa: ANN201
    return request.param, request.getfixturevalue(VICTIM_FIXTURES[request.param])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_attack_goal_victim_matrix(attack: str, mode: str, victim) -> None:  # noqa: ANN001
    name, v = victim
    kind = "lstm" if name == "lstm" else "marian"
    items = _items(v, mode)
    assert items
    res = build_attack(attack, v, _config(attack, mode, kind)).run(items, batch_size=len(items))
    assert [r.index for r in res] == [it.index for it in items]
    ok = [r for r in res if r.success]
    # the fine-tuned model is meant to resist (its rows check the records and the judging of what succeeds)
    need = 0 if name.startswith("robust") else max(1, len(items) // 3)
    assert len(ok) >= need, [(r.adversarial, r.adversarial_output) for r in res]
    goal = _config(attack, mode, kind).goal()
    for r in res:
        assert r.error is None, r.error
        assert r.attack == attack and r.mode == mode and r.criterion == goal.criterion
        assert r.member in (("word-swap", "seq2sick") if attack == "portfolio" else ("",))
        assert r.forward_passes >= 1 and r.beam_decodes >= 2
        assert r.changed == v.count_changed(v.encode_source(r.source).ids, v.encode_source(r.adversarial).ids) or \
            not v.word_level  # subword: counted on the attacked ids; the text may re-tokenise differently
    for r in ok:
        assert 1 <= r.changed <= r.changed_before_reduction
        # the reported output is the beam-5 output of the adversarial *text*, and it meets the goal again
        ids = v.translate_ids([v.encode_source(r.adversarial).ids], beam_size=5)[0]
        assert v.decode_target(ids) == r.adversarial_output
        state = goal.prepare(v, v.translate_ids([v.encode_source(r.source).ids], beam_size=5)[0], r.keywords)
        assert goal.success(v, state, ids)
        if mode == "nonoverlap":
            assert r.success_by_criterion == {"at-least-as-long": True, "positional": True}


def test_reduction_keeps_success_and_removes_changes(tiny_victim: OpenNMTVictim) -> None:
    items = _items(tiny_victim, "nonoverlap", 10)
    cfg = preset("paper", "nonoverlap", **SEQ2SICK_TINY["lstm"])
    plain = Seq2Sick(tiny_victim, preset("paper", "nonoverlap", **SEQ2SICK_TINY["lstm"], reduce=False)).run(items)
    reduced = Seq2Sick(tiny_victim, cfg).run(items)
    pairs = [(p, r) for p, r in zip(plain, reduced) if p.success]
    assert pairs
    for p, r in pairs:
        assert r.success and r.reduction and not p.reduction
        assert r.changed_before_reduction == p.changed  # the same search, then the reduction
        assert r.changed <= p.changed
    assert sum(r.changed for _, r in pairs) < sum(p.changed for p, _ in pairs)


@pytest.mark.parametrize("step", [{"repair": 16}, {"exchange": 32}], ids=["repair", "exchange"])
def test_reduction_steps_only_shrink_verified_successes(tiny_victim: OpenNMTVictim, step: dict) -> None:
    items = _items(tiny_victim, "keywords", 8)
    reverts = Seq2Sick(tiny_victim, preset("paper", "keywords", **SEQ2SICK_TINY["lstm"])).run(items)
    stepped = Seq2Sick(tiny_victim, preset("paper", "keywords", **SEQ2SICK_TINY["lstm"], **step)).run(items)
    assert any(r.success for r in stepped)
    goal = preset("paper", "keywords").goal()
    for a, b in zip(reverts, stepped):
        assert a.success == b.success and a.changed_before_reduction == b.changed_before_reduction
        assert b.changed <= a.changed  # the step runs after the reverts and keeps only fewer words
        if b.success:  # the smaller input still meets the goal when its text is fed back to the victim
            ids = tiny_victim.translate_ids([tiny_victim.encode_source(b.adversarial).ids], beam_size=5)[0]
            state = goal.prepare(tiny_victim, tiny_victim.translate_ids(
                [tiny_victim.encode_source(b.source).ids], beam_size=5)[0], b.keywords)
            assert goal.success(tiny_victim, state, ids)


def test_exchange_trades_two_changed_words_for_one_new_swap(tiny_victim: OpenNMTVictim) -> None:
    """A two-word success whose words both matter, and a one-word success elsewhere: no revert holds, the
    exchange (every swap tested) finds the one-word input."""
    from nlprobust.attacks import GradientWordSwap, WordSwapConfig

    items = _items(tiny_victim, "nonoverlap", 12)
    one_word = [r for r in GradientWordSwap(tiny_victim, WordSwapConfig(mode="nonoverlap")).run(items)
                if r.success and r.changed == 1]
    assert one_word
    attack = Seq2Sick(tiny_victim, preset("paper", "nonoverlap", exchange=10**6, exchange_pairs=1))
    found = False
    for res in one_word:
        (row,), _ = attack._prepare([items[res.index]])
        adv = tiny_victim.encode_source(res.adversarial).ids
        p = next(i for i, (a, b) in enumerate(zip(row.ids, adv)) if a != b)
        cands = attack._cand_ids.tolist()
        for q in (i for i, e in enumerate(row.editable) if e and i != p):
            two = list(row.ids)
            two[q] = next(c for c in cands if c != row.ids[q] and attack._sub_ok[cands.index(c)])
            for w in cands[:200]:  # a different word at p that still succeeds with the change at q
                if w in (row.ids[p], adv[p]) or not attack._sub_ok[cands.index(w)]:
                    continue
                two[p] = w
                ok = [attack.verify([(row, tuple(two))])[0][0], attack.verify([(row, tuple(
                    row.ids[:p] + [w] + row.ids[p + 1 :]))])[0][0]]
                if ok == [True, False]:
                    break
            else:
                continue
            if row.best_changed == 2 and not attack.verify([(row, tuple(
                    row.ids[:q] + [two[q]] + row.ids[q + 1 :]))])[0][0]:
                attack._exchange([row])
                assert row.best_changed == 1 and row.best is not None
                assert sum(a != b for a, b in zip(row.best, row.ids)) == 1
                found = True
                break
        if found:
            break
    assert found, "no two-word success without a one-word revert was constructed"


def test_exchange_never_puts_a_dropped_substitute_back(tiny_victim: OpenNMTVictim, monkeypatch) -> None:  # noqa: ANN001
    attack = Seq2Sick(tiny_victim, preset("paper", "nonoverlap", exchange=4))
    (row,), _ = attack._prepare(_items(tiny_victim, "nonoverlap", 1))
    p, q = [i for i, e in enumerate(row.editable) if e][:2]
    subs = [c for c in attack._cand_ids.tolist() if c not in (row.ids[p], row.ids[q])][:2]
    best = list(row.ids)
    best[p], best[q] = subs
    row.best, row.best_changed = tuple(best), 2
    seen: dict = {}

    def spy(base_rows, bases, positions, k, chunk=64, avoid=None):  # noqa: ANN001, ANN202
        seen.update(bases=bases, avoid=avoid)
        return [], [], []
    monkeypatch.setattr(attack, "_swap_trials", spy)
    assert attack._exchange([row]) == []
    assert seen["bases"] == [list(row.ids)] and sorted(seen["avoid"][0]) == sorted([(p, subs[0]), (q, subs[1])])


def test_trade_drops_three_words_and_grows_two_swaps(tiny_victim: OpenNMTVictim, monkeypatch) -> None:  # noqa: ANN001
    attack = Seq2Sick(tiny_victim, preset("paper", "nonoverlap", trade=3, trade_beam=2, trade_sets=2))
    (row,), _ = attack._prepare(_items(tiny_victim, "nonoverlap", 1))
    spots = [i for i, e in enumerate(row.editable) if e][:4]
    subs = [c for c in attack._cand_ids.tolist() if c not in [row.ids[p] for p in spots]][:4]
    best = list(row.ids)
    for p, c in zip(spots, subs):
        best[p] = c
    row.best, row.best_changed = tuple(best), 4
    calls: list = []
    real = attack._swap_trials

    def spy(base_rows, bases, positions, k, chunk=64, avoid=None):  # noqa: ANN001, ANN202
        calls.append((bases, positions, avoid))
        return real(base_rows, bases, positions, k, chunk=chunk, avoid=avoid)
    judged: dict = {}
    monkeypatch.setattr(attack, "_swap_trials", spy)
    monkeypatch.setattr(attack, "_judge_smaller", lambda rows, trials, groups: judged.update(trials=trials,
                                                                                             groups=groups))
    assert attack._trade([row]) == []
    (bases1, _, avoid1), (bases2, pos2, avoid2) = calls
    # two of the four triples dropped: each base keeps one substitute, and avoids putting the other three back
    assert len(bases1) == 2
    for b, av in zip(bases1, avoid1):
        kept = [p for p in spots if b[p] != row.ids[p]]
        assert len(kept) == 1 and sorted(av) == sorted((p, c) for p, c in zip(spots, subs) if p not in kept)
    assert len(bases2) == 4  # each base's two lowest-loss first swaps grow
    for b, ps in zip(bases2, pos2):
        first = [p for p, (x, y) in enumerate(zip(b, row.ids)) if x != y and p not in spots]
        assert len(first) <= 1 and not set(first) & set(ps)  # the second swap goes elsewhere
    # every judged input grew from the base of its group: one swap (first step) or two (second step) away
    assert len(judged["trials"]) == 2 * 3 + 4 * 3 and set(judged["groups"]) == {0, 1}
    for t, g in zip(judged["trials"], judged["groups"]):
        assert sum(x != y for x, y in zip(t, bases1[g])) in (1, 2)
    assert [sum(x != y for x, y in zip(t, bases1[g])) for t, g in zip(judged["trials"], judged["groups"])] == \
        [1] * 6 + [2] * 12
    assert attack._trade([]) == []
    with pytest.raises(ValueError, match="trade"):
        preset("paper", "nonoverlap", trade=-1)


def test_swap_lexicon_adds_the_keywords_translations_to_reduction_swaps(tiny_victim: OpenNMTVictim) -> None:
    from nlprobust.attacks.lexicon import keyword_lexicon

    lex = keyword_lexicon(tiny_victim)
    known = [w for w in lex if w.isalpha() and len(w) > 2 and _emits(tiny_victim, w)]
    s = synthetic_corpus(1, 17).src[0]
    out = tiny_victim.target_words(tiny_victim.translate_ids([tiny_victim.encode_source(s).ids])[0])
    kw = next(w for w in known if w not in out)
    item = AttackItem(0, s, (kw,))
    plain = Seq2Sick(tiny_victim, preset("paper", "keywords", lexicon_words=4))
    with_lex = Seq2Sick(tiny_victim, preset("paper", "keywords", lexicon_words=4, swap_lexicon=3))
    (row,), _ = with_lex._prepare([item])
    spots = [[p for p, e in enumerate(row.editable) if e]]
    _, base, _ = plain._swap_trials([row], [list(row.ids)], spots, 2)
    _, more, _ = with_lex._swap_trials([row], [list(row.ids)], spots, 2)
    assert more[:2] == base and 2 < len(more) <= 5
    words = set(lex[kw][:4])
    for t in more[2:]:  # the extra swaps bring in one of the keyword's first lexicon words
        (p,) = [i for i, (a, b) in enumerate(zip(t, row.ids)) if a != b]
        assert t[p] in words
    assert preset("paper", "keywords").tag() == preset("paper", "keywords", swap_lexicon=0).tag()
    nonoverlap = Seq2Sick(tiny_victim, preset("paper", "nonoverlap", swap_lexicon=3))  # keyword goals only
    (row2,), _ = nonoverlap._prepare([AttackItem(0, s)])
    assert len(nonoverlap._swap_trials([row2], [list(row2.ids)], spots, 2)[1]) == 2


def test_reduce_records_reduces_an_earlier_search_again(tiny_victim: OpenNMTVictim) -> None:
    items = _items(tiny_victim, "keywords", 8)
    cfg = preset("paper", "keywords", **SEQ2SICK_TINY["lstm"])
    searched = Seq2Sick(tiny_victim, replace(cfg, reduce=False)).run(items)
    reduced = Seq2Sick(tiny_victim, replace(cfg, repair=16)).run(items)
    assert any(r.success and r.changed > 1 for r in searched)
    broken = {"index": 99, "mode": "keywords", "source": "x", "error": "could not read"}
    for earlier in (searched, Seq2Sick(tiny_victim, cfg).run(items)):  # unreduced records, or reduced ones
        recs = [r.to_dict() for r in earlier][::-1] + [broken]  # any order; error records pass through
        again = Seq2Sick(tiny_victim, replace(cfg, repair=16)).reduce_records(recs)
        assert [r.index for r in again] == [r["index"] for r in recs] and again[-1].error == "could not read"
        again = sorted(again[:-1], key=lambda r: r.index)
        for s, r, a in zip(searched, reduced, again):
            assert a.success == r.success == s.success
            assert a.changed_before_reduction == s.changed and a.changed == r.changed
            assert a.iterations == s.iterations and a.forward_passes >= s.forward_passes
            if a.success:  # the search's own row keeps the search's cost; the re-judging counts as reduction
                assert (a.before_reduction["forward_passes"], a.before_reduction["backward_passes"],
                        a.before_reduction["beam_decodes"]) == (s.forward_passes, s.backward_passes, s.beam_decodes)
                assert a.beam_decodes > s.beam_decodes
                assert a.before_reduction["time_s"] == pytest.approx(
                    s.time_s if earlier is searched else earlier[a.index].before_reduction["time_s"])
                assert a.time_s >= a.before_reduction["time_s"]
    # a success whose text no longer fits its input (here: a word more) is searched again, not lost
    s0 = next(r for r in searched if r.success)
    odd = {**s0.to_dict(), "adversarial": s0.adversarial + " Katze", "forward_passes": 10**6}
    (a,) = Seq2Sick(tiny_victim, cfg).reduce_records([odd])
    assert a.success and a.forward_passes < 10**6 and a.iterations >= 1
    assert cfg.same_search(replace(cfg, trade=8, swap_lexicon=4, exchange=2, reduce=False))
    assert not cfg.same_search(replace(cfg, lr=cfg.lr * 2))
    with pytest.raises(ValueError, match="mode"):
        Seq2Sick(tiny_victim, preset("paper", "nonoverlap")).reduce_records([searched[0].to_dict()])


def test_reduce_records_judges_a_quality_drop_against_the_items_references(tiny_victim: OpenNMTVictim) -> None:
    data = synthetic_corpus(4, 11)
    items = [AttackItem(i, s, reference=t) for i, (s, t) in enumerate(zip(data.src, data.tgt))]
    cfg = preset("paper", "quality-drop", **SEQ2SICK_TINY["lstm"])
    first = Seq2Sick(tiny_victim, cfg).run(items)
    recs = [r.to_dict() for r in first]
    with pytest.raises(ValueError, match="references"):  # a record does not keep its reference
        Seq2Sick(tiny_victim, cfg).reduce_records(recs)
    with pytest.raises(ValueError, match="not among the items"):
        Seq2Sick(tiny_victim, cfg).reduce_records(recs, items[:2])
    with pytest.raises(ValueError, match="differ from the item"):
        Seq2Sick(tiny_victim, cfg).reduce_records(recs, [replace(it, text=it.text + " Hund") for it in items])
    again = Seq2Sick(tiny_victim, cfg).reduce_records(recs, items)
    assert [(a.index, a.success) for a in again] == [(r.index, r.success) for r in first]


def test_grouped_judging_spreads_beam_picks_over_groups(tiny_victim: OpenNMTVictim, monkeypatch) -> None:  # noqa: ANN001
    attack = Seq2Sick(tiny_victim, preset("paper", "nonoverlap"))
    (row,), _ = attack._prepare(_items(tiny_victim, "nonoverlap", 1))
    row.best_changed = 3
    # swap trials over chunks keep each trial's base number, and change only the allowed position
    spots = [[p] for p, e in enumerate(row.editable) if e][:3]
    t_rows, trials, groups = attack._swap_trials([row] * 3, [list(row.ids)] * 3, spots, k=2, chunk=2)
    assert groups == [0, 0, 1, 1, 2, 2] and all(r is row for r in t_rows)
    for t, g in zip(trials, groups):
        assert [p for p, (a, b) in enumerate(zip(t, row.ids)) if a != b] == spots[g]
    # a (position, token) to avoid is never proposed, and the next best swap takes its place
    (p0,), tok = spots[0], trials[0][spots[0][0]]
    _, again, _ = attack._swap_trials([row], [list(row.ids)], spots[:1], k=2, avoid=[[(p0, tok)]])
    assert again[0][p0] == trials[1][p0] and tok not in [t[p0] for t in again] and len(again) == 2
    # judging: each group's best greedy success (lowest loss) competes; the row's `picks` lowest are judged
    losses = [5.0, 1.0, 3.0, 2.0, 4.0, 0.5, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0]
    groups = [0] * 5 + [1] * 5 + [2] * 2
    trials = [[n] for n in range(12)]
    monkeypatch.setattr(attack, "loss_only",
                        lambda rows, ts, eps: ([[n] for n in range(len(ts))], torch.tensor(losses)))
    monkeypatch.setattr(attack, "greedy_success", lambda r, out: out[0] != 1)  # trial 1 fails the greedy filter
    monkeypatch.setattr(attack, "changed", lambda r, t: 2)
    judged: list = []
    monkeypatch.setattr(attack, "verify", lambda tv: judged.extend(tv) or [(False, [])] * len(tv))
    attack._judge_smaller([row] * 12, trials, groups, picks=2)
    assert [t for _, t in judged] == [(5,), (3,)]  # group 1's trial 5, group 0's trial 3; group 2's (10) is third
    judged.clear()
    # more picks than groups: every group's best (by loss), then every group's second best, and so on
    attack._judge_smaller([row] * 12, trials, groups, picks=5)
    assert [t for _, t in judged] == [(5,), (3,), (10,), (2,), (6,)]
    judged.clear()
    monkeypatch.setattr(attack, "changed", lambda r, t: 3)  # no fewer words than the success: nothing to judge
    attack._judge_smaller([row] * 12, trials, groups)
    assert judged == []


def test_config_tag_ignores_options_added_later_until_set() -> None:
    base = preset("paper", "keywords")
    assert base.tag() == preset("paper", "keywords", repair=0).tag()
    assert base.tag() != preset("paper", "keywords", repair=8).tag()
    assert base.tag() == preset("paper", "keywords", exchange=0, exchange_pairs=16).tag()
    assert base.tag() != preset("paper", "keywords", exchange=8).tag()
    # the tags of the committed tables' per-sentence logs (runs resume from them)
    assert preset("multi30k-lstm", "keywords", exchange=0, trade=0, swap_lexicon=0).tag() == "a653b178"  # no exchange
    assert preset("multi30k-lstm", "keywords", trade=0, swap_lexicon=0).tag() == "7488bf1b"  # before the trade
    assert preset("multi30k-lstm", "keywords").tag() == "3ab135ab"
    assert preset("multi30k-lstm", "keywords", lambda1_growth=1.0).tag() == "3ab135ab"
    assert preset("multi30k-lstm", "keywords", lambda1_growth=1.5).tag() != "3ab135ab"
    assert preset("multi30k-lstm", "nonoverlap").tag() == "a0851f72"
    with pytest.raises(ValueError, match="lambda1_growth"):
        preset("paper", "keywords", lambda1_growth=0.5)


def test_seq2sick_lambda1_growth_keeps_searching_for_sparser_successes(tiny_victim) -> None:  # noqa: ANN001
    items = [AttackItem(i, s) for i, s in enumerate(synthetic_corpus(6, 31).src)]
    plain = Seq2Sick(tiny_victim, preset("multi30k-lstm", "nonoverlap", iterations=60, reduce=False)).run(items)
    grown = Seq2Sick(tiny_victim, preset("multi30k-lstm", "nonoverlap", iterations=60, reduce=False,
                                         early_stop=False, max_pending=4, lambda1_growth=2.0)).run(items)
    for p, g in zip(plain, grown):
        assert g.success >= p.success  # never loses a success it found
        if p.success:
            assert g.changed <= p.changed  # and keeps the sparsest one
    assert sum(g.iterations for g in grown) >= sum(p.iterations for p in plain)


# ---- judging bugs, each with a test that fails on the old code ------------------------------------------
def test_nonoverlap_success_requires_an_output_at_least_as_long() -> None:
    orig = ["Ein", "Hund", "läuft", "."]
    assert not nonoverlap_success(orig, [])  # the old zip-based rule accepted an empty output
    assert not nonoverlap_success(orig, ["Eine", "Katze"])
    assert nonoverlap_success(orig, ["Eine", "Katze"], criterion="positional")
    assert nonoverlap_success(orig, ["Eine", "Katze", "schläft", "hier", "!"])
    with pytest.raises(ValueError, match="criterion"):
        nonoverlap_success(orig, orig, criterion="loose")


def test_at_least_as_long_loss_penalises_an_early_eos() -> None:
    eos = 3
    logits = torch.zeros(1, 2, 6)
    logits[0, 0, eos] = 5.0  # the adversarial output would end at once
    logits[0, 0, 1] = 1.0  # the original word is second
    original = torch.tensor([[1, 2]])
    valid = torch.tensor([[True, False]])
    positional = nonoverlap_loss(logits, original, valid, 0.0)
    strict = nonoverlap_loss(logits, original, valid, 0.0, eos_id=eos)
    assert positional.item() == 0.0  # the thesis's loss: truncation already "succeeds"
    assert strict.item() == pytest.approx(5.0)  # EOS is forbidden like the original word


def test_subword_loss_is_aggregated_per_word() -> None:
    # two tokens of one output word: changing one of them changes the word
    logits = torch.zeros(1, 2, 5)
    logits[0, 0, 1] = 2.0  # token 0 still the original (hinge +2)
    logits[0, 1, 4] = 3.0  # token 1 changed (hinge -3 clipped at -eps = 0)
    original = torch.tensor([[1, 2]])
    valid = torch.ones(1, 2, dtype=torch.bool)
    per_token = nonoverlap_loss(logits, original, valid, 0.0)
    per_word = nonoverlap_loss(logits, original, valid, 0.0, word_index=torch.tensor([[0, 0]]))
    assert per_token.item() == pytest.approx(2.0)
    assert per_word.item() == 0.0


def test_hf_keywords_are_judged_with_punctuation_split_off(tiny_marian_victim) -> None:  # noqa: ANN001
    v = tiny_marian_victim
    ids = list(v.tokenizer(text_target="Der Mann ist kleine.", add_special_tokens=False)["input_ids"])
    assert v.target_words(ids)[-2:] == ["kleine", "."]  # "kleine." was one word before
    goal = Keywords()
    with pytest.raises(Exception, match="already appear"):  # the old check missed the keyword before "."
        goal.prepare(v, ids, ["kleine"])
    state = goal.prepare(v, list(v.tokenizer(text_target="Ein Mann wartet.", add_special_tokens=False)["input_ids"]),
                         ["kleine"])
    assert goal.success(v, state, ids)
    index = v.target_word_index(ids)
    assert len(index) == len(ids) and index[-1] == len(v.target_words(ids)) - 1


def test_lowercased_victim_judges_keywords_in_its_casing(tiny_onmt_ckpt) -> None:  # noqa: ANN001
    v = OpenNMTVictim(tiny_onmt_ckpt, trust_checkpoint=True, device="cpu", lowercase=True)
    goal = Keywords()
    original = [v.tgt_stoi[w] for w in ["Ein", "Hund", "läuft", "."]]
    state = goal.prepare(v, original, ["Der"])  # the user's casing; the model emits "der"
    out = [v.tgt_stoi[w] for w in ["Ein", "Hund", "läuft", "in", "der", "Stadt", "."]]
    assert goal.success(v, state, out)  # the old check compared "Der" with "der"


def test_nearest_word_distance_has_finite_gradients_in_fp16() -> None:
    x = torch.randn(2, 3, 8).half()
    e = x.clone()
    x.requires_grad_(True)
    nearest_word_distance(x, e).sum().backward()
    assert torch.isfinite(x.grad).all()
    # the old formula underflows: 1e-12 is 0 in float16 and sqrt'(0) is infinite
    y = x.detach().clone().requires_grad_(True)
    ((y - e) ** 2).sum(-1).add(1e-12).sqrt().sum().backward()
    assert not torch.isfinite(y.grad).all()


def test_goal_and_criterion_validation() -> None:
    with pytest.raises(ValueError, match="criterion"):
        NonOverlap("loose")
    with pytest.raises(ValueError, match="mode"):
        preset("paper", "paraphrase")
    with pytest.raises(ValueError, match="unknown attack"):
        build_attack("hotflap", None)


def test_without_reduction_gives_the_search_result_and_drops_the_reduced_word_lists() -> None:
    from nlprobust.results import without_reduction

    rec = {"adversarial": "a cat runs", "adversarial_words": ["a", "cat", "runs"], "changed_positions": [1],
           "changed": 1, "reduction": True,
           "before_reduction": {"adversarial": "the cat sleeps", "changed": 3, "forward_passes": 9}}
    view = without_reduction(rec)
    assert view["adversarial"] == "the cat sleeps" and view["changed"] == 3 and view["reduction"] is False
    assert "adversarial_words" not in view and "changed_positions" not in view
    assert without_reduction({"adversarial": "x"}) == {"adversarial": "x"}


# ---- host transfers ------------------------------------------------------------------------------------------
def test_greedy_outputs_cut_at_the_first_end_and_read_once() -> None:
    toks = torch.tensor([[5, 6, 2, 7], [8, 9, 9, 9], [2, 3, 2, 4]])
    got = GreedyOutputs.from_tokens(toks, toks == 2)
    assert got.lengths.tolist() == [2, 4, 0]
    assert got.ids.tolist() == [[5, 6, -1, -1], [8, 9, 9, 9], [-1, -1, -1, -1]]
    assert got == [[5, 6], [8, 9, 9, 9], []] and len(got) == 3 and got[1] == [8, 9, 9, 9]
    assert GreedyOutputs.from_lists([[1], [], [3, 4]]) == [[1], [], [3, 4]]
    with pytest.raises(ValueError, match="ids"):
        GreedyOutputs(torch.zeros(3, dtype=torch.long), torch.zeros(3, dtype=torch.long))


@pytest.mark.parametrize("kind", ["lstm", "marian"])
def test_seq2sick_reads_iteration_outputs_only_at_its_checks(kind: str, request: pytest.FixtureRequest,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Inside a check window the iterations' greedy outputs, projected ids and losses stay on the device: the
    attack reads them in one batch per check (at most ``check_every`` iterations at once)."""
    victim = request.getfixturevalue("tiny_victim" if kind == "lstm" else "tiny_marian_victim")
    items = _items(victim, "nonoverlap", 4)
    cfg = preset("paper", "nonoverlap", **{**SEQ2SICK_TINY[kind], "iterations": 24}, reduce=False,  # type: ignore[arg-type]
                 early_stop=False, check_every=8)
    reads: list[int] = []
    collect = Seq2Sick._collect

    def counting(self, rows, window, book):  # noqa: ANN001, ANN202
        reads.append(len(window))
        return collect(self, rows, window, book)

    def refuse(self):  # noqa: ANN001, ANN202
        raise AssertionError("an iteration's greedy outputs were read on the host between checks")

    monkeypatch.setattr(Seq2Sick, "_collect", counting)
    monkeypatch.setattr(GreedyOutputs, "tolist", refuse)
    batched = Seq2Sick(victim, cfg).run(items)
    monkeypatch.undo()
    assert reads and all(n <= 8 for n in reads) and sum(reads) == max(r.iterations for r in batched)
    assert any(r.success for r in batched)


def test_word_swap_verify_by_loss_beam_judges_swaps_the_greedy_filter_rejects(tiny_victim, monkeypatch) -> None:  # noqa: ANN001
    from nlprobust.attacks import GradientWordSwap, WordSwapConfig

    items = _items(tiny_victim, "nonoverlap", 6)
    with pytest.raises(ValueError, match="verify_by"):
        WordSwapConfig(mode="nonoverlap", verify_by="beam")
    assert WordSwapConfig(mode="nonoverlap").tag() == WordSwapConfig(mode="nonoverlap", verify_by="greedy").tag()
    # no greedy output ever meets the goal: under the greedy rule only the template's final check of each
    # search's last input reaches beam search; the loss rule judges the best swaps of every step
    monkeypatch.setattr(GradientWordSwap, "greedy_success", lambda self, row, output: False)
    greedy = GradientWordSwap(tiny_victim, WordSwapConfig(mode="nonoverlap", max_changes=2)).run(items)
    assert all(r.beam_decodes == 2 for r in greedy)  # the clean input and the last input
    by_loss = GradientWordSwap(tiny_victim, WordSwapConfig(mode="nonoverlap", max_changes=2, verify_by="loss",
                                                           verify=4)).run(items)
    assert all(r.beam_decodes > 2 for r in by_loss)
    assert sum(r.success for r in by_loss) >= sum(r.success for r in greedy)
    assert any(r.success for r in by_loss)


def test_beam_candidates_follow_the_attacks_verify_rule() -> None:
    from types import SimpleNamespace

    from nlprobust.attacks import GradientWordSwap, WordSwapConfig
    from nlprobust.attacks.base import TextAttack

    losses, ok = [0.5, 0.1, 0.3, 0.2, 0.9], [True, False, True, False, False]
    assert TextAttack.beam_candidates(None, losses, ok) == [2, 0]  # type: ignore[arg-type]
    greedy = SimpleNamespace(config=WordSwapConfig(mode="nonoverlap", verify=3))
    assert GradientWordSwap.beam_candidates(greedy, losses, ok) == [2, 0]  # type: ignore[arg-type]
    by_loss = SimpleNamespace(config=WordSwapConfig(mode="nonoverlap", verify=3, verify_by="loss"))
    assert GradientWordSwap.beam_candidates(by_loss, losses, ok) == [2, 0, 1]  # type: ignore[arg-type]


def test_word_swap_repair_under_verify_by_loss_only_shrinks(tiny_victim: OpenNMTVictim) -> None:
    from nlprobust.attacks import GradientWordSwap, WordSwapConfig

    items = _items(tiny_victim, "nonoverlap", 8)
    cfg = WordSwapConfig(mode="nonoverlap", max_changes=3, candidates=4, verify_by="loss", verify=4)
    plain = GradientWordSwap(tiny_victim, cfg).run(items)
    repaired = GradientWordSwap(tiny_victim, replace(cfg, repair=8)).run(items)
    assert any(r.success for r in repaired)
    for a, b in zip(plain, repaired):
        assert a.success == b.success and a.changed_before_reduction == b.changed_before_reduction
        assert b.changed <= a.changed


@pytest.mark.parametrize("kind", ["lstm", "marian"])
def test_word_swap_lexicon_adds_swaps_to_the_keywords_translations(kind: str, request: pytest.FixtureRequest) -> None:
    from nlprobust.attacks import GradientWordSwap, WordSwapConfig
    from nlprobust.attacks.lexicon import keyword_lexicon

    victim = request.getfixturevalue("tiny_victim" if kind == "lstm" else "tiny_marian_victim")
    lex = keyword_lexicon(victim)
    assert keyword_lexicon(victim) is lex  # built once per victim
    candidates = set(victim.candidate_ids().tolist())
    for word, sources in list(lex.items())[:8]:  # each entry: a candidate whose one-word input gives that word
        for c in sources[:2]:
            assert c in candidates
            out = victim.translate_ids([victim.encode_source(victim.decode_source([c])).ids], beam_size=1)[0]
            assert word in victim.target_words(out)
    # keywords the lexicon knows: words the victim emits as one token, not in the sentence's output
    known = [w for w in lex if w.isalpha() and len(w) > 2 and _emits(victim, w)]
    data = synthetic_corpus(12, 11)
    items = []
    for i, s in enumerate(data.src):
        out = victim.target_words(victim.translate_ids([victim.encode_source(s).ids])[0])
        items.append(AttackItem(i, s, (next(w for w in known if w not in out),)))
    assert WordSwapConfig(mode="keywords").tag() == WordSwapConfig(mode="keywords", lexicon=0).tag()
    with pytest.raises(ValueError, match="lexicon"):
        WordSwapConfig(mode="keywords", lexicon=-1)
    # one gradient-ranked swap per step: what the lexicon adds decides
    base = WordSwapConfig(mode="keywords", candidates=1, max_changes=1, skip_stopwords=False)
    plain = GradientWordSwap(victim, base).run(items)
    with_lex = GradientWordSwap(victim, replace(base, lexicon=8)).run(items)
    assert all(a.forward_passes > b.forward_passes for a, b in zip(with_lex, plain))  # more swaps tested
    assert sum(r.success for r in with_lex) >= sum(r.success for r in plain)
    assert all(r.changed <= 1 for r in with_lex if r.success)
    if kind == "lstm":  # word-level victim: a keyword's one-word translation put in the input often suffices
        assert sum(r.success for r in with_lex) > sum(r.success for r in plain)


@pytest.mark.parametrize("kind", ["lstm", "marian"])
def test_reduction_lexicon_shortcut_only_shrinks_keyword_successes(kind: str, request: pytest.FixtureRequest) -> None:
    from nlprobust.attacks.lexicon import keyword_lexicon

    victim = request.getfixturevalue("tiny_victim" if kind == "lstm" else "tiny_marian_victim")
    lex = keyword_lexicon(victim)
    known = [w for w in lex if w.isalpha() and len(w) > 2 and _emits(victim, w)]
    items = []
    for i, s in enumerate(synthetic_corpus(12, 17).src):
        out = victim.target_words(victim.translate_ids([victim.encode_source(s).ids])[0])
        items.append(AttackItem(i, s, (next(w for w in known if w not in out),)))
    cfg = preset("paper", "keywords", **SEQ2SICK_TINY[kind])
    assert cfg.tag() == replace(cfg, reduce_lexicon=0, lexicon_words=16).tag()
    assert cfg.tag() != replace(cfg, reduce_lexicon=8).tag()
    with pytest.raises(ValueError, match="reduce_lexicon"):
        replace(cfg, reduce_lexicon=-1)
    reverts = Seq2Sick(victim, cfg).run(items)
    shortcut = Seq2Sick(victim, replace(cfg, reduce_lexicon=16)).run(items)
    goal = cfg.goal()
    for a, b in zip(reverts, shortcut):
        assert a.success == b.success and a.changed_before_reduction == b.changed_before_reduction
        assert b.changed <= a.changed
        if b.success:  # what the shortcut returns is judged like every success: beam output of the text
            ids = victim.translate_ids([victim.encode_source(b.adversarial).ids], beam_size=5)[0]
            state = goal.prepare(victim, victim.translate_ids([victim.encode_source(b.source).ids], beam_size=5)[0],
                                 b.keywords)
            assert goal.success(victim, state, ids)
    if kind == "lstm":  # a keyword's one-word translation put anywhere in the input often suffices here
        assert any(a.success and a.changed > 1 for a in reverts)  # something for the shortcut to shrink
        assert sum(b.changed for b in shortcut if b.success) < sum(a.changed for a in reverts if a.success)
