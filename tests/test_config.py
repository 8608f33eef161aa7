"""params.yaml validation and round trips."""

from __future__ import annotations

from pathlib import Path

import pytest

from ragline.chunkers.base import ConfigError
from ragline.pipelines.config import Params, load_params
from tests.conftest import REPO


def test_repo_params_load_and_round_trip() -> None:
    params = load_params(REPO / "params.yaml")
    assert Params.from_dict(params.to_dict()) == params
    # The shipped defaults: the best measured on chunking-eval (benchmarks/defaults_search.md).
    assert params.chunk.strategy_options() == {"max_tokens": 200, "overlap_tokens": 50}
    assert params.chunk.context is True
    assert params.index.bm25_spec().to_dict() == {"k1": 1.2, "b": 0.75, "method": "lucene", "stopwords": "en",
                                                  "stemmer": "english"}


def test_section_hash_changes_only_with_its_section() -> None:
    base = Params()
    data = base.to_dict()
    data["chunk"]["max_tokens"] = 300
    changed = Params.from_dict(data)
    assert changed.section_hash("load") == base.section_hash("load")
    assert changed.section_hash("chunk") != base.section_hash("chunk")


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"load": {"strategy": "magic"}}, r"load\.strategy"),
        ({"load": {"max_failed_fraction": 2}}, r"load\.max_failed_fraction"),
        ({"index": {"kind": "annoy"}}, r"index\.kind"),
        ({"index": {"bm25_b": 1.5}}, r"index\.bm25_b"),
        ({"embed": {"backend": "tensorflow"}}, r"embed\.backend"),
        ({"embed": {"batch": 3}}, r"embed\.batch"),
        ({"chunk": {"strategy": "paragraphs"}}, r"chunk\.strategy.*allowed: .*token"),
        ({"chunk": {"max_tokenz": 100}}, r"max_tokenz.*allowed"),
        ({"index": {"bm25_stemmer": "klingon"}}, r"index\.bm25_stemmer: Input should be 'english' or 'none'"),
    ],
)
def test_bad_values_name_the_key(patch: dict, message: str) -> None:
    data = Params().to_dict()
    for section, values in patch.items():
        data[section].update(values)
    with pytest.raises(ConfigError, match=message):
        Params.from_dict(data, source="params.yaml")


def test_overlap_not_below_max_is_rejected_when_building_the_chunker() -> None:
    from ragline.pipelines.chunk import make_chunker

    data = Params().to_dict()
    data["chunk"].update(max_tokens=100, overlap_tokens=100)
    with pytest.raises(ConfigError, match="overlap_tokens"):
        make_chunker(Params.from_dict(data).chunk)


def test_missing_and_malformed_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="params file not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("load: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_params(bad)
