"""Build AVC-style training clips from your own anime videos: ``training.build_dataset`` (installed by the set-up).

    python scripts/build_dataset.py --videos videos/ --out datasets/mine --clip-len 100

(Installed, the same command is ``animesr-build-dataset``.) See ``training/build_dataset.py`` for the options.
"""

from __future__ import annotations

from training.build_dataset import main

if __name__ == "__main__":
    raise SystemExit(main())
