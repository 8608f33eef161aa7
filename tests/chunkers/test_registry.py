"""The strategy registry and config validation: bad values raise ConfigError naming the key."""

from __future__ import annotations

import dataclasses

import pytest

from ragline.chunkers.base import Chunker, ConfigError
from ragline.chunkers.registry import STRATEGIES, config_keys, get_chunker
from ragline.chunkers.token import TokenChunker, TokenChunkerConfig
from tests.chunkers.strategies import fake_embed

ALL = ["token", "recursive", "sentence", "structure", "semantic"]


def _build(strategy: str, **config: object) -> Chunker:
    return get_chunker(strategy, embed_fn=fake_embed, **config)


def test_every_strategy_is_registered_under_its_name() -> None:
    assert sorted(STRATEGIES) == sorted(ALL)
    for name in ALL:
        chunker = _build(name)
        assert isinstance(chunker, Chunker)
        assert chunker.name == name


@pytest.mark.parametrize("strategy", ALL)
def test_config_round_trips_through_a_dict(strategy: str) -> None:
    chunker = _build(strategy, max_tokens=100)
    values = dataclasses.asdict(chunker.config)  # type: ignore[attr-defined]
    assert sorted(values) == sorted(config_keys(strategy))
    again = _build(strategy, **values)
    assert again.config == chunker.config  # type: ignore[attr-defined]
    assert again.fingerprint == chunker.fingerprint
    assert _build(strategy, max_tokens=101).fingerprint != chunker.fingerprint


def test_unknown_strategy_names_the_allowed_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown chunk.strategy 'fixed'.*recursive.*semantic"):
        get_chunker("fixed")


@pytest.mark.parametrize("strategy", ALL)
def test_unknown_key_is_named(strategy: str) -> None:
    with pytest.raises(ConfigError, match=r"unknown key\(s\) chunk_size .*allowed: max_tokens"):
        _build(strategy, chunk_size=100)


NEGATIVE = [
    ("token", "max_tokens"), ("token", "overlap_tokens"),
    ("recursive", "max_tokens"), ("recursive", "overlap_tokens"),
    ("sentence", "max_tokens"), ("sentence", "overlap_sentences"),
    ("structure", "max_tokens"), ("structure", "min_tokens"),
    ("semantic", "max_tokens"), ("semantic", "buffer_size"),
]


@pytest.mark.parametrize("strategy, key", NEGATIVE)
def test_negative_sizes_are_rejected(strategy: str, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"chunk\.{key} must be .*got -1"):
        _build(strategy, **{key: -1})


@pytest.mark.parametrize("strategy", ALL)
@pytest.mark.parametrize("value", [0, 2.5, "256", True, None])
def test_max_tokens_must_be_a_positive_int(strategy: str, value: object) -> None:
    with pytest.raises(ConfigError, match=r"chunk\.max_tokens must be a positive integer"):
        _build(strategy, max_tokens=value)


@pytest.mark.parametrize("strategy", ["token", "recursive"])
@pytest.mark.parametrize("overlap", [100, 101])
def test_overlap_must_be_smaller_than_max_tokens(strategy: str, overlap: int) -> None:
    message = r"chunk\.overlap_tokens \(\d+\) must be smaller than chunk\.max_tokens \(100\)"
    with pytest.raises(ConfigError, match=message):
        _build(strategy, max_tokens=100, overlap_tokens=overlap)


def test_min_tokens_must_not_exceed_max_tokens() -> None:
    with pytest.raises(ConfigError, match=r"chunk\.min_tokens \(300\) must not exceed chunk\.max_tokens \(256\)"):
        _build("structure", min_tokens=300)


@pytest.mark.parametrize(
    "levels, message",
    [
        (["paragraph", "chapter"], r"chunk\.levels: unknown value 'chapter'; allowed: paragraph, line, sentence, word"),
        (["word", "paragraph"], r"chunk\.levels must go from coarse to fine"),
        (["word", "word"], r"chunk\.levels lists a value twice"),
        ([], r"chunk\.levels must be a non-empty list"),
        ("word", r"chunk\.levels must be a non-empty list"),
    ],
)
def test_levels_are_an_enum_list(levels: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _build("recursive", levels=levels)


def test_levels_from_yaml_lists_become_tuples() -> None:
    chunker = _build("recursive", levels=["paragraph", "word"])
    assert chunker.config.levels == ("paragraph", "word")  # type: ignore[attr-defined]


@pytest.mark.parametrize("value", [-1, 100.5, "95", True])
def test_breakpoint_percentile_is_a_number_in_0_100(value: object) -> None:
    with pytest.raises(ConfigError, match=r"chunk\.breakpoint_percentile must be a number in \[0, 100\]"):
        _build("semantic", breakpoint_percentile=value)


@pytest.mark.parametrize("strategy", ALL)
def test_unknown_encoding_is_named(strategy: str) -> None:
    with pytest.raises(ConfigError, match=r"chunk\.encoding: tokenizer encoding 'nope' is not installed"):
        _build(strategy, encoding="nope")


def test_semantic_without_embedder_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="needs an embedder"):
        get_chunker("semantic")


def test_other_strategies_ignore_the_embedder() -> None:
    assert isinstance(get_chunker("token", embed_fn=fake_embed, max_tokens=10), TokenChunker)


def test_config_and_keywords_together_are_rejected() -> None:
    with pytest.raises(ConfigError, match="either a config or keyword values"):
        TokenChunker(TokenChunkerConfig(), max_tokens=10)
