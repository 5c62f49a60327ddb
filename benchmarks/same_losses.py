"""Same seed, same losses: train the example configs with this checkout and with an earlier
commit, and compare ``training_log.csv`` column by column, epoch by epoch.

    python benchmarks/same_losses.py --base e1624df            # both examples
    python benchmarks/same_losses.py --base HEAD~3 --only ethanol_bpnn --epochs 20

Each run takes the example config unchanged except for a fixed number of epochs instead of the
time limit (so both runs stop at the same epoch), one thread and its own output directory.  The
earlier commit runs from a ``git worktree`` of it, in a subprocess with its ``src`` first on the
path.  Prints, per example, the number of rows compared and the largest difference of each
shared column; exits 1 if any differs.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = {"ethanol_bpnn": 100, "ethanol_equivariant": 12}  # epochs: ~1 CPU minute each

RUN = """
import sys
from nearsight.training.config import load_config
from nearsight.training.trainer import Trainer
cfg = load_config(sys.argv[1])
cfg["training"].update(epochs=int(sys.argv[2]), max_time_minutes=None)
cfg.update(num_threads=1, output_dir=sys.argv[3])
Trainer(cfg, log=lambda m: None).train()
"""


def train(tree: Path, example: str, epochs: int, out: Path) -> list[dict]:
    env = {**os.environ, "PYTHONPATH": str(tree / "src"), "OMP_NUM_THREADS": "1"}
    config = tree / "examples" / f"{example}.yaml"
    subprocess.run([sys.executable, "-c", RUN, str(config), str(epochs), str(out)], env=env, check=True)
    with open(out / "training_log.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def compare(base: list[dict], new: list[dict]) -> tuple[dict[str, float], bool]:
    """Largest |difference| of each column both logs have (except time); True if all are equal."""
    columns = [c for c in base[0] if c in new[0] and c != "time_s"]
    worst = dict.fromkeys(columns, 0.0)
    same = len(base) == len(new)
    for a, b in zip(base, new):
        for c in columns:
            worst[c] = max(worst[c], abs(float(a[c]) - float(b[c])))
            same = same and a[c] == b[c]
    return worst, same


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the earlier commit (any git revision)")
    parser.add_argument("--only", choices=sorted(EXAMPLES), help="one example instead of both")
    parser.add_argument(
        "--epochs", type=int, help="epochs instead of the defaults (bpnn 100, equivariant 12)"
    )
    args = parser.parse_args()
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tmp / "base"), args.base],
                       check=True, capture_output=True)  # fmt: skip
        try:
            for example, epochs in EXAMPLES.items():
                if args.only and example != args.only:
                    continue
                epochs = args.epochs or epochs
                base = train(tmp / "base", example, epochs, tmp / f"{example}_base")
                new = train(ROOT, example, epochs, tmp / f"{example}_new")
                worst, same = compare(base, new)
                ok = ok and same
                print(f"{example}: {len(base)} vs {len(new)} validated epochs, "
                      f"{'identical' if same else 'DIFFERENT'}; largest differences: {worst}")  # fmt: skip
                print(f"  last row base: {dict(list(base[-1].items())[:7])}")
                print(f"  last row new:  {dict(list(new[-1].items())[:7])}")
                print(f"  training time (s, one after the other): base {float(base[-1]['time_s']):.1f}, "
                      f"new {float(new[-1]['time_s']):.1f}")  # fmt: skip
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tmp / "base")], check=False
            )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
