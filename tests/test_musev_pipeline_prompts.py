"""MuseV prompts: A1111 weighting syntax, 75-token chunks, mean-preserving weights, textual-inversion negatives."""

from __future__ import annotations

import logging

import pytest
import torch

from helpers.errors import InputError
from helpers.pipelines.musev.prompts import (
    CHUNK_TOKENS,
    NEGATIVE_PROMPT_V2,
    encode_weighted_prompt_pair,
    load_negative_embeddings,
    parse_prompt_attention,
    remove_unknown_embedding_tokens,
    tokenize_weighted_prompt,
)
from helpers.testing import common


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return common.load_clip_tokenizer(common.write_clip_tokenizer(tmp_path_factory.mktemp("tok")))


@pytest.fixture(scope="module")
def text_encoder():
    return common.tiny_text_encoder(32, seed=3)


def _raw_chunk(tokenizer, text_encoder, ids):
    """Reference: one CLIP window [start] + ids + padding + [end], last hidden state."""
    pad = tokenizer.pad_token_id
    window = [tokenizer.bos_token_id] + ids + [pad] * (CHUNK_TOKENS - len(ids)) + [tokenizer.eos_token_id]
    with torch.no_grad():
        return text_encoder(torch.tensor([window]))[0]


# The A1111 parser's documented behaviour (the examples the original documents for its parser).
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("normal text", [("normal text", 1.0)]),
        ("an (important) word", [("an ", 1.0), ("important", 1.1), (" word", 1.0)]),
        ("(unbalanced", [("unbalanced", 1.1)]),
        (r"\(literal\]", [("(literal]", 1.0)]),
        ("(unnecessary)(parens)", [("unnecessaryparens", 1.1)]),
        (
            "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
            [("a ", 1.0), ("house", 1.5730000000000004), (" ", 1.1), ("on", 1.0), (" a ", 1.1), ("hill", 0.55),
             (", sun, ", 1.1), ("sky", 1.4641000000000006), (".", 1.1)],
        ),
        ("", [("", 1.0)]),
        ("x ]y) :2) z", [("x ]y) :2) z", 1.0)]),  # closers with nothing open are text
        ("[[blurry]]", [("blurry", (1 / 1.1) * (1 / 1.1))]),
        ("(eye blinks:1.8),(head wave:1.3)", [("eye blinks", 1.8), (",", 1.0), ("head wave", 1.3)]),
    ],
)
def test_parse_prompt_attention(text, expected):
    assert parse_prompt_attention(text) == expected


def test_bad_weight_is_an_input_error():
    with pytest.raises(InputError, match="not a number"):
        parse_prompt_attention("(smile:1.2.3)")


def test_tokens_carry_the_weight_of_their_piece(tokenizer):
    ids, weights = tokenize_weighted_prompt(tokenizer, "low (newer:1.5) [wider]")
    pieces = [tokenizer("low ", add_special_tokens=False).input_ids,
              tokenizer("newer", add_special_tokens=False).input_ids,
              tokenizer(" ", add_special_tokens=False).input_ids,
              tokenizer("wider", add_special_tokens=False).input_ids]
    assert ids == sum(pieces, [])
    assert weights == [1.0] * len(pieces[0]) + [1.5] * len(pieces[1]) + [1.0] * len(pieces[2]) + \
        [1 / 1.1] * len(pieces[3])


def test_unweighted_prompt_is_one_plain_clip_window(tokenizer, text_encoder):
    positive, negative = encode_weighted_prompt_pair(tokenizer, text_encoder, "lower newer", "")
    ids = tokenizer("lower newer", add_special_tokens=False).input_ids
    assert positive.shape == negative.shape == (1, 77, 32)
    torch.testing.assert_close(positive, _raw_chunk(tokenizer, text_encoder, ids), rtol=0, atol=1e-6)
    torch.testing.assert_close(negative, _raw_chunk(tokenizer, text_encoder, []), rtol=0, atol=1e-6)


def test_weights_scale_tokens_and_the_mean_is_restored(tokenizer, text_encoder):
    positive, _ = encode_weighted_prompt_pair(tokenizer, text_encoder, "low (newer:1.8) [lower]", "")
    ids, weights = tokenize_weighted_prompt(tokenizer, "low (newer:1.8) [lower]")
    raw = _raw_chunk(tokenizer, text_encoder, ids)
    position_weights = torch.ones(77)
    position_weights[1 : 1 + len(ids)] = torch.tensor(weights)
    weighted = raw * position_weights[None, :, None]
    expected = weighted * (raw.mean() / weighted.mean())
    torch.testing.assert_close(positive, expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(positive.mean(), raw.mean(), rtol=1e-5, atol=1e-7)
    assert not torch.allclose(positive, raw)


def test_long_prompts_use_75_token_chunks_and_both_prompts_match(tokenizer, text_encoder):
    long_text = " ".join(["lower newer"] * 14)  # 98 tokens -> two chunks
    ids = tokenizer(long_text, add_special_tokens=False).input_ids
    assert CHUNK_TOKENS < len(ids) <= 2 * CHUNK_TOKENS
    positive, negative = encode_weighted_prompt_pair(tokenizer, text_encoder, "low", long_text)
    assert positive.shape == negative.shape == (1, 154, 32)
    torch.testing.assert_close(negative[:, :77], _raw_chunk(tokenizer, text_encoder, ids[:75]), rtol=0, atol=1e-6)
    torch.testing.assert_close(negative[:, 77:], _raw_chunk(tokenizer, text_encoder, ids[75:]), rtol=0, atol=1e-6)
    low = tokenizer("low", add_special_tokens=False).input_ids
    torch.testing.assert_close(positive[:, 77:], _raw_chunk(tokenizer, text_encoder, []), rtol=0, atol=1e-6)
    torch.testing.assert_close(positive[:, :77], _raw_chunk(tokenizer, text_encoder, low), rtol=0, atol=1e-6)


def test_prompts_longer_than_three_chunks_are_cut(tokenizer, text_encoder, caplog):
    very_long = " ".join(["lower newer"] * 40)
    with caplog.at_level(logging.WARNING):
        positive, _ = encode_weighted_prompt_pair(tokenizer, text_encoder, very_long, "")
    assert positive.shape == (1, 231, 32)
    assert "cut" in caplog.text


@pytest.mark.parametrize("prompt", ["", "   ", None])
def test_empty_prompt_is_an_input_error(tokenizer, text_encoder, prompt):
    with pytest.raises(InputError, match="prompt is empty"):
        encode_weighted_prompt_pair(tokenizer, text_encoder, prompt, "")


class _TextPipe:
    """The two things ``load_negative_embeddings`` needs from a pipeline, with diffusers' real loader."""

    def __init__(self, tokenizer, text_encoder):
        from helpers.pipelines.musev.pipeline import MuseVPipeline

        self.pipe = MuseVPipeline(vae=None, text_encoder=text_encoder, tokenizer=tokenizer, unet=None, scheduler=None)


def test_textual_inversion_negatives_use_only_their_first_vector(tmp_path, tokenizer, text_encoder):
    import copy

    tokenizer, text_encoder = copy.deepcopy(tokenizer), copy.deepcopy(text_encoder)
    vectors = torch.randn(3, 32, generator=torch.Generator().manual_seed(0))
    # A1111 layout of a multi-vector embedding file.
    torch.save({"string_to_param": {"*": vectors}, "name": "badhandv4"}, tmp_path / "badhandv4.pt")
    pipe = _TextPipe(tokenizer, text_encoder).pipe
    loaded = load_negative_embeddings(pipe, tmp_path)
    assert loaded == ["badhandv4"]  # the other files are absent: skipped
    token_id = tokenizer.convert_tokens_to_ids("badhandv4")
    torch.testing.assert_close(text_encoder.get_input_embeddings().weight[token_id], vectors[0])

    ids, _ = tokenize_weighted_prompt(tokenizer, NEGATIVE_PROMPT_V2)
    extra = {tokenizer.convert_tokens_to_ids(f"badhandv4_{i}") for i in (1, 2)}
    assert token_id in ids and not extra & set(ids)  # the prompt is not expanded to the other vectors
    cleaned, removed = remove_unknown_embedding_tokens(NEGATIVE_PROMPT_V2, tokenizer)
    assert removed == ["ng_deepnegative_v1_75t"] and cleaned.startswith("badhandv4, (((multiple heads")


def test_missing_embeddings_are_removed_from_the_negative_prompt(tokenizer, caplog):
    with caplog.at_level(logging.WARNING):
        cleaned, removed = remove_unknown_embedding_tokens(NEGATIVE_PROMPT_V2, tokenizer)
    assert removed == ["badhandv4", "ng_deepnegative_v1_75t"]
    assert cleaned.startswith("(((multiple heads))), (((bad body)))")
    assert "not available" in caplog.text
    assert remove_unknown_embedding_tokens("lowres, blurry", tokenizer) == ("lowres, blurry", [])


def test_unreadable_embedding_file_is_skipped(tmp_path, tokenizer, text_encoder, caplog):
    (tmp_path / "badhandv4.pt").write_bytes(b"not a checkpoint")
    pipe = _TextPipe(tokenizer, text_encoder).pipe
    with caplog.at_level(logging.WARNING):
        assert load_negative_embeddings(pipe, tmp_path) == []
    assert "could not load" in caplog.text
    assert load_negative_embeddings(pipe, None) == []
