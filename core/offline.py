"""The offline and no-telemetry environment every ragline process sets, in one place.

Hugging Face hub, transformers, unstructured, Prefect and DVC telemetry are switched off
through their documented environment variables; values the user already set win. (The
unstructured spaCy hook, which needs unstructured, lives in :mod:`pipelines.offline`.)
"""

from __future__ import annotations

import os

OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "1",
    "SCARF_NO_ANALYTICS": "true",
    "UNSTRUCTURED_DISABLE_NOTICE": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "TOKENIZERS_PARALLELISM": "false",
    "DVC_NO_ANALYTICS": "1",
}


def set_offline_env() -> None:
    """Set the offline/telemetry environment variables unless the user already set them."""
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)


__all__ = ["OFFLINE_ENV", "set_offline_env"]
