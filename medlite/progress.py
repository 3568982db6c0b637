"""The training progress bar shared by `medlite train` and `medlite demo`."""

from __future__ import annotations

import contextlib

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn


@contextlib.contextmanager
def epoch_progress(console, label: str, epochs: int):
    """A bar over epochs; yields the ``progress(epoch, total, row)`` callback that training calls."""
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("epoch {task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=console) as bar:
        task = bar.add_task(label, total=epochs)

        def on_epoch(epoch, total, row):
            bar.update(task, completed=epoch, description=f"{label}: loss {row['loss']:.3f} "
                                                          f"val AUC {row['val_auc']:.4f}")

        yield on_epoch
