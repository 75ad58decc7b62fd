"""Tiny, hub-free Hugging Face tokenizers and models for the HF victim tests.

Everything is built locally: sentencepiece / byte-level BPE models trained in seconds on a small built-in
English-German corpus, and randomly initialised seq2seq models from tiny configs.
"""

from __future__ import annotations

import json
from pathlib import Path

import sentencepiece as spm
import torch
from tokenizers import ByteLevelBPETokenizer
from transformers import (
    BartConfig,
    BartForConditionalGeneration,
    MarianConfig,
    MarianMTModel,
    MarianTokenizer,
    PreTrainedTokenizerBase,
    RobertaTokenizer,
    T5Config,
    T5ForConditionalGeneration,
    T5Tokenizer,
)

ENGLISH = [
    "the dog runs in the park",
    "a man is reading a book",
    "the woman drinks a cup of coffee",
    "two children are playing football",
    "the cat sleeps on the sofa",
    "a girl rides a red bicycle",
    "the old man walks with his dog",
    "people are sitting in a cafe",
    "a boy jumps into the water",
    "the sun is shining today",
    "my brother plays the guitar",
    "the house is very big",
    "a woman is cooking dinner",
    "the children laugh in the garden",
    "a dog catches a ball",
    "the man is wearing a blue shirt",
    "we are going to the city",
    "the train arrives at noon",
    "she writes a long letter",
    "the bird sings in the tree",
    "a young man drinks water",
    "the street is full of people",
    "he opens the door slowly",
    "the teacher reads a story",
    "a black dog swims in the lake",
]

GERMAN = [
    "der Hund rennt im Park",
    "ein Mann liest ein Buch",
    "die Frau trinkt eine Tasse Kaffee",
    "zwei Kinder spielen Fußball",
    "die Katze schläft auf dem Sofa",
    "ein Mädchen fährt ein rotes Fahrrad",
    "der alte Mann geht mit seinem Hund spazieren",
    "Leute sitzen in einem Café",
    "ein Junge springt ins Wasser",
    "die Sonne scheint heute",
    "mein Bruder spielt Gitarre",
    "das Haus ist sehr groß",
    "eine Frau kocht das Abendessen",
    "die Kinder lachen im Garten",
    "ein Hund fängt einen Ball",
    "der Mann trägt ein blaues Hemd",
    "wir gehen in die Stadt",
    "der Zug kommt am Mittag an",
    "sie schreibt einen langen Brief",
    "der Vogel singt im Baum",
    "ein junger Mann trinkt Wasser",
    "die Straße ist voller Menschen",
    "er öffnet langsam die Tür",
    "der Lehrer liest eine Geschichte vor",
    "ein schwarzer Hund schwimmt im See",
]

CORPUS = ENGLISH + GERMAN


def _train_spm(out_dir: Path, name: str, lines: list[str], vocab_size: int, **ids: int) -> Path:
    """Train a tiny unigram sentencepiece model; returns the ``.model`` path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    text = out_dir / f"{name}.txt"
    text.write_text("\n".join(lines) + "\n", encoding="utf-8")
    prefix = out_dir / name
    spm.SentencePieceTrainer.train(
        input=str(text), model_prefix=str(prefix), vocab_size=vocab_size, hard_vocab_limit=False,
        model_type="unigram", character_coverage=1.0, num_threads=1, minloglevel=2, **ids,
    )
    return prefix.with_suffix(".model")


def t5_tokenizer(work_dir: Path) -> T5Tokenizer:
    """A T5 tokenizer (pad 0, eos 1, unk 2, no BOS) over a sentencepiece model trained on :data:`CORPUS`."""
    model = _train_spm(work_dir, "t5spm", CORPUS, 250, pad_id=0, eos_id=1, unk_id=2, bos_id=-1)
    sp = spm.SentencePieceProcessor(model_file=str(model))
    vocab = [(sp.id_to_piece(i), sp.get_score(i)) for i in range(sp.get_piece_size())]
    return T5Tokenizer(vocab=vocab, extra_ids=0)


def marian_tokenizer(work_dir: Path) -> MarianTokenizer:
    """A Marian tokenizer: English source spm, German target spm, one shared ``vocab.json``.

    Like the OPUS-MT models: ``</s>`` is 0, ``<unk>`` 1, ``<pad>`` last.
    """
    src = _train_spm(work_dir, "source", ENGLISH, 150)
    tgt = _train_spm(work_dir, "target", GERMAN, 160)
    pieces: list[str] = ["</s>", "<unk>"]
    for path in (src, tgt):
        sp = spm.SentencePieceProcessor(model_file=str(path))
        for i in range(sp.get_piece_size()):
            p = sp.id_to_piece(i)
            if not (sp.is_control(i) or sp.is_unknown(i)) and p not in pieces:
                pieces.append(p)
    pieces.append("<pad>")
    vocab = work_dir / "vocab.json"
    vocab.write_text(json.dumps({p: i for i, p in enumerate(pieces)}, ensure_ascii=False), encoding="utf-8")
    return MarianTokenizer(str(src), str(tgt), str(vocab), source_lang="en", target_lang="de")


def bart_tokenizer(work_dir: Path) -> RobertaTokenizer:
    """A byte-level BPE tokenizer in the BART/RoBERTa layout (``<s>`` 0, ``<pad>`` 1, ``</s>`` 2, ``<unk>`` 3)."""
    work_dir.mkdir(parents=True, exist_ok=True)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(CORPUS, vocab_size=500, min_frequency=1,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    bpe.save_model(str(work_dir))
    return RobertaTokenizer(vocab=str(work_dir / "vocab.json"), merges=str(work_dir / "merges.txt"))


# ---- tiny models -------------------------------------------------------------------------------------------
D_MODEL = 16
SMALL = {"d_model": D_MODEL, "encoder_layers": 2, "decoder_layers": 2, "encoder_attention_heads": 2,
         "decoder_attention_heads": 2, "encoder_ffn_dim": 32, "decoder_ffn_dim": 32, "max_position_embeddings": 64}


def _spread(model: torch.nn.Module, std: float = 0.3) -> None:
    """Re-draw the weight matrices with a large std, so that a random model's output depends on its input.

    Position tables are left alone: Marian's sinusoids are recomputed, not saved, by ``from_pretrained``.
    """
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2 and "embed_positions" not in name:
                p.normal_(0.0, std)


def marian_model(tok: PreTrainedTokenizerBase, seed: int = 0) -> MarianMTModel:
    """A random 2-layer Marian model with ``scale_embedding=True`` (as the OPUS-MT models)."""
    torch.manual_seed(seed)
    cfg = MarianConfig(vocab_size=len(tok), scale_embedding=True, pad_token_id=tok.pad_token_id,
                       eos_token_id=tok.eos_token_id, decoder_start_token_id=tok.pad_token_id,
                       forced_eos_token_id=tok.eos_token_id, **SMALL)
    model = MarianMTModel(cfg)
    _spread(model)
    return model.eval()


def t5_model(tok: PreTrainedTokenizerBase, seed: int = 0, *, decoder_start: bool = True) -> T5ForConditionalGeneration:
    """A random 2-layer T5 model (no embedding scale, relative positions, tied output rescaling)."""
    torch.manual_seed(seed)
    extra = {"decoder_start_token_id": tok.pad_token_id} if decoder_start else {}
    cfg = T5Config(vocab_size=len(tok), d_model=D_MODEL, d_kv=8, d_ff=32, num_layers=2, num_decoder_layers=2,
                   num_heads=2, relative_attention_num_buckets=8, relative_attention_max_distance=16,
                   pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, **extra)
    model = T5ForConditionalGeneration(cfg)
    _spread(model)
    return model.eval()


def bart_model(tok: PreTrainedTokenizerBase, seed: int = 0) -> BartForConditionalGeneration:
    """A random 2-layer BART model with ``scale_embedding=True`` and a forced BOS (as ``bart-large``)."""
    torch.manual_seed(seed)
    cfg = BartConfig(vocab_size=len(tok), scale_embedding=True, pad_token_id=tok.pad_token_id,
                     bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                     decoder_start_token_id=tok.eos_token_id, forced_bos_token_id=tok.bos_token_id,
                     forced_eos_token_id=tok.eos_token_id, **SMALL)
    model = BartForConditionalGeneration(cfg)
    _spread(model)
    return model.eval()


FAMILIES = {"marian": (marian_tokenizer, marian_model), "t5": (t5_tokenizer, t5_model),
            "bart": (bart_tokenizer, bart_model)}
