"""A command's start, made without the garbage collector.

Starting a command makes many objects and almost no garbage: click's modules and ours,
then for S3 botocore's modules and the service models it parses (about 90,000 objects),
for PostgreSQL psycopg's.  The collector ran dozens of times over them meanwhile, for
nothing: 0.09 s of the 0.3 s a pack took to make its first request to S3, 0.02 s of
importing psycopg.  So collection waits while a command starts (from main() until the
command runs) and while it opens its storage and its database; after each, what was made is
frozen, so that later collections do not look at it again (it lives as long as the
process: modules, a client), and collection resumes.
"""

from __future__ import annotations

import gc
from contextlib import contextmanager


def pause() -> None:
    gc.disable()


def resume() -> None:
    """Collection resumes, past what has been made so far."""
    if not gc.isenabled():
        gc.freeze()
        gc.enable()


@contextmanager
def paused():
    """Collection paused for a while (and resumed after it, unless it was paused before)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            resume()
