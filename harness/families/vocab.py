"""What the families' tokenizer conversions share: the vocabulary file a checkpoint must ship,
a key for its conversion (its content), and reading a SentencePiece model as transformers would."""

from __future__ import annotations

import hashlib
from pathlib import Path

from harness.errors import ModelError


def find_vocab(path: Path, name: str, what: str) -> Path:
    """`path/name`, or a ModelError saying that `what` ("a Qwen-1 checkpoint") lacks it."""
    vocab = Path(path) / name
    if not vocab.is_file():
        raise ModelError(f"{path} is {what} without its tokenizer file {name}")
    return vocab


def vocab_key(vocab: Path) -> str:
    """16 hex digits of the vocabulary's sha256: a converted tokenizer is cached per content."""
    return hashlib.sha256(vocab.read_bytes()).hexdigest()[:16]


def read_sentencepiece(vocab: Path):
    """A SentencePiece model file as a `tokenizers.Tokenizer` (transformers' own conversion) and its
    piece → id map; a file that is not one is a ModelError."""
    from transformers.convert_slow_tokenizer import SpmConverter, import_protobuf

    proto = import_protobuf().ModelProto()
    try:
        proto.ParseFromString(vocab.read_bytes())
    except Exception as e:
        raise ModelError(f"{vocab} is not a SentencePiece model: {e}") from None
    pieces = {piece.piece: i for i, piece in enumerate(proto.pieces)}
    return SpmConverter.build_tokenizer_from_spm_proto(proto, pieces), pieces
