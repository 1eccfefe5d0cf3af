"""Pseudo-HR frames from a real low-quality video (AnimeSR's input-rescaling strategy), for fitting an LBO.

The LQ frames are downscaled by a factor ``s`` (antialiased bicubic, a good kernel that removes most of the real
degradation) and super-resolved x4 by a VSR model trained on classic degradations only; the result is 4s x the LQ
size (for s = 0.5 exactly 2x). It serves as the "clean" image whose x0.5 degradation is the real LQ frame.
``s`` is chosen per video by eye: too large keeps the artefacts, too small loses detail.

    # several scales: a contact sheet (LQ | one pseudo-HR crop per scale) to choose s
    python -m training.pseudo_hr --video LQ.mp4 --scales 1.0,0.75,0.5,0.35 --model runs/vsr_l1/animesr.pth --out DIR
    # one scale: the frame pairs DIR/hr/*.png (2x LQ size) and DIR/lq/*.png, input of the ``lbo`` stage
    python -m training.pseudo_hr --video LQ.mp4 --scales 0.5 --model runs/vsr_l1/animesr.pth --out DIR

With a scale other than 0.5 the pseudo-HR is resized to exactly 2x the LQ size, because an LBO is a x0.5 operator.
The LQ is cropped to a multiple of 8 (so s = 0.5 gives a size the network accepts).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import av
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torch import Tensor, nn

__all__ = ["iter_video_frames", "main", "pseudo_hr_sequence"]

log = logging.getLogger("training.pseudo_hr")


def iter_video_frames(path: str | Path, *, max_frames: int | None = None) -> Iterator[np.ndarray]:
    """Decode a video with PyAV into (H, W, 3) uint8 RGB frames."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for i, frame in enumerate(container.decode(stream)):
            if max_frames is not None and i >= max_frames:
                break
            yield frame.to_ndarray(format="rgb24")


def _mod_crop(a: np.ndarray, m: int) -> np.ndarray:
    h, w = a.shape[:2]
    return a[: h - h % m, : w - w % m]


@torch.no_grad()
def pseudo_hr_sequence(
    net: nn.Module, frames: Iterator[np.ndarray], *, scale: float, device: torch.device
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (LQ frame, pseudo-HR frame at exactly 2x the LQ size) for a stream of frames, one recurrent pass.

    The network runs frame by frame with its hidden state carried over, as in inference; each frame waits for its
    successor (the network looks one frame ahead), and the last frame uses itself as its next neighbour.
    """
    if not 0.1 <= scale <= 1.0:
        raise ValueError(f"pseudo_hr_sequence: scale must be in [0.1, 1.0], got {scale!r}")

    def prep(a: np.ndarray) -> tuple[np.ndarray, Tensor]:
        lq = _mod_crop(a, 8)
        x = torch.from_numpy(np.ascontiguousarray(lq)).permute(2, 0, 1)[None].float().div(255).to(device)
        h, w = x.shape[-2:]
        size = (max(4, round(h * scale / 4) * 4), max(4, round(w * scale / 4) * 4))  # the network needs mod 4
        if size != (h, w):
            x = F.interpolate(x, size=size, mode="bicubic", antialias=True, align_corners=False)
        return lq, x  # unclamped after resizing, as in the published script

    it = iter(frames)
    first = next(it, None)
    if first is None:
        return
    cur_lq, cur = prep(first)
    prev = cur
    out = state = None
    while True:
        nxt_raw = next(it, None)
        nxt_lq, nxt = prep(nxt_raw) if nxt_raw is not None else (None, cur)
        window = torch.cat([prev, cur, nxt], dim=1)
        if out is None:
            out, state = net.init_state(window)
        out, state = net(window, out, state)
        target = (cur_lq.shape[0] * 2, cur_lq.shape[1] * 2)
        hr = out if tuple(out.shape[-2:]) == target else F.interpolate(
            out, size=target, mode="bicubic", antialias=True, align_corners=False)
        hr_u8 = (hr[0].clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
        yield cur_lq, hr_u8
        if nxt_raw is None:
            return
        prev, cur, cur_lq = cur, nxt, nxt_lq  # type: ignore[assignment]


def _contact_sheet(lq: np.ndarray, hrs: dict[float, np.ndarray], *, crop: int) -> Image.Image:
    """One row: the LQ (bicubic 2x) and the pseudo-HR for each scale, same centre crop, labelled."""
    up = np.asarray(Image.fromarray(lq).resize((lq.shape[1] * 2, lq.shape[0] * 2), Image.BICUBIC))
    h, w = up.shape[:2]
    c = min(crop, h, w)
    top, left = (h - c) // 2, (w - c) // 2
    tiles = [("LQ (bicubic x2)", up)] + [(f"s = {s:g}", hr) for s, hr in hrs.items()]
    label_h = 18
    sheet = Image.new("RGB", (c * len(tiles), c + label_h), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (label, img) in enumerate(tiles):
        sheet.paste(Image.fromarray(img[top : top + c, left : left + c]), (i * c, label_h))
        draw.text((i * c + 4, 3), label, fill="black")
    return sheet


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="animesr-pseudo-hr", description=__doc__.split("\n\n")[0])
    ap.add_argument("--video", required=True, help="a real low-quality video (read with PyAV)")
    ap.add_argument("--scales", required=True, help="comma-separated factors s, e.g. 1.0,0.75,0.5,0.35")
    ap.add_argument("--model", required=True, help="VSR weights trained on classic degradations (file, v1 or v2)")
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--max-frames", type=int, default=None, help="stop after this many input frames")
    ap.add_argument("--every", type=int, default=1, help="pairs mode: keep every k-th frame")
    ap.add_argument("--skip", type=int, default=1, help="pairs mode: drop the first frames (recurrence warm-up)")
    ap.add_argument("--sheet-frame", type=int, default=None, help="sheet mode: frame to show (default: the middle "
                    "of --max-frames, else frame 30)")
    ap.add_argument("--crop", type=int, default=384, help="sheet mode: side of the shown crop (pseudo-HR pixels)")
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    try:
        scales = [float(s) for s in args.scales.split(",") if s.strip()]
    except ValueError:
        print(f"error: --scales must be comma-separated numbers, got {args.scales!r}", file=sys.stderr)  # noqa: T201
        return 2
    if not scales or any(not 0.1 <= s <= 1.0 for s in scales):
        print(f"error: --scales values must be in [0.1, 1.0], got {args.scales!r}", file=sys.stderr)  # noqa: T201
        return 2
    if args.every < 1 or args.skip < 0:
        print("error: --every must be >= 1 and --skip >= 0", file=sys.stderr)  # noqa: T201
        return 2
    if not Path(args.video).is_file():
        print(f"error: --video {args.video!r} does not exist", file=sys.stderr)  # noqa: T201
        return 2
    from vsanimesr.loader import WeightsError, load_model
    from vsanimesr.weights import resolve

    try:
        net = load_model(resolve(args.model))
    except (ValueError, RuntimeError, WeightsError) as e:
        print(f"error: --model: {e}", file=sys.stderr)  # noqa: T201
        return 2
    use_cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    device = torch.device("cuda" if use_cuda else "cpu")
    net = net.to(device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    if len(scales) > 1:
        idx = args.sheet_frame if args.sheet_frame is not None else (args.max_frames // 2 if args.max_frames else 30)
        start = max(0, idx - 10)  # a few frames of recurrence warm-up before the shown frame
        hrs: dict[float, np.ndarray] = {}
        lq = None
        for s in scales:
            frames = (f for i, f in enumerate(iter_video_frames(args.video, max_frames=idx + 2)) if i >= start)
            results = list(pseudo_hr_sequence(net, frames, scale=s, device=device))
            if not results:
                print(f"error: {args.video!r} has no frame {start}", file=sys.stderr)  # noqa: T201
                return 2
            lq, hrs[s] = results[min(idx - start, len(results) - 1)]
        sheet = _contact_sheet(lq, hrs, crop=args.crop)  # type: ignore[arg-type]
        path = out / "contact_sheet.png"
        sheet.save(path)
        print(f"wrote {path}: LQ and pseudo-HR for s = {', '.join(f'{s:g}' for s in scales)}; pick s, then rerun "  # noqa: T201
              "with that single --scales value to write the pairs")
        return 0

    (out / "hr").mkdir(exist_ok=True)
    (out / "lq").mkdir(exist_ok=True)
    n = 0
    frames = iter_video_frames(args.video, max_frames=args.max_frames)
    for i, (lq, hr) in enumerate(pseudo_hr_sequence(net, frames, scale=scales[0], device=device)):
        if i < args.skip or (i - args.skip) % args.every:
            continue
        Image.fromarray(hr).save(out / "hr" / f"{i:06d}.png")
        Image.fromarray(lq).save(out / "lq" / f"{i:06d}.png")
        n += 1
    print(f"wrote {n} pseudo-HR/LQ pairs (s = {scales[0]:g}) to {out}/hr and {out}/lq")  # noqa: T201
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
