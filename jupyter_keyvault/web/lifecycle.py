"""What a long-running process of ours (the Jupyter server, the hub service) does once it has started."""

from __future__ import annotations

import gc
import logging
import time


def freeze_startup_heap(log: logging.Logger, setting: str) -> None:
    """Move every object alive now to the collector's permanent generation (gc.freeze): a full
    collection of a server's startup heap (a few hundred thousand objects: modules, classes, config)
    stalled every request and stream for 100-300 ms, several times a minute under load. Cycles among
    these objects that later become garbage are not freed; `setting` turns it off."""
    started = time.perf_counter()
    gc.collect()
    gc.freeze()
    log.info("jupyter-keyvault: %d startup objects frozen in %.0f ms (%s)", gc.get_freeze_count(),
             (time.perf_counter() - started) * 1e3, setting)
