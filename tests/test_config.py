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
        ({"index": {"kind": "flat"}}, r"index\.kind was replaced by index\.factory"),
        ({"index": {"factory": "IVFx,Flat"}}, r"index\.factory: FAISS rejects .*could not parse index string IVFx,Flat"),
        ({"index": {"factory": "IVF64,PQ7"}}, r"index\.factory: FAISS rejects the factory string 'IVF64,PQ7' at dim 384: .*multiple of the number of subquantizers"),
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


def test_unknown_top_level_key_is_rejected_with_the_nearest_name(tmp_path: Path) -> None:
    """Issue 11 defect 11: unknown top-level params keys were ignored (`lod:` for `load:`)."""
    path = tmp_path / "params.yaml"
    path.write_text("lod:\n  workers: 2\n")
    with pytest.raises(ConfigError, match=r"params.yaml: unknown key `lod` \(did you mean `load`\?\); allowed: .*load"):
        load_params(path)


@pytest.mark.parametrize("section", sorted(Params.model_fields))
def test_unknown_keys_in_every_section_name_the_nearest_valid_key(section: str) -> None:
    """The valid keys come from the models (no hand list): every section rejects a misspelt key."""
    model = Params.model_fields[section].annotation
    keys = sorted(model.model_fields)
    typo = keys[0][:-1] + ("x" if keys[0][-1] != "x" else "y")
    data = Params().to_dict()
    data[section][typo] = 1
    expected = f"did you mean `{keys[0]}`" if section != "chunk" else "max_tokens|allowed"
    with pytest.raises(ConfigError, match=rf"`{section}.{typo}`.*({expected})|{typo}.*({expected})"):
        Params.from_dict(data, source="params.yaml")


@pytest.mark.parametrize(
    ("chunk", "message"),
    [({"max_tokens": -5}, r"chunk\.max_tokens: Input should be greater than or equal to 1 \(got -5\)"),
     ({"max_tokens": 0}, r"chunk\.max_tokens"),
     ({"overlap_tokens": -1}, r"chunk\.overlap_tokens"),
     ({"max_tokens": 100, "overlap_tokens": 100}, r"overlap_tokens \(100\) must be smaller than max_tokens \(100\)")],
)
def test_numeric_chunk_constraints_fail_when_params_load(chunk: dict, message: str) -> None:
    """Issue 11 defect 11: `max_tokens: -5` passed validation and failed only at the chunk stage."""
    data = Params().to_dict()
    data["chunk"].update(chunk)
    with pytest.raises(ConfigError, match=message):
        Params.from_dict(data, source="params.yaml")


@pytest.mark.parametrize("name", ["", "../elsewhere", "a/b", "x" * 101, "a..b"])
def test_index_name_goes_through_the_reference_parser(name: str) -> None:
    data = Params().to_dict()
    data["index"]["name"] = name
    with pytest.raises(ConfigError, match=r"index\.name: .*index name"):
        Params.from_dict(data, source="params.yaml")


def test_verify_and_prefect_params() -> None:
    p = load_params(REPO / "params.yaml")
    assert p.index.verify == "sha256" and p.prefect.startup_timeout_s == 120 and p.prefect.api_retries == 2
    data = Params().to_dict()
    data["index"]["verify"] = "md5"
    with pytest.raises(ConfigError, match=r"index\.verify: Input should be 'sha256' or 'size'"):
        Params.from_dict(data)
    data["index"]["verify"] = "size"
    data["prefect"]["startup_timeout_s"] = 0
    with pytest.raises(ConfigError, match=r"prefect\.startup_timeout_s"):
        Params.from_dict(data)
