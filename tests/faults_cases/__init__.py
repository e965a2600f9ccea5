"""The fault drills, one module per family; FAMILIES lists them in the order they run."""

import sys
from pathlib import Path

# The modules import the tests' helpers (servers, archive_helpers) as top-level modules.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from .commit_window import commit_window_cases  # noqa: E402
from .concurrency import concurrency_cases  # noqa: E402
from .damage import corruption_cases, truncation_cases  # noqa: E402
from .hostile_rows import hostile_row_cases  # noqa: E402
from .hostile_tars import hostile_tar_cases  # noqa: E402
from .incrementals import incremental_cases  # noqa: E402
from .secrets import secret_cases  # noqa: E402
from .server_failures import server_failure_cases  # noqa: E402
from .signals import signal_cases  # noqa: E402

# In the order of their numbers (1 truncated ... 10 secrets); the secrets run last: that family's last
# case sums up every command's output.
FAMILIES = [truncation_cases, corruption_cases, hostile_tar_cases, hostile_row_cases, server_failure_cases,
            concurrency_cases, signal_cases, commit_window_cases, incremental_cases, secret_cases]
