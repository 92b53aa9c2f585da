"""MuseV prompts: A1111-style weighted prompts, long prompts in 75-token chunks, and the original's negative prompt.

MuseV encodes prompts the way the diffusers community "long prompt weighting" pipeline does, and so do we:

- ``(text)`` multiplies the weight of ``text`` by 1.1, ``[text]`` divides it by 1.1, ``(text:1.8)`` multiplies it by
  1.8; brackets nest; ``\\(`` ``\\)`` ``\\[`` ``\\]`` ``\\\\`` are literal characters; unclosed brackets close at the end.
- Every weighted piece is tokenized on its own (no start/end tokens), up to 3 × 75 tokens in all (the rest is cut
  with a warning). Both prompts of the guidance pair are padded to the same number of 75-token chunks; each chunk is
  encoded as ``[start] + 75 tokens + [end]`` by the CLIP text encoder (last hidden state), and the chunks are
  concatenated (77, 154 or 231 embeddings).
- Each embedding is multiplied by its token's weight, then the whole prompt is rescaled so that its mean over all
  embeddings is what it was before weighting.

Why not ``compel``: it uses another syntax (``word+``, ``(word)1.3``), lowers weights by blending with a masked
prompt instead of scaling, and does not restore the mean, so its embeddings differ from the original's.

Textual inversion: the original's default negative prompt ("V2") starts with the embeddings ``badhandv4`` and
``ng_deepnegative_v1_75t``. Like the original, only the first vector of a multi-vector embedding is used (the prompt
is not expanded to the extra vectors). When the embedding files are not available, their names are removed from the
negative prompt and a warning says so.

>>> parse_prompt_attention("a (smiling:1.3) girl, [blurry]")
[('a ', 1.0), ('smiling', 1.3), (' girl, ', 1.0), ('blurry', 0.9090909090909091)]
>>> positive, negative = encode_weighted_prompt_pair(tokenizer, text_encoder, "(eye blinks:1.8), a girl",
...                                                  NEGATIVE_PROMPT_V2)   # doctest: +SKIP
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING

from helpers.errors import InputError

if TYPE_CHECKING:  # torch is imported where tensors are made: the task modules and their --help stay light
    import torch

logger = logging.getLogger(__name__)

ROUND_BRACKET_WEIGHT = 1.1
SQUARE_BRACKET_WEIGHT = 1 / 1.1
CHUNK_TOKENS = 75  # CLIP's 77 positions minus the start and end tokens
MAX_CHUNKS = 3

# The original's default negative prompt (its configuration calls it "V2"), used for the video and the first frame.
NEGATIVE_PROMPT_V2 = (
    "badhandv4, ng_deepnegative_v1_75t, (((multiple heads))), (((bad body))), (((two people))), ((extra arms)), "
    "((deformed body)), (((sexy))), paintings,(((two heads))), ((big head)),sketches, (worst quality:2), "
    "(low quality:2), (normal quality:2), lowres, ((monochrome)), ((grayscale)), skin spots, acnes, skin blemishes, "
    "age spot, glans, (((nsfw))), nipples, extra fingers, (extra legs), (long neck), mutated hands, (fused fingers), "
    "(too many fingers)"
)

# Textual-inversion embeddings the original loads (token -> file name in the MuseV repo's ``embedding/`` folder).
NEGATIVE_EMBEDDING_FILES = {
    "badhandv4": "badhandv4.pt",
    "ng_deepnegative_v1_75t": "ng_deepnegative_v1_75t.pt",
    "EasyNegativeV2": "EasyNegativeV2.safetensors",
    "bad_prompt_version2-neg": "bad_prompt_version2-neg.pt",
}

# One lexical unit of the A1111 syntax: an escape, a bracket, ":weight)", a run of plain text, or a lone colon.
_ATTENTION_TOKEN = re.compile(r"\\[()\[\]\\]|\\|[(\[]|:([+-]?[.\d]+)\)|[)\]]|[^\\()\[\]:]+|:")


def parse_prompt_attention(text: str) -> list[tuple[str, float]]:
    """Split ``text`` into ``(piece, weight)`` pairs following the A1111 bracket syntax.

    Adjacent pieces with equal weights are joined (they are tokenized together). Weights are products of the
    bracket multipliers in the order the brackets close, as in the original, so the floats agree exactly.

    >>> parse_prompt_attention("((house)) [on] a (hill:0.5)")
    [('house', 1.2100000000000002), (' ', 1.0), ('on', 0.9090909090909091), (' a ', 1.0), ('hill', 0.5)]
    >>> parse_prompt_attention(r"\\(literal\\)")
    [('(literal)', 1.0)]
    """
    pieces: list[list] = []  # [text, weight]; weights are multiplied in place when a bracket closes
    open_round: list[int] = []  # index into ``pieces`` where each open bracket started
    open_square: list[int] = []

    def scale_from(start: int, factor: float) -> None:
        for piece in pieces[start:]:
            piece[1] *= factor

    for match in _ATTENTION_TOKEN.finditer(text):
        token, weight = match.group(0), match.group(1)
        if token.startswith("\\"):
            pieces.append([token[1:], 1.0])  # escaped character (a lone backslash escapes nothing and vanishes)
        elif token == "(":
            open_round.append(len(pieces))
        elif token == "[":
            open_square.append(len(pieces))
        elif weight is not None and open_round:
            try:
                factor = float(weight)
            except ValueError:
                raise InputError(f"prompt weight {weight!r} is not a number: write it like (smiling:1.3)") from None
            scale_from(open_round.pop(), factor)
        elif token == ")" and open_round:
            scale_from(open_round.pop(), ROUND_BRACKET_WEIGHT)
        elif token == "]" and open_square:
            scale_from(open_square.pop(), SQUARE_BRACKET_WEIGHT)
        else:
            pieces.append([token, 1.0])  # plain text, or a closing bracket / ":w)" with nothing open
    for start in open_round:  # unclosed brackets close at the end: round ones first, then square ones
        scale_from(start, ROUND_BRACKET_WEIGHT)
    for start in open_square:
        scale_from(start, SQUARE_BRACKET_WEIGHT)

    merged: list[tuple[str, float]] = []
    for piece_text, piece_weight in pieces:
        if not piece_text:
            continue
        if merged and merged[-1][1] == piece_weight:
            merged[-1] = (merged[-1][0] + piece_text, piece_weight)
        else:
            merged.append((piece_text, piece_weight))
    return merged or [("", 1.0)]


def tokenize_weighted_prompt(tokenizer, text: str, max_tokens: int = CHUNK_TOKENS * MAX_CHUNKS):
    """Token ids and per-token weights of ``text`` (no start/end tokens), cut to ``max_tokens``.

    >>> ids, weights = tokenize_weighted_prompt(tokenizer, "a (red:1.5) car")   # doctest: +SKIP
    """
    ids: list[int] = []
    weights: list[float] = []
    for piece, weight in parse_prompt_attention(text):
        piece_ids = tokenizer(piece, add_special_tokens=False, truncation=False, verbose=False).input_ids
        ids += piece_ids
        weights += [weight] * len(piece_ids)
        if len(ids) > max_tokens:
            break
    if len(ids) > max_tokens:
        logger.warning("prompt is longer than %d tokens and was cut: %r", max_tokens, text[:80])
        ids, weights = ids[:max_tokens], weights[:max_tokens]
    return ids, weights


def _chunk_count(*token_counts: int, max_chunks: int = MAX_CHUNKS) -> int:
    longest = max(token_counts)
    return max(1, min(max_chunks, -(-longest // CHUNK_TOKENS)))


def _encode_chunks(tokenizer, text_encoder, ids: list[int], weights: list[float], n_chunks: int) -> torch.Tensor:
    """Encode ``ids`` as ``n_chunks`` CLIP windows and apply the mean-preserving weighting: (1, 77 * n_chunks, D)."""
    import torch

    with torch.no_grad():
        device = text_encoder.device
        bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
        padded = ids + [pad] * (CHUNK_TOKENS * n_chunks - len(ids))
        padded_weights = weights + [1.0] * (CHUNK_TOKENS * n_chunks - len(weights))
        embeddings, position_weights = [], []
        for chunk in range(n_chunks):
            span = slice(chunk * CHUNK_TOKENS, (chunk + 1) * CHUNK_TOKENS)
            chunk_ids = torch.tensor([[bos] + padded[span] + [eos]], device=device)
            embeddings.append(text_encoder(chunk_ids)[0])
            position_weights += [1.0] + padded_weights[span] + [1.0]  # start/end/pad positions keep weight 1
        embeds = torch.cat(embeddings, dim=1)
        weight = torch.tensor(position_weights, dtype=embeds.dtype, device=device)[None, :, None]
        mean_before = embeds.float().mean(dim=(-2, -1)).to(embeds.dtype)
        embeds = embeds * weight
        mean_after = embeds.float().mean(dim=(-2, -1)).to(embeds.dtype)
        ratio = mean_before / mean_after
        if not torch.isfinite(ratio).all():  # embeddings averaging to zero (never a trained CLIP): keep them unscaled
            logger.warning("prompt embeddings average to zero: the weights are applied without restoring the mean")
            return embeds
        return embeds * ratio[:, None, None]


def encode_weighted_prompt_pair(
    tokenizer, text_encoder, prompt: str, negative_prompt: str = "", *, max_chunks: int = MAX_CHUNKS
) -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings of ``prompt`` and ``negative_prompt``, both ``(1, 77 * n, D)`` with the same ``n`` chunks.

    The guidance batch is ``torch.cat([negative, positive])`` (unconditional first), as in the original.
    """
    if not isinstance(prompt, str) or not prompt.strip():
        raise InputError("the prompt is empty: describe the video, e.g. 'a girl smiling, (eye blinks:1.8)'")
    negative_prompt = negative_prompt or ""
    max_tokens = CHUNK_TOKENS * max_chunks
    ids, weights = tokenize_weighted_prompt(tokenizer, prompt, max_tokens)
    neg_ids, neg_weights = tokenize_weighted_prompt(tokenizer, negative_prompt, max_tokens)
    n_chunks = _chunk_count(len(ids), len(neg_ids), max_chunks=max_chunks)
    positive = _encode_chunks(tokenizer, text_encoder, ids, weights, n_chunks)
    negative = _encode_chunks(tokenizer, text_encoder, neg_ids, neg_weights, n_chunks)
    return positive, negative


# --------------------------------------------------------------------------------------------- textual inversion


def load_negative_embeddings(pipe, folder: str | Path | None, tokens=tuple(NEGATIVE_EMBEDDING_FILES)) -> list[str]:
    """Load the original's negative textual-inversion embeddings found in ``folder`` into ``pipe``'s tokenizer and
    text encoder (``pipe`` is a diffusers pipeline with ``load_textual_inversion``). Returns the tokens loaded;
    tokens already known to the tokenizer count as loaded. Missing or unreadable files are skipped with a warning.
    """
    loaded = []
    vocab = pipe.tokenizer.get_vocab()
    for token in tokens:
        if token in vocab:
            loaded.append(token)
            continue
        path = Path(folder) / NEGATIVE_EMBEDDING_FILES[token] if folder is not None else None
        if path is None or not path.is_file():
            continue
        try:
            pipe.load_textual_inversion(str(path), token=token)
        except Exception as exc:  # a damaged or foreign file must not stop a generation
            logger.warning("could not load the textual-inversion embedding %s (%s): %s", path.name, type(exc).__name__, exc)
            continue
        loaded.append(token)
    return loaded


def remove_unknown_embedding_tokens(prompt: str, tokenizer) -> tuple[str, list[str]]:
    """Remove the original's textual-inversion names the tokenizer does not know from ``prompt``.

    Returns the cleaned prompt and the removed names (empty when all embeddings are loaded).

    >>> remove_unknown_embedding_tokens("badhandv4, ng_deepnegative_v1_75t, (lowres)", tokenizer)  # doctest: +SKIP
    ('(lowres)', ['badhandv4', 'ng_deepnegative_v1_75t'])
    """
    vocab = tokenizer.get_vocab()
    removed = []
    for token in NEGATIVE_EMBEDDING_FILES:
        if token in vocab or token not in prompt:
            continue
        prompt = re.sub(rf"{re.escape(token)}\s*,?\s*", "", prompt)
        removed.append(token)
    if removed:
        logger.warning(
            "textual-inversion embeddings %s are not available: removed them from the negative prompt "
            "(put the files of the MuseV repo's embedding/ folder beside the model to use them)",
            ", ".join(removed),
        )
    return prompt.strip(), removed
