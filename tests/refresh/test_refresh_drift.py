"""A refresh computes drift against its parent; past `drift:` thresholds gated aliases stay."""

from __future__ import annotations

from pathlib import Path

import pytest

from ragline.core.errors import ConfigError
from ragline.indexers.registry import IndexRegistry
from ragline.pipelines.config import Params
from tests.conftest import write_params
from tests.refresh.conftest import params_here

SRC = Path("data/sample")


def refresh():
    from ragline.pipelines.flows import refresh_flow

    return refresh_flow(params=params_here().to_dict())


def test_drift_past_threshold_keeps_gated_alias(light_workspace: Path, prefect_harness) -> None:
    write_params(light_workspace, refresh={"promote_aliases": ["prod", "staging"]}, promote={"gate": "none"},
                 drift={"max_centroid_shift": 1e-9})
    s = refresh()
    assert s.version == "v0001" and s.drift is None  # no parent: no drift, aliases move
    assert [p["moved"] for p in s.promotions] == [True, True]
    (SRC / "drones.md").write_text("# Drones\n\n" + "Drones are male bees that mate with the queen. " * 40)
    s = refresh()
    assert s.version == "v0002" and s.drift["a"] == "v0001" and s.drift["embedding"]["centroid_shift"] > 0
    assert s.drift["alerts"] and "drift.max_centroid_shift" in s.drift["alerts"][0]
    prod, staging = s.promotions
    assert not prod["moved"] and "drift from v0001 past thresholds" in prod["reason"]
    assert staging["moved"]  # not a gated alias
    assert IndexRegistry("indexes").aliases("sample") == {"latest": "v0002", "prod": "v0001", "staging": "v0002"}
    assert s.to_dict()["drift"]["alerts"] == s.drift["alerts"]
    # thresholds met: the alias moves
    write_params(light_workspace, drift={"max_centroid_shift": 1.5, "max_ks": 1.0})
    (SRC / "drones.md").write_text("# Drones\n\nDrones are male bees.\n")
    s = refresh()
    assert s.drift["alerts"] == [] and s.promotions[0]["moved"] and s.promotions[0]["to"] == "v0003"


def test_drift_params_are_validated() -> None:
    with pytest.raises(ConfigError, match="max_ks"):
        Params.from_dict({"drift": {"max_ks": 2}})
    with pytest.raises(ConfigError, match="max_shift"):
        Params.from_dict({"drift": {"max_shift": 0.1}})


def test_drift_block_rules() -> None:
    from ragline.pipelines.flows import drift_block

    gating = Params.from_dict({"drift": {"max_ks": 0.1}, "promote": {"gated_aliases": ["prod"]}})
    alert = {"a": "v0001", "b": "v0002", "alerts": ["token-length KS 0.300 > drift.max_ks 0.1"]}
    assert "KS 0.300 > drift.max_ks 0.1" in drift_block(gating, alert, "prod")
    assert drift_block(gating, alert, "staging") is None  # not gated
    assert drift_block(gating, {**alert, "alerts": []}, "prod") is None
    broken = {"a": "v0001", "b": "v0002", "alerts": [], "error": "drift not computed: damaged"}
    assert drift_block(gating, broken, "prod") == "drift not computed: damaged"  # unknown drift keeps the alias
    assert drift_block(Params.from_dict({}), alert, "prod") is None  # no threshold set: drift only reported
    assert drift_block(gating, None, "prod") is None  # first version: no parent
