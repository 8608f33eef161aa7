"""Imported once by the fork server that forks ragline's parsing workers (:mod:`pipelines.load`).

Every worker is forked from that server, so what is imported here is paid for once per
ingest process instead of once per (recycled) worker: the packaged spaCy model (without
torch, which its pipeline does not use) and the unstructured partitioners of the text, HTML,
Markdown, Office and e-mail formats. The PDF partitioner is not imported here: it imports
torch and OpenCV, which start threads, and a process with running native threads must not be
forked; workers import it when they meet their first PDF.
"""

import sys

from ragline.pipelines.offline import install_unstructured_nlp, set_offline_env

set_offline_env()
# spaCy imports thinc, and thinc imports torch whenever it is installed (1.2 of the preload's
# 5 CPU-s here), only to offer torch-backed layers; unstructured's spaCy pipeline
# (en_core_web_sm) runs on thinc's numpy ops. A None entry in sys.modules makes `import torch`
# fail inside this import only (thinc records has_torch = False); it is removed right after,
# so a worker whose parser needs torch (a PDF's) imports it as usual. Tested: tests/test_load.py.
_BLOCKED = "torch" not in sys.modules
if _BLOCKED:
    sys.modules["torch"] = None  # type: ignore[assignment]
try:
    install_unstructured_nlp()
finally:
    if _BLOCKED:
        del sys.modules["torch"]

import unstructured.partition.auto  # noqa: E402,F401
import unstructured.partition.docx  # noqa: E402,F401
import unstructured.partition.email  # noqa: E402,F401
import unstructured.partition.html  # noqa: E402,F401
import unstructured.partition.md  # noqa: E402,F401
import unstructured.partition.pptx  # noqa: E402,F401
import unstructured.partition.text  # noqa: E402,F401

import ragline.pipelines.load  # noqa: E402,F401

# First calls load lazily built state (the spaCy pipeline, markdown extensions): pay for it
# here, once, instead of in every forked worker (2 s each on a busy 2-core machine).
unstructured.partition.md.partition_md(text="# Warm-up\n\nDrones are the male bees of the colony.\n")
unstructured.partition.text.partition_text(text="Warm-up\n\nWorkers are the female bees. They forage.\n")
unstructured.partition.html.partition_html(text="<html><body><h1>Warm-up</h1><p>Queens lay eggs.</p></body></html>")

# ragline's own HTML path with the default ``load.html_drop``: its CSS selector (importing
# cssselect, compiled to XPath: about 10 ms in every new worker otherwise) and the unwrapped
# partitioner are built here, once.
from ragline.pipelines.config import LoadConfig  # noqa: E402

ragline.pipelines.load._partition_html(
    "<html><body><nav>Menu</nav><h1>Warm-up<a class='headerlink'>¶</a></h1><p>Bees dance.</p></body></html>",
    LoadConfig().html_drop, list(LoadConfig().languages))
