"""The whole AnimeSR training chain in one command, with every path wired.

    animesr-recipe --clips datasets/AVC-Train --lq-videos real1.mp4 real2.mp4:0.35 real3.mp4 --out runs/recipe
    animesr-recipe --tiny --out runs/tiny-recipe        # every stage end to end on a CPU, in a few minutes
    (or python -m training.recipe ...)

Stages, each a plain command that the recipe prints before it runs it (so any stage can be rerun by hand):

1. ``vsr_l1``: AnimeSR stage 1 from scratch, L1 against a USM-sharpened GT, classic degradations only.
2. ``pseudo_hr_<i>``: pseudo-HR/LQ pairs from real LQ video i with the stage-1 model (input rescaling ``s``,
   0.5 unless given as ``video:s``; choose it per video with ``training.pseudo_hr``'s contact sheet).
3. ``lbo_<i>``: one learned basic operator per video (L1 + MSE), then ``lbo_gan_<i>``: its GAN fine-tune.
4. ``vsr_l1_lbo``: AnimeSR with the LBO degradations, L1 (skipped with ``--official``).
5. ``vsr_gan``: AnimeSR L1 + perceptual + LSGAN with the LBO degradations, from ``vsr_l1_lbo``
   (``--official``: from ``vsr_l1``, as the published step 3).
6. ``export``: ``OUT/animesr.pth``, checked by loading it as the engine does.

The stage configs are the shipped ones (``training/configs/train_*.yml``) with the paths set; each stage's
resolved config is written to ``OUT/configs/<stage>.yml``. A stage that finished is skipped on a rerun (its
``OUT/<stage>/.recipe-done`` records the config it finished with); a stage that was interrupted resumes from its
checkpoint. ``--set key=value`` changes every training stage, ``--set STAGE:key=value`` one stage.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from training.config import CONFIG_DIR, Config, ConfigError, config_to_dict, load_config

__all__ = ["Step", "main", "plan"]

log = logging.getLogger("training.recipe")

TRAIN_STAGES = ("vsr_l1", "lbo", "lbo_gan", "vsr_l1_lbo", "vsr_gan")

TINY_SETS: dict[str, tuple[str, ...]] = {
    # every stage small enough for a CPU: tiny networks, 32-pixel crops, 3-frame clips, a few iterations
    "all": ("run.device=cpu", "data.num_workers=0", "data.num_val=1", "log.log_every=1", "log.val_every=1000",
            "log.save_every=1000"),
    "vsr_l1": ("model.num_feat=8", "model.num_blocks=[1, 1, 1]", "data.batch_size=2", "data.clip_len=3",
               "data.gt_size=32", "data.codec_workers=0", "train.iters=4"),
    "lbo": ("model.num_feat=8", "data.batch_size=4", "data.gt_size=32", "train.iters=4", "train.milestones=[2]"),
    "lbo_gan": ("data.batch_size=2", "data.gt_size=64", "disc.num_scales=1", "disc.num_feat=8",
                "perceptual.pretrained=false", "perceptual.layer_weights={conv1_2: 0.1, conv2_2: 0.1}",
                "train.iters=2", "train.milestones=[]"),
    "vsr_l1_lbo": ("model.num_feat=8", "model.num_blocks=[1, 1, 1]", "data.batch_size=2", "data.clip_len=3",
                   "data.gt_size=32", "data.codec_workers=0", "train.iters=3"),
    "vsr_gan": ("data.batch_size=2", "data.clip_len=3", "data.gt_size=32", "data.codec_workers=1",
                "disc.num_scales=1", "disc.num_feat=8", "perceptual.pretrained=false",
                "perceptual.layer_weights={conv1_2: 0.1, conv2_2: 0.1}", "train.iters=2"),
}
"""``--tiny``: overrides on top of the shipped configs (``all`` applies to every training stage). The GAN stages
use random VGG features up to conv2_2 (no download in CI, little time); ``vsr_gan`` runs its codec round trips in
a worker process, as full runs do."""


@dataclass
class Step:
    """One stage of the chain: what it runs (``command``, for the user) and how (``run``, in this process)."""

    name: str
    command: list[str]
    run: Callable[[], int]
    outputs: list[Path]
    fingerprint: str
    """Hash of everything that decides the stage's result; a finished stage with the same one is skipped."""
    config: Config | None = field(default=None, repr=False)

    def marker(self, out: Path) -> Path:
        return out / self.name / ".recipe-done"

    def done(self, out: Path) -> bool:
        m = self.marker(out)
        return m.is_file() and m.read_text().strip() == self.fingerprint and all(p.exists() for p in self.outputs)


def _fingerprint(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _yaml(value: object) -> str:
    """A path or a list of paths as an override value (JSON is YAML: no surprises from spaces or colons)."""
    if isinstance(value, (list, tuple)):
        return json.dumps([str(v) for v in value])
    return json.dumps(str(value))


def _split_sets(sets: Sequence[str]) -> tuple[list[str], dict[str, list[str]]]:
    """``key=value`` (every training stage) and ``STAGE:key=value`` (one stage kind or one named stage)."""
    common: list[str] = []
    per: dict[str, list[str]] = {}
    for s in sets:
        key = s.split("=", 1)[0]
        if ":" in key:
            stage, rest = s.split(":", 1)
            per.setdefault(stage, []).append(rest)
        else:
            common.append(s)
    return common, per


def plan(
    *,
    out: Path,
    clips: Sequence[str],
    lq_videos: Sequence[tuple[str, float]],
    sets: Sequence[str] = (),
    official: bool = False,
    gpus: int = 1,
    tiny: bool = False,
    pseudo_hr_args: Sequence[str] = (),
) -> list[Step]:
    """The chain's steps with every config loaded and checked (config errors surface here, before any training)."""
    common, per = _split_sets(sets)
    known = set(TRAIN_STAGES) | {f"{k}_{i}" for k in ("lbo", "lbo_gan") for i in range(1, len(lq_videos) + 1)}
    for stage in per:
        if stage not in known:
            raise ConfigError(f"--set {stage}:...: unknown stage {stage!r} (stages: {', '.join(sorted(known))})",
                              source="recipe")
    cfg_dir = out / "configs"
    steps: list[Step] = []

    def training_stage(name: str, kind: str, wiring: list[str]) -> Step:
        tiny_sets = [*TINY_SETS["all"], *TINY_SETS[kind]] if tiny else []
        overrides = [*tiny_sets, *wiring, f"run.out_dir={_yaml(out / name)}", *common, *per.get(kind, []),
                     *per.get(name, [])]
        src = CONFIG_DIR / f"train_{kind}.yml"
        cfg = load_config(src, overrides)
        path = cfg_dir / f"{name}.yml"
        if gpus > 1:
            command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}",
                       "-m", "training.train", str(path)]
        else:
            command = [sys.executable, "-m", "training.train", str(path)]

        def run() -> int:
            import yaml

            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"# written by training.recipe from {src.name}\n"
                            + yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
            if gpus > 1:
                return subprocess.run(command, check=False).returncode
            from training.train import main as train_main

            return train_main([str(path)])

        export = out / name / ("lbo.pth" if cfg.stage.trains_lbo else "animesr.pth")
        return Step(name, command, run, [export], _fingerprint(config_to_dict(cfg), gpus), cfg)

    hr = [f"data.paths={_yaml(clips)}"]
    stage1 = training_stage("vsr_l1", "vsr_l1", hr)
    steps.append(stage1)
    classic = stage1.outputs[0]

    pool = []
    for i, (video, scale) in enumerate(lq_videos, 1):
        pairs = out / f"pseudo_hr_{i}"
        args = ["--video", str(video), "--scales", f"{scale:g}", "--model", str(classic), "--out", str(pairs),
                *pseudo_hr_args]

        def run_pseudo(args: list[str] = args, pairs: Path = pairs) -> int:
            from training.pseudo_hr import main as pseudo_main

            if pairs.exists():
                shutil.rmtree(pairs)  # stale pairs from an earlier stage-1 model must not mix in
            return pseudo_main(args)

        steps.append(Step(f"pseudo_hr_{i}", [sys.executable, "-m", "training.pseudo_hr", *args], run_pseudo,
                          [pairs / "hr"], _fingerprint(args, stage1.fingerprint)))
        fit = training_stage(f"lbo_{i}", "lbo", [f"data.paths={_yaml([pairs])}"])
        fit.fingerprint = _fingerprint(fit.fingerprint, steps[-1].fingerprint)
        steps.append(fit)
        gan = training_stage(f"lbo_gan_{i}", "lbo_gan",
                             [f"data.paths={_yaml([pairs])}", f"model.pretrained={_yaml(fit.outputs[0])}"])
        gan.fingerprint = _fingerprint(gan.fingerprint, fit.fingerprint)
        steps.append(gan)
        pool.append(gan)

    lbo_pool = [f"data.lbo_pool={_yaml([s.outputs[0] for s in pool])}"]
    upstream = _fingerprint(*[s.fingerprint for s in pool])
    start = stage1
    if not official:
        mid = training_stage("vsr_l1_lbo", "vsr_l1_lbo", [*hr, *lbo_pool])
        mid.fingerprint = _fingerprint(mid.fingerprint, upstream)
        steps.append(mid)
        start = mid
    final = training_stage("vsr_gan", "vsr_gan", [*hr, *lbo_pool, f"model.pretrained={_yaml(start.outputs[0])}"])
    final.fingerprint = _fingerprint(final.fingerprint, upstream, start.fingerprint)
    steps.append(final)

    target = out / "animesr.pth"

    def run_export() -> int:
        import torch

        from vsanimesr.loader import load_model

        net = load_model(final.outputs[0])  # the engine's own loader: strict, shapes inferred
        y = net.forward_sequence(torch.rand(1, 2, 3, 16, 16))
        if not torch.isfinite(y).all():
            print(f"error: {final.outputs[0]} gives non-finite output", file=sys.stderr)
            return 1
        tmp = target.with_name(target.name + ".tmp")
        shutil.copyfile(final.outputs[0], tmp)
        os.replace(tmp, target)
        digest = hashlib.sha256(target.read_bytes()).hexdigest()
        print(f"exported {target} (x{net.scale}, SHA-256 {digest}); use it as "
              f"vsanimesr.upscale(clip, model={str(target)!r}) or animesr upscale IN OUT --model {target}")
        return 0

    steps.append(Step("export", ["cp", str(final.outputs[0]), str(target)], run_export, [target],
                      _fingerprint(final.fingerprint)))
    return steps


# ---------------------------------------------------------------------------------------------------------------
# --tiny: data made here


def tiny_data_paths(root: Path, *, num_videos: int = 2) -> tuple[list[str], list[tuple[str, float]]]:
    """Where :func:`make_tiny_data` writes: four HR clip folders and ``num_videos`` LQ videos (scale 0.5)."""
    return ([str(root / "hr" / f"clip{i}") for i in range(4)],
            [(str(root / f"lq{i + 1}.mp4"), 0.5) for i in range(num_videos)])


def make_tiny_data(root: Path, *, seed: int = 0, num_videos: int = 2) -> tuple[list[str], list[tuple[str, float]]]:
    """Four 10-frame 64x64 HR clip folders and ``num_videos`` 48x48 LQ videos (a cartoon, blurred, x4 down,
    H.264 at CRF 30), drawn procedurally: the inputs of ``--tiny``."""
    import av
    import torch

    from training.degradations import apply_kernel, codec_roundtrip, gaussian_kernel, quantize, resize
    from training.synthetic import make_synthetic_cartoon_clip, write_clip_folder

    clips, videos = tiny_data_paths(root, num_videos=num_videos)
    for i, folder in enumerate(clips):
        write_clip_folder(make_synthetic_cartoon_clip(10, 64, 64, rng=np.random.default_rng([seed, i])), folder)
    for i, (path, _) in enumerate(videos):
        hr = make_synthetic_cartoon_clip(8, 192, 192, rng=np.random.default_rng([seed, 100 + i]))
        x = torch.from_numpy(hr).permute(0, 3, 1, 2).float() / 255.0
        x = resize(apply_kernel(x, gaussian_kernel(size=9, sigma_x=1.2, sigma_y=1.2)), factor=0.25, mode="area")
        lq = codec_roundtrip(quantize(x.clamp(0, 1).permute(0, 2, 3, 1).numpy()), crf=30)
        with av.open(path, "w") as c:
            st = c.add_stream("libx264", rate=Fraction(24, 1))
            st.width, st.height, st.pix_fmt = 48, 48, "yuv420p"
            st.options = {"crf": "0"}  # the degradation above is the real one; store it losslessly
            for f in lq:
                c.mux(st.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
            c.mux(st.encode(None))
    return clips, videos


# ---------------------------------------------------------------------------------------------------------------


def _parse_video(spec: str) -> tuple[str, float]:
    path, sep, scale = spec.rpartition(":")
    if sep and path and not scale.startswith(("/", "\\")):
        try:
            s = float(scale)
        except ValueError:
            return spec, 0.5
        if not 0.1 <= s <= 1.0:
            raise ConfigError(f"--lq-videos {spec!r}: the scale must be in [0.1, 1.0]", source="recipe")
        return path, s
    return spec, 0.5


def main(argv: Sequence[str] | None = None) -> int:
    summary, _, details = __doc__.partition("\n\n")
    ap = argparse.ArgumentParser(prog="animesr-recipe", description=summary, epilog=details,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path, help="folder for every stage's run, configs and the export")
    ap.add_argument("--clips", nargs="+", default=[], help="HR training clips: clip folders (AVC layout) and/or "
                    "videos, or folders of them (e.g. the output of animesr-build-dataset)")
    ap.add_argument("--lq-videos", nargs="+", default=[], metavar="VIDEO[:S]",
                    help="real low-quality videos, one LBO each (the paper used 3); S is the input rescaling "
                    "factor for pseudo-HR (default 0.5)")
    ap.add_argument("--gpus", type=int, default=1, help="processes per training stage (torchrun when > 1)")
    ap.add_argument("--official", action="store_true", help="the published chain: vsr_gan starts from vsr_l1, "
                    "no vsr_l1_lbo stage")
    ap.add_argument("--vgg", type=Path, help="local torchvision vgg19-dcbb9e9d.pth for the perceptual loss "
                    "(sets perceptual.weights of the GAN stages)")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="[STAGE:]KEY=VALUE",
                    help="override a config value in every training stage, or in one (e.g. vsr_gan:train.iters=1000)")
    ap.add_argument("--pseudo-hr-every", type=int, default=1, help="keep every k-th pseudo-HR pair (default 1)")
    ap.add_argument("--pseudo-hr-max-frames", type=int, help="read at most this many frames of each LQ video")
    ap.add_argument("--stop-after", metavar="STAGE", help="stop after this stage (e.g. vsr_l1, to pick pseudo-HR "
                    "scales with training.pseudo_hr's contact sheet before the rest)")
    ap.add_argument("--dry-run", action="store_true", help="check every config and print the commands, run nothing")
    ap.add_argument("--tiny", action="store_true", help="draw tiny data under OUT/data and run every stage on the "
                    "CPU with tiny networks and a few iterations (a smoke test of the whole chain)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    out: Path = args.out
    try:
        if args.gpus < 1:
            raise ConfigError(f"--gpus must be >= 1, got {args.gpus}", source="recipe")
        sets = list(args.sets)
        if args.vgg is not None:
            sets += [f"lbo_gan:perceptual.weights={args.vgg}", f"vsr_gan:perceptual.weights={args.vgg}"]
        lq = [_parse_video(v) for v in args.lq_videos]
        if args.tiny:
            if args.clips or args.lq_videos:
                raise ConfigError("--tiny draws its own data; leave out --clips and --lq-videos", source="recipe")
            clips, lq = tiny_data_paths(out / "data") if args.dry_run else make_tiny_data(out / "data")
        else:
            clips = args.clips
            if not clips or not lq:
                raise ConfigError("--clips and --lq-videos are required (or --tiny)", source="recipe")
            for p in [*clips, *(v for v, _ in lq)]:
                if not Path(p).exists():
                    raise ConfigError(f"{p!r} does not exist", source="recipe")
        pseudo = ["--every", str(args.pseudo_hr_every)]
        max_frames = 6 if args.tiny and args.pseudo_hr_max_frames is None else args.pseudo_hr_max_frames
        if max_frames is not None:
            pseudo += ["--max-frames", str(max_frames)]
        steps = plan(out=out, clips=clips, lq_videos=lq, sets=sets, official=args.official, gpus=args.gpus,
                     tiny=args.tiny, pseudo_hr_args=pseudo)
        names = [s.name for s in steps]
        if args.stop_after is not None and args.stop_after not in names:
            raise ConfigError(f"--stop-after {args.stop_after!r}: stages are {', '.join(names)}", source="recipe")
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    t_all = time.perf_counter()
    for step in steps:
        if args.dry_run:
            state = "done earlier, would skip: " if step.done(out) else ""
            print(f"[{step.name}] {state}{' '.join(step.command)}")
            continue
        if step.done(out):
            print(f"[{step.name}] done earlier, skipped")
        else:
            print(f"[{step.name}] {' '.join(step.command)}", flush=True)
            t0 = time.perf_counter()
            rc = step.run()
            if rc != 0:
                print(f"error: stage {step.name} failed (exit status {rc}); fix it and rerun the same command: "
                      "finished stages are skipped", file=sys.stderr)
                return rc
            step.marker(out).parent.mkdir(parents=True, exist_ok=True)
            step.marker(out).write_text(step.fingerprint + "\n")
            print(f"[{step.name}] finished in {time.perf_counter() - t0:.1f} s", flush=True)
        if step.name == args.stop_after:
            print(f"stopped after {step.name} (--stop-after)")
            return 0
    if not args.dry_run:
        print(f"recipe finished in {time.perf_counter() - t_all:.1f} s: {out / 'animesr.pth'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
