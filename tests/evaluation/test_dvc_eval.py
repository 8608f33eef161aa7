"""The DVC stage `eval` writes the metrics and plot files that `dvc exp show` / `dvc plots` read."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _dvc(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "DVC_NO_ANALYTICS": "1"}
    res = subprocess.run([str(BIN / "dvc"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    return res


@pytest.mark.skipif(not (BIN / "dvc").exists(), reason="dvc is not installed in this environment")
def test_dvc_repro_eval_writes_metrics_and_plots(tmp_path: Path, mini_dataset: Path) -> None:
    for name in ("chunkers", "pipelines", "indexers", "evaluation"):
        shutil.copytree(REPO / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    (tmp_path / "data" / "sample").mkdir(parents=True)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["embed"]["model"] = "hashing"
    params["chunk"].update(strategy="recursive", max_tokens=96, overlap_tokens=0)
    params["eval"].update(dataset=str(mini_dataset), limit_questions=12)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _dvc(tmp_path, "init", "--no-scm", "-q")
    _dvc(tmp_path, "repro", "eval")
    metrics = json.loads((tmp_path / "metrics" / "chunking.json").read_text())
    assert metrics["questions"] == 12 and metrics["k"] == 5 and 0 < metrics["recall"] <= 1
    points = json.loads((tmp_path / "metrics" / "chunking_recall_iou.json").read_text())
    assert points[0] == {"corpus": "all", "recall": metrics["recall"], "iou": metrics["iou"]}
    shown = json.loads(_dvc(tmp_path, "metrics", "show", "--json").stdout)
    assert json.dumps(shown).count('"recall"') >= 1
    lock = yaml.safe_load((tmp_path / "dvc.lock").read_text())
    assert lock["stages"]["eval"]["params"]["params.yaml"]["chunk"]["max_tokens"] == 96
    # unchanged params: nothing to do; a changed chunk size reruns the stage
    assert "didn't change" in _dvc(tmp_path, "repro", "eval").stdout
    params["chunk"]["max_tokens"] = 48
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _dvc(tmp_path, "repro", "eval")
    assert json.loads((tmp_path / "metrics" / "chunking.json").read_text())["mean_chunk_tokens"] <= 48
