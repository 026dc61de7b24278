"""What the parts that run one long job at a time (photo inversion and tuning, stylization) share: the running Task,
Cancel from the panel's button, and a silent cancel when a new model replaces the one the job works on."""

from __future__ import annotations

from PySide6.QtCore import QObject


class TaskPart(QObject):
    _task = None  # the app.workers.Task running now, if any; its panel has `progress` and `set_progress`

    def cancel(self):
        if self._task is not None:
            self._task.cancel()
            self.panel.set_progress(self.panel.progress.value() / 1000, "cancelling…")

    def _cancel_task(self):
        if self._task is not None:
            self._task.cancel()
