"""``make demo``: upscale a short clip end to end and write what a person can look at.

Without ``--input`` the clip comes from the project itself: a procedurally drawn cartoon, made low-quality with
the training degradations (Gaussian blur, x0.25 downscale, a lossy H.264 round trip), so the demo needs no data.
It writes into ``--out`` (default ``demo_out/``):

- ``input.mp4``         the low-quality sample (only without ``--input``);
- ``input_frames/``     the same frames as PNGs, an image sequence for ``animesr frames`` (only without ``--input``);
- ``upscaled.mp4``      AnimeSR's x4 result, HEVC 10-bit, through the same code path as ``animesr upscale``;
- ``side_by_side.png``  the middle frame: plain bicubic enlargement on the left, AnimeSR on the right.

It then decodes ``upscaled.mp4`` and checks its size and frame count against the input.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # `training` is part of the checkout, not of the installed package

from vsanimesr.video import FrameRange, VideoError, parse_frame_range, to_uint, transcode_video  # noqa: E402


def make_sample(path: Path, *, num_frames: int, height: int, width: int, seed: int,
                frames_dir: Path | None = None) -> None:
    """Draw a cartoon at 4x the target size, degrade it to (height, width) and write it losslessly (and as PNGs
    into ``frames_dir``)."""
    import av
    import torch

    from training.degradations import apply_kernel, codec_roundtrip, gaussian_kernel, quantize, resize
    from training.synthetic import make_synthetic_cartoon_clip

    hr = make_synthetic_cartoon_clip(num_frames, 4 * height, 4 * width, rng=np.random.default_rng(seed))
    x = torch.from_numpy(hr).permute(0, 3, 1, 2).float() / 255.0
    x = apply_kernel(x, gaussian_kernel(size=9, sigma_x=1.6, sigma_y=1.6))
    x = resize(x, factor=0.25, mode="bicubic")
    lr = quantize(x.clamp(0, 1).permute(0, 2, 3, 1).numpy())
    lr = codec_roundtrip(lr, codec="libx264", crf=33, preset="medium", fps=24)
    if frames_dir is not None:
        from PIL import Image

        frames_dir.mkdir(parents=True, exist_ok=True)
        for i, frame in enumerate(lr):
            Image.fromarray(frame).save(frames_dir / f"{i:04d}.png")

    with av.open(str(path), "w") as out:
        st = out.add_stream("libx264", rate=24)
        st.width, st.height, st.pix_fmt = width, height, "yuv444p"
        st.options = {"crf": "0"}  # lossless: the degradation above is the only loss the network should see
        for i, frame in enumerate(lr):
            vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
            vf.pts = i
            out.mux(st.encode(vf))
        out.mux(st.encode(None))


def side_by_side(lr: np.ndarray, sr: np.ndarray, label: str) -> np.ndarray:
    """Bicubic enlargement of ``lr`` (uint8) and ``sr`` (float) next to each other, with captions."""
    from PIL import Image, ImageDraw

    h, w = sr.shape[:2]
    plain = Image.fromarray(lr).resize((w, h), Image.Resampling.BICUBIC)
    canvas = Image.new("RGB", (2 * w + 8, h + 24), (255, 255, 255))
    canvas.paste(plain, (0, 24))
    canvas.paste(Image.fromarray(to_uint(sr, 8)), (w + 8, 24))
    draw = ImageDraw.Draw(canvas)
    draw.text((4, 6), "input, bicubic x4", fill=(0, 0, 0))
    draw.text((w + 12, 6), label, fill=(0, 0, 0))
    return np.asarray(canvas)


def count_frames(path: Path) -> tuple[int, tuple[int, int]]:
    """Decode every frame (the real count, not the header's) and return it with (width, height)."""
    import av

    with av.open(str(path)) as c:
        v = c.streams.video[0]
        n = sum(1 for _ in c.decode(v))
        return n, (v.codec_context.width, v.codec_context.height)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", type=Path, default=None, help="your own video instead of the built-in sample")
    ap.add_argument("--frames", type=parse_frame_range, default=None, metavar="START:END",
                    help="only these frames of --input")
    ap.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder (default: %(default)s)")
    ap.add_argument("--model", default="v2", help="v1, v2 or a weight file (default: %(default)s)")
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda (default: %(default)s)")
    ap.add_argument("--size", default="96x128", help="sample size HxW before x4 (default: %(default)s)")
    ap.add_argument("--num-frames", type=int, default=24, help="sample length (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=7, help="sample's random seed (default: %(default)s)")
    args = ap.parse_args(argv)

    from tqdm import tqdm

    from vsanimesr.engine import AnimeSR

    t_start = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    frames = args.frames or FrameRange()
    if args.input is None:
        src = args.out / "input.mp4"
        h, w = (int(v) for v in args.size.lower().split("x"))
        print(f"demo: drawing a {args.num_frames}-frame {w}x{h} cartoon and degrading it -> {src}")
        make_sample(src, num_frames=args.num_frames, height=h, width=w, seed=args.seed,
                    frames_dir=args.out / "input_frames")
    else:
        src = args.input
    n_in, (w_in, h_in) = count_frames(src)
    n_sel = len(range(n_in)[frames.start : frames.end])
    mid = n_sel // 2
    picked: dict[str, np.ndarray] = {}

    def process(lr_frames):  # noqa: ANN001, ANN202 - the engine's stream, keeping the middle frame for the PNG
        sr = AnimeSR(model=args.model, device=args.device)

        def tee(it):  # noqa: ANN001, ANN202
            for i, f in enumerate(it):
                if i == mid:
                    picked["lr"] = f
                yield f

        for i, y in enumerate(sr.stream(tee(lr_frames))):
            if i == mid:
                picked["sr"] = y
            yield y

    def progress(total: int | None):  # noqa: ANN202
        bar = tqdm(total=total, unit="frame", desc="demo: upscaling", file=sys.stderr,
                   bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_noinv_fmt}]")
        return lambda: bar.update(1)

    dest = args.out / "upscaled.mp4"
    try:
        summary = transcode_video(src, dest, process, frames=frames, overwrite=True, progress=progress)
    except VideoError as e:
        print(f"demo: error: {e}", file=sys.stderr)
        return 1
    png = args.out / "side_by_side.png"
    from PIL import Image

    Image.fromarray(side_by_side(picked["lr"], picked["sr"], f"AnimeSR {args.model} x4")).save(png)

    n_out, (w_out, h_out) = count_frames(dest)
    ok = n_out == n_sel == summary["frames"] and (w_out, h_out) == (4 * w_in, 4 * h_in)
    print(f"demo: input  {src}: {n_sel} frames, {w_in}x{h_in}")
    print(f"demo: output {dest}: {n_out} frames, {w_out}x{h_out} (HEVC 10-bit)")
    print(f"demo: compare {png} (left: bicubic, right: AnimeSR)")
    verdict = "done" if ok else "FAILED: the output does not match the input"
    print(f"demo: {verdict} in {time.perf_counter() - t_start:.0f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
