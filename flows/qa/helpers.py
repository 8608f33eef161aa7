"""Python node of the qa flow: the distinct sources an answer cites."""

from __future__ import annotations


def list_sources(citations: list[dict]) -> list[dict]:
    """Distinct cited sources in citation order, each with its cited pages.

    Args:
        citations: the llm node's citations (dicts with ``source`` and ``page``).

    Returns:
        ``[{"source": str, "pages": [int, ...]}]``.
    """
    out: dict[str, list[int]] = {}
    for c in citations:
        pages = out.setdefault(c["source"], [])
        if c.get("page") is not None and c["page"] not in pages:
            pages.append(c["page"])
    return [{"source": s, "pages": sorted(p)} for s, p in out.items()]
