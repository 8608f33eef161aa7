"""Data-version rollback with git + DVC: find the commit that reproduces a version, rebuild, compare.

``dvc repro`` writes ``dvc.lock`` *after* the ``publish`` stage has run, so a manifest cannot
record the hash of the ``dvc.lock`` that describes it. ``ragline stage publish`` records
instead the md5 of each data file the stage read (:func:`dvc_stage_deps`), exactly as
``dvc.lock`` lists them under ``stages.publish.deps``. :func:`find_dvc_commit` then finds the
git commit whose ``dvc.lock`` lists the same hashes, and :func:`restore_commands` are the
documented way back::

    git checkout <commit> -- params.yaml dvc.lock <every *.dvc file>
    dvc checkout            # or `dvc pull` on a machine without the DVC cache
    dvc repro publish

after which :func:`compare_versions` checks the rebuilt version against the recorded one
(vector count, chunk ids, vectors within 1e-6, params hash).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import yaml

from ragline.indexers.manifest import Manifest
from ragline.indexers.registry import IndexRegistry
from ragline.pipelines.config import Params
from ragline.pipelines.errors import PipelineError

#: The dvc.yaml stage that publishes the index (``dvc repro publish`` runs it and its upstream stages).
PUBLISH_STAGE = "publish"
#: Tolerance of :func:`compare_versions` on vector components.
VECTOR_ATOL = 1e-6


class LineageError(PipelineError):
    """A version cannot be traced to a commit, or a git/dvc command failed (says which and what to do)."""


@dataclass(frozen=True)
class VersionComparison:
    """A rebuilt version compared with a recorded one.

    Attributes:
        name: index name.
        recorded, rebuilt: the versions compared.
        vectors: ``[recorded, rebuilt]`` vector counts.
        chunk_ids_equal: same chunk ids in the same order.
        max_abs_diff: largest absolute difference between corresponding vector components
            (``None`` when the shapes differ).
        params_hash_equal: same params hash.
    """

    name: str
    recorded: str
    rebuilt: str
    vectors: tuple[int, int]
    chunk_ids_equal: bool
    max_abs_diff: float | None
    params_hash_equal: bool

    @property
    def equal(self) -> bool:
        """Same count, same ids, vectors within :data:`VECTOR_ATOL`, same params hash."""
        return (self.vectors[0] == self.vectors[1] and self.chunk_ids_equal and self.params_hash_equal
                and self.max_abs_diff is not None and self.max_abs_diff <= VECTOR_ATOL)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (adds ``equal``)."""
        return {**asdict(self), "equal": self.equal}


def dvc_md5(path: str | Path) -> str:
    """md5 (hex) of a file's bytes: the ``md5`` DVC 3 records for a file in ``dvc.lock``."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def dvc_stage_deps(params: Params) -> dict[str, str]:
    """``{path: md5}`` of the data files the ``publish`` stage of ``dvc.yaml`` depends on
    (``paths.curated_documents``, ``paths.chunks``, ``paths.embeddings``, ``paths.quarantine``,
    ``paths.duplicates``, ``paths.curation``)."""
    paths = params.paths
    return {p: dvc_md5(p) for p in (paths.curated_documents, paths.chunks, paths.embeddings, paths.quarantine,
                                    paths.duplicates, paths.curation)}


def _git(args: Sequence[str], cwd: Path) -> str:
    r = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise LineageError(f"`git {' '.join(args)}` failed in {cwd}: {r.stderr.strip()}")
    return r.stdout


def lock_publish_deps(lock_text: str) -> dict[str, str]:
    """``{path: md5}`` of ``stages.publish.deps`` in a ``dvc.lock`` text (files with an md5 only)."""
    data = yaml.safe_load(lock_text) or {}
    deps = ((data.get("stages") or {}).get("publish") or {}).get("deps") or []
    return {d["path"]: d["md5"] for d in deps if isinstance(d, dict) and "md5" in d}


def find_dvc_commit(manifest: Manifest, repo: str | Path = ".") -> str | None:
    """The newest git commit whose ``dvc.lock`` records the publish-stage inputs of ``manifest``.

    Returns:
        The commit hash, or ``None`` when no commit matches.

    Raises:
        LineageError: the manifest has no ``dvc_stage_deps`` (not built by ``dvc repro``), or git fails.
    """
    want = manifest.dvc_stage_deps
    if not want:
        raise LineageError(
            f"{manifest.index_name}@{manifest.version} was not built by `dvc repro` (its manifest has no "
            f"dvc_stage_deps); rebuild it from git commit {manifest.git_commit or '(unknown)'} instead"
        )
    root = Path(repo)
    for commit in _git(["log", "--format=%H", "--", "dvc.lock"], root).split():
        text = _git(["show", f"{commit}:dvc.lock"], root)
        have = lock_publish_deps(text)
        if all(have.get(p) == md5 for p, md5 in want.items()):
            return commit
    return None


def restore_commands(commit: str, repo: str | Path = ".", force: bool = False, pull: bool = False) -> list[list[str]]:
    """The commands that bring back the data and params of ``commit`` and rebuild from them.

    ``git checkout <commit> -- params.yaml dvc.lock <*.dvc>``, ``dvc checkout`` (``dvc pull``
    with ``pull``: fetch from the DVC remote first), ``dvc repro publish`` (``--force``
    with ``force``: recompute the stages instead of reusing DVC's cache).
    """
    tracked = _git(["ls-tree", "-r", "--name-only", commit], Path(repo)).split("\n")
    dvc_files = sorted(p for p in tracked if p.endswith(".dvc"))
    return [["git", "checkout", commit, "--", "params.yaml", "dvc.lock", *dvc_files],
            ["dvc", "pull" if pull else "checkout"],
            ["dvc", "repro", *(["--force"] if force else []), PUBLISH_STAGE]]


def run_commands(commands: Sequence[Sequence[str]], repo: str | Path = ".", echo=None) -> None:
    """Run commands in ``repo`` with this interpreter's ``bin`` first on PATH (dvc stages call ``ragline``).

    Raises:
        LineageError: a command failed (names it and shows its stderr tail).
    """
    bindir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": bindir + os.pathsep + os.environ.get("PATH", "")}
    for cmd in commands:
        if echo:
            echo(" ".join(cmd))
        exe = cmd[0]
        if exe == "dvc" and (Path(bindir) / "dvc").exists():
            cmd = [str(Path(bindir) / "dvc"), *cmd[1:]]
        r = subprocess.run(list(cmd), cwd=repo, env=env, capture_output=True, text=True)
        if r.returncode != 0:
            tail = (r.stderr or r.stdout).strip().splitlines()[-5:]
            raise LineageError(f"`{' '.join(cmd)}` failed (exit {r.returncode}): " + " | ".join(tail))


def compare_versions(registry: IndexRegistry, name: str, recorded: str, rebuilt: str) -> VersionComparison:
    """Compare two versions' vectors, chunk ids and params hash.

    Raises:
        RegistryError, CorruptRegistryError: unknown or damaged version.
    """
    from ragline.indexers.retriever import PublishedIndex

    out = []
    for v in (recorded, rebuilt):
        # rows in chunk-id order: a version of several segments lists the same rows in another order
        pub = PublishedIndex.open(registry, f"{name}@{v}")
        ids = pub.chunks.column("chunk_id").to_pylist()
        order = sorted(range(len(ids)), key=ids.__getitem__)
        out.append((pub.manifest, pub.vectors()[order], [ids[i] for i in order]))
    (ma, va, ia), (mb, vb, ib) = out
    diff = float(np.max(np.abs(va - vb))) if va.shape == vb.shape and va.size else (0.0 if va.shape == vb.shape else None)
    return VersionComparison(name, recorded, rebuilt, (len(va), len(vb)), ia == ib, diff, ma.params_hash == mb.params_hash)
