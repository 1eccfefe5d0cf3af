"""Build AVC-style training clips from your own anime videos: ``training.build_dataset`` run from a checkout.

    python scripts/build_dataset.py --videos videos/ --out datasets/mine --clip-len 100

(Installed, the same command is ``animesr-build-dataset``.) See ``training/build_dataset.py`` for the options.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.build_dataset import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
