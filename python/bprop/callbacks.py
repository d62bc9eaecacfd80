"""Training history."""

from __future__ import annotations


class History:
    """Per-epoch figures of a fit() call.

    ``history.history`` maps a metric name ("loss", "val_loss",
    "val_accuracy" or "val_r2") to one value per epoch; the same lists are
    reachable as ``history["loss"]``.
    """

    def __init__(self) -> None:
        self.history: dict[str, list[float]] = {}
        self.epoch: list[int] = []

    def record(self, epoch: int, values: dict[str, float]) -> None:
        self.epoch.append(epoch)
        for name, value in values.items():
            self.history.setdefault(name, []).append(float(value))

    def __getitem__(self, name: str) -> list[float]:
        return self.history[name]

    def __contains__(self, name: object) -> bool:
        return name in self.history

    def __len__(self) -> int:
        return len(self.epoch)

    def __repr__(self) -> str:
        return f"History(epochs={len(self.epoch)}, metrics={sorted(self.history)})"
