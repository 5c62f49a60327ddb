"""What a run writes for people to read: ``training_log.csv`` (one row per validation, with
the validation loss of every loss term), TensorBoard scalars, the console line and the
learning-curve plot.  Only the main process writes.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

_METRICS = ("energy_mae", "energy_per_atom_mae", "forces_mae", "stress_mae_GPa")
"""Validation metrics logged, each as the column ``valid_<metric>``."""

BASE_FIELDS = ["epoch", "step", "train_loss", "valid_loss", *(f"valid_{m}" for m in _METRICS), "lr"]
"""The first columns of ``training_log.csv``; then the time column, named for the clock the run
measures (``cpu_time_s`` with ``training.time_limit_clock: cpu``, else ``wall_time_s``), then
``valid_loss_<term>`` for each loss term."""


def time_column(clock: str) -> str:
    """The CSV column of elapsed time for ``training.time_limit_clock`` ``cpu`` or ``wall``."""
    return "cpu_time_s" if clock == "cpu" else "wall_time_s"


class TrainingLog:
    """The CSV log and TensorBoard writer of a run in ``out_dir``.

    Columns: :data:`BASE_FIELDS`, the time by ``clock`` (:func:`time_column`), then
    ``valid_loss_<term>`` for each loss term (its share of the validation loss).  A validation
    without stress labels leaves ``valid_stress_mae_GPa`` empty.
    """

    def __init__(
        self, out_dir: Path, terms: Sequence[str], tensorboard: bool, enabled: bool, clock: str = "wall"
    ) -> None:
        self.path = out_dir / "training_log.csv"
        self.out_dir = out_dir
        self.fields = BASE_FIELDS + [time_column(clock)] + [f"valid_loss_{name}" for name in terms]
        self.terms = list(terms)
        self.tensorboard = tensorboard
        self.enabled = enabled
        self.writer = None

    def start(self, step: int, fresh: bool, epoch: int | None = None) -> None:
        """A new CSV file with its header (fresh runs) and the TensorBoard writer (from ``step``).

        On a resume (``fresh`` False) the rows of epochs ``>= epoch`` (the checkpoint's next
        epoch: rows a killed run wrote after its last checkpoint, which the resumed run writes
        again) and any row a kill cut short are dropped, so no epoch appears twice.
        """
        if not self.enabled:
            return
        if fresh or not self.path.is_file():
            with open(self.path, "w", newline="") as fh:
                csv.writer(fh).writerow(self.fields)
        else:
            self._adopt_header()
            if epoch is not None:
                self.drop_rows_from(epoch)
        if self.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as exc:
                raise ImportError(
                    "training.tensorboard needs the tensorboard package: pip install 'nearsight[tensorboard]'"
                ) from exc
            self.writer = SummaryWriter(str(self.out_dir / "tensorboard"), purge_step=step or None)

    def _adopt_header(self) -> None:
        """A log written with other columns (an older version, or ``time_s``) is rewritten with
        this run's columns, values kept by name, so resumed rows line up with the header."""
        with open(self.path, newline="") as fh:
            reader = csv.DictReader(fh)
            if reader.fieldnames == self.fields:
                return
            rows = list(reader)
        clock_column = self.fields[len(BASE_FIELDS)]
        for row in rows:  # a log from before the column was named for its clock: the same run's clock
            if "time_s" in row and clock_column not in row:
                row[clock_column] = row["time_s"]
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, self.fields, extrasaction="ignore", restval="")
            writer.writeheader()
            writer.writerows(rows)
        tmp.replace(self.path)

    def drop_rows_from(self, epoch: int) -> int:
        """Remove the rows of epochs ``>= epoch`` (and malformed rows) from the CSV, atomically;
        returns how many rows went."""
        with open(self.path, newline="") as fh:
            rows = list(csv.reader(fh))
        if not rows:
            return 0
        header, body = rows[0], rows[1:]

        def keep(row: list[str]) -> bool:
            return len(row) == len(header) and row[0].isdigit() and int(row[0]) < epoch

        kept = [row for row in body if keep(row)]
        if len(kept) == len(body):
            return 0
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        with open(tmp, "w", newline="") as fh:
            csv.writer(fh).writerows([header, *kept])
        tmp.replace(self.path)
        return len(body) - len(kept)

    def row(self, epoch: int, step: int, train_loss: float, valid_loss: float, metrics: dict, lr: float,
            elapsed: float) -> None:  # fmt: skip
        """One row of the CSV log (and its TensorBoard scalars)."""
        if not self.enabled:
            return
        values = [epoch, step, train_loss, valid_loss]
        values += [metrics.get(key, "") for key in _METRICS]
        values += [lr, elapsed] + [metrics[f"loss_{name}"] for name in self.terms]
        with open(self.path, "a", newline="") as fh:
            csv.writer(fh).writerow(values)
        if self.writer is not None:
            skip = {"epoch", "step", self.fields[len(BASE_FIELDS)]}
            for name, value in zip(self.fields, values):
                if name not in skip and value != "":
                    self.writer.add_scalar(name, value, step)
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def epoch_line(epoch: int, train_loss: float, valid_loss: float, metrics: dict, lr: float, elapsed: float,
               improved: bool) -> str:  # fmt: skip
    """The console line of a validated epoch: validation errors (energy per structure and per
    atom, forces, and stress in GPa where the validation frames carry it)."""
    stress = f"  S MAE {metrics['stress_mae_GPa']:.3f} GPa" if "stress_mae_GPa" in metrics else ""
    return (
        f"epoch {epoch:5d}  loss {train_loss:.4e}  valid {valid_loss:.4e}  "
        f"E MAE {1000 * metrics['energy_mae']:.2f} meV ({1000 * metrics['energy_per_atom_mae']:.2f} meV/atom)  "
        f"F MAE {1000 * metrics['forces_mae']:.2f} meV/Å{stress}  "
        f"lr {lr:.2e}  {elapsed:.0f}s{'  *' if improved else ''}"
    )


def learning_curve_plot(csv_path: Path, png_path: Path) -> Path | None:
    """Loss and validation errors against epoch, from ``training_log.csv``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(csv_path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        return None
    epoch = [int(r["epoch"]) for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.semilogy(epoch, [float(r["train_loss"]) for r in rows], label="train")
    ax1.semilogy(epoch, [float(r["valid_loss"]) for r in rows], label="validation")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("loss")
    ax1.legend()
    ax2.semilogy(epoch, [1e3 * float(r["valid_forces_mae"]) for r in rows], label="F MAE (meV/Å)")
    ax2.semilogy(epoch, [1e3 * float(r["valid_energy_mae"]) for r in rows], label="E MAE (meV)")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("validation error")
    ax2.legend()
    fig.tight_layout()
    tmp = png_path.with_name(f".{png_path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(png_path)
    return png_path
