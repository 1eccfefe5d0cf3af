"""Build AVC-style training clips from your own anime videos.

    animesr-build-dataset --videos DIR_OR_FILES... --out DIR [--clip-len 100] [--clips-per-video 1]
    (or python -m training.build_dataset ..., or python scripts/build_dataset.py ... in a checkout)

For each video: decode with PyAV, split into shots, measure motion / flat frames / quality, choose the best
windows of ``--clip-len`` consecutive frames (see ``training/clipselect.py`` for every measure and threshold)
and write each as a folder of lossless PNG frames ``OUT/<video>_<start>/00000000.png ...``, the layout the
training dataset reads. ``OUT/manifest.json`` records every video (status, cuts, chosen frame ranges and
scores, what the quality gate rejected) and ``OUT/clips.csv`` lists the clips. Re-running with the same ``--out``
skips the videos already finished; a video that cannot be read is reported (status ``failed``) and the batch goes
on. An absolute quality gate (``--quality-gate sharpness=0.001``, the default; ``--no-quality-gate``) keeps poor
videos from contributing clips just because they are the best of their video; ``--cut-clips N`` adds clips that
cross one cut, as the paper's data had.

Quality scorers are pluggable: ``--scorer niqe --scorer sharpness`` (the default) or your own
``--scorer package.module:factory`` (see ``training/scoring.py`` for the three-member interface).
Settings can also come from a YAML file (``--config``: SelectConfig field names, plus ``scorers``).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
import os
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path

from training.clipselect import (
    ClipWindow,
    SelectConfig,
    analyze_video,
    detect_cuts,
    extract_clips,
    gate_report,
    select_windows,
)
from training.configio import ConfigError, read_yaml, to_data
from training.scoring import FrameScorer, make_scorer

logger = logging.getLogger("build_dataset")

VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".mkv", ".avi", ".mov", ".webm", ".m2ts", ".mts", ".ts", ".flv", ".wmv", ".mpg", ".mpeg", ".m4v", ".vob"}
)
MANIFEST = "manifest.json"
CLIPS_CSV = "clips.csv"
FORMAT = "vsanimesr-clips/1"
FINISHED = ("done", "no_clips")


def find_videos(inputs: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Files given directly, plus the video files (by extension) found recursively in given folders; sorted."""
    found: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in VIDEO_EXTENSIONS)
        elif p.is_file():
            found.append(p)
        else:
            raise FileNotFoundError(f"build_dataset: --videos {item!r} is neither a file nor a folder")
    unique = list(dict.fromkeys(f.resolve() for f in found))
    if not unique:
        raise FileNotFoundError(f"build_dataset: no video files in {[str(i) for i in inputs]}")
    return unique


def video_keys(videos: Sequence[Path]) -> dict[Path, str]:
    """A short folder-safe name per video: its stem, plus a path hash where two videos share a stem."""
    stems = [re.sub(r"[^A-Za-z0-9._-]+", "_", v.stem).strip("._") or "video" for v in videos]
    keys = {}
    for v, s in zip(videos, stems, strict=True):
        keys[v] = s if stems.count(s) == 1 else f"{s}-{hashlib.sha1(str(v).encode()).hexdigest()[:6]}"
    return keys


def load_manifest(out: Path) -> dict:
    path = out / MANIFEST
    if not path.exists():
        return {"format": FORMAT, "videos": {}}
    data = json.loads(path.read_text())
    if data.get("format") != FORMAT:
        raise ValueError(f"build_dataset: {path} has format {data.get('format')!r}, expected {FORMAT!r}")
    return data


def save_manifest(out: Path, manifest: dict) -> None:
    """Write manifest.json atomically and regenerate clips.csv from it."""
    tmp = out / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, out / MANIFEST)
    scorer_names = sorted({k for v in manifest["videos"].values() for c in v.get("clips", []) for k in c["quality"]})
    with open(out / CLIPS_CSV, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["folder", "source", "start", "end", "frames", "cuts", "score", "motion", *scorer_names])
        for v in manifest["videos"].values():
            for c in v.get("clips", []):
                row = [c["folder"], v["source"], c["start"], c["end"], c["end"] - c["start"]]
                row += [" ".join(map(str, c["cuts"])), f"{c['score']:.4f}", f"{c['motion']:.4f}"]
                row += [f"{c['quality'].get(k, float('nan')):.4f}" for k in scorer_names]
                w.writerow(row)


def _tqdm_factory(enabled: bool):  # noqa: ANN202 - returns tqdm's bar type
    from tqdm import tqdm

    def make(total: int | None, desc: str):  # noqa: ANN202
        return tqdm(total=total, desc=desc, unit="frame", leave=False, disable=not enabled, dynamic_ncols=True)

    return make


def process_video(
    video: Path, key: str, out: Path, cfg: SelectConfig, scorers: Sequence[FrameScorer], *, progress: bool
) -> dict:
    """Analyse one video, pick its clips and write them; returns its manifest entry (status done / no_clips)."""
    bar = _tqdm_factory(progress)
    t0 = time.perf_counter()
    stats = analyze_video(video, cfg, scorers, progress=bar)
    cuts = detect_cuts(
        stats.content,
        stats.palette,
        threshold=cfg.cut_threshold,
        palette_threshold=cfg.palette_threshold,
        min_shot_len=cfg.min_shot_len,
    )
    windows: list[ClipWindow] = select_windows(stats, cuts, cfg)
    gate = gate_report(stats, cuts, cfg)
    folders = [out / f"{key}_{w.start:06d}" for w in windows]
    extract_clips(video, windows, folders, progress=bar)
    entry: dict = {
        "source": str(video),
        "key": key,
        "status": "done" if windows else "no_clips",
        "frames": stats.n_frames,
        "fps": stats.fps,
        "width": stats.width,
        "height": stats.height,
        "cuts": cuts,
        "flat_frames": int((stats.flat >= cfg.flat_fraction).sum()),
        "seconds": round(time.perf_counter() - t0, 2),
        "clips": [{"folder": f.name, **w.to_json()} for w, f in zip(windows, folders, strict=True)],
        "quality_gate": gate,
    }
    if not windows and gate["eligible"] and gate["rejected"] == gate["eligible"]:
        entry["reason"] = f"all {gate['eligible']} candidate windows fail the quality gate (best: {gate.get('best')})"
    if stats.error:
        entry["warning"] = stats.error
    return entry


def build_dataset(
    videos: Sequence[Path],
    out: Path,
    cfg: SelectConfig,
    scorers: Sequence[FrameScorer],
    *,
    force: bool = False,
    progress: bool = True,
) -> dict:
    """Process every video not finished yet (all of them with ``force``); returns the manifest."""
    out.mkdir(parents=True, exist_ok=True)
    manifest = load_manifest(out)
    config = {"select": to_data(cfg), "scorers": [s.name for s in scorers]}
    if manifest.get("config") not in (None, config) and not force:
        logger.warning("settings differ from the earlier run in %s; finished videos keep their old clips", out)
    manifest["config"] = config
    keys = video_keys(videos)
    for i, video in enumerate(videos, 1):
        old = manifest["videos"].get(str(video))
        if not force and old and old["status"] in FINISHED and all((out / c["folder"]).is_dir() for c in old["clips"]):
            logger.info("[%d/%d] %s: already %s, skipped", i, len(videos), video.name, old["status"])
            continue
        logger.info("[%d/%d] %s", i, len(videos), video)
        try:
            entry = process_video(video, keys[video], out, cfg, scorers, progress=progress)
        except Exception as e:  # noqa: BLE001 - one bad video must never abort the batch
            logger.error("%s: skipped, cannot be processed: %s: %s", video, type(e).__name__, e)
            entry = {
                "source": str(video),
                "key": keys[video],
                "status": "failed",
                "error": f"{type(e).__name__}: {e}",
                "clips": [],
            }
        else:
            logger.info(
                "%s: %d frames, %d cuts, %d clips %s",
                video.name,
                entry["frames"],
                len(entry["cuts"]),
                len(entry["clips"]),
                [(c["start"], c["end"]) for c in entry["clips"]],
            )
        manifest["videos"][str(video)] = entry
        save_manifest(out, manifest)
    save_manifest(out, manifest)
    return manifest


def load_config_file(path: Path) -> SelectConfig:
    """A YAML file of :class:`SelectConfig` fields (snake_case), read by the project's one config loader."""
    return SelectConfig.from_mapping(read_yaml(path), source=str(path))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", type=Path)
    config_path = pre.parse_known_args(argv)[0].config
    d = load_config_file(config_path) if config_path else SelectConfig()
    summary, _, details = __doc__.partition("\n\n")
    p = argparse.ArgumentParser(prog="animesr-build-dataset", description=summary, epilog=details,
                                formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config", type=Path, help="YAML file of defaults (SelectConfig fields); flags win")
    p.add_argument("--videos", nargs="+", required=True, help="video files and/or folders (searched recursively)")
    p.add_argument("--out", required=True, type=Path, help="output folder: one sub-folder per clip + manifest.json")
    p.add_argument("--clip-len", type=int, default=d.clip_len, help="frames per clip (default %(default)s)")
    p.add_argument("--clips-per-video", type=int, default=d.clips_per_video, help="clips inside one shot per video")
    p.add_argument("--cut-clips", type=int, default=d.cut_clips, help="extra clips per video that cross one cut")
    p.add_argument("--min-cut-side", type=int, default=d.min_cut_side, help="frames on each side of a cut clip's cut")
    p.add_argument("--min-motion", type=float, default=d.min_motion, help="minimum mean motion, px/frame at full res")
    p.add_argument("--flat-fraction", type=float, default=d.flat_fraction, help="dominant gray share of a flat frame")
    p.add_argument("--flat-tolerance", type=int, default=d.flat_tolerance, help="gray levels counted as dominant")
    p.add_argument("--cut-threshold", type=float, default=d.cut_threshold, help="HSV content distance of a cut")
    p.add_argument("--palette-threshold", type=float, default=d.palette_threshold, help="histogram distance of a cut")
    p.add_argument("--min-shot-len", type=int, default=d.min_shot_len, help="minimum frames between two cuts")
    p.add_argument("--analysis-width", type=int, default=d.analysis_width, help="width for cut/motion/flat analysis")
    p.add_argument("--score-every", type=int, default=d.score_every, help="run quality scorers on every n-th frame")
    p.add_argument("--motion-weight", type=float, default=d.motion_weight, help="weight of motion in the score")
    p.add_argument(
        "--scorer",
        action="append",
        default=None,
        help="niqe | sharpness | package.module:factory (repeatable; default: niqe and sharpness)",
    )
    p.add_argument(
        "--scorer-weight",
        action="append",
        default=[],
        metavar="NAME=W",
        help="weight of a scorer's z-score (default 1)",
    )
    p.add_argument(
        "--quality-gate",
        action="append",
        default=None,
        metavar="NAME=V",
        help="absolute floor of a scorer's clip mean (repeatable; default: "
        + ", ".join(f"{k}={v:g}" for k, v in d.quality_gate) + ")",
    )
    p.add_argument("--no-quality-gate", action="store_true", help="rank clips only within each video")
    p.add_argument("--force", action="store_true", help="redo videos already finished")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(file_config=d)
    return p.parse_args(argv)


def _named_numbers(items: Sequence[str], flag: str) -> dict[str, float]:
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            out[name] = float(value)
        except ValueError:
            sep = ""
        if not sep or not name:
            raise ConfigError(f"{flag} must look like NAME=1.5, got {item!r}", source="build_dataset")
    return out


def config_from_args(args: argparse.Namespace) -> SelectConfig:
    """The file's settings (or the defaults) with every flag given on the command line on top."""
    base: SelectConfig = args.file_config
    weights = {**dict(base.scorer_weights), **_named_numbers(args.scorer_weight, "--scorer-weight")}
    gate = dict(base.quality_gate) if args.quality_gate is None else _named_numbers(args.quality_gate, "--quality-gate")
    kwargs = {f.name: getattr(args, f.name) for f in fields(SelectConfig) if hasattr(args, f.name)}
    kwargs.update(scorer_weights=tuple(weights.items()),
                  quality_gate=() if args.no_quality_gate else tuple(gate.items()),
                  scorers=tuple(args.scorer) if args.scorer else base.scorers)
    return SelectConfig(**kwargs)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = parse_args(argv)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    try:
        cfg = config_from_args(args)
        scorers = [make_scorer(s) for s in cfg.scorers]
        names = [s.name for s in scorers]
        if len(set(names)) != len(names):
            raise ValueError(f"build_dataset: scorer names must be unique, got {names}")
        unknown = sorted(set(dict(cfg.quality_gate)) - set(names))
        if args.quality_gate is not None and unknown:
            raise ValueError(f"build_dataset: --quality-gate names scorer(s) {unknown} that are not in use ({names})")
        videos = find_videos(args.videos)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    manifest = build_dataset(videos, args.out, cfg, scorers, force=args.force, progress=not args.no_progress)
    entries = [manifest["videos"][str(v)] for v in videos]
    n_clips = sum(len(e["clips"]) for e in entries)
    failed = [e for e in entries if e["status"] == "failed"]
    gated = [e for e in entries if "reason" in e]
    print(f"{len(entries)} videos, {n_clips} clips in {args.out}; {len(failed)} failed, "
          f"{len(gated)} below the quality gate")
    for e in failed:
        print(f"  failed: {e['source']}: {e['error']}")
    for e in gated:
        print(f"  no clips: {e['source']}: {e['reason']}")
    return 1 if failed and len(failed) == len(entries) else 0


if __name__ == "__main__":
    raise SystemExit(main())
