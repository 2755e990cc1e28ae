"""Rich progress bars for long work, one style for the whole project."""
from __future__ import annotations

import contextlib
import sys

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


@contextlib.contextmanager
def progress_bar(description: str, total: int, enabled: bool = True):
    """Yield advance(n=1, **fields); fields (e.g. loss=...) are shown after the bar."""
    if not enabled:
        yield lambda n=1, **fields: None
        return
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[status]}")]
    # Redraw rarely when output is not a terminal (DVC logs), so logs stay readable.
    with Progress(*columns, refresh_per_second=2 if sys.stderr.isatty() else 0.1) as progress:
        task = progress.add_task(description, total=total, status="")
        # Fields shown stay until new ones come (a training loop reads its loss only on the steps it logs).
        yield lambda n=1, **fields: progress.update(task, advance=n, **({"status": " ".join(
            f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in fields.items())} if fields else {}))
