"""ONNX export of one AnimeSR step, with the recurrent state as explicit inputs and outputs.

    python -m vsanimesr.export onnx --model v2 --out animesr_v2.onnx [--fp16] [--opset N]

The exported graph is one call of :class:`vsanimesr.archs.AnimeSRNet` (s = the model's scale, 4 for v1 and v2;
C = its state channels, 64; H and W any multiples of 4, batch 1):

=========  ===============  ============================================================================
input      shape            meaning
=========  ===============  ============================================================================
frames9    (1, 9, H, W)     previous, current and next RGB frame in [0, 1], concatenated on channels
prev_out   (1, 3, sH, sW)   the previous step's ``out``; zeros at the start of a chain
state      (1, C, H, W)     the previous step's ``new_state``; zeros at the start of a chain
=========  ===============  ============================================================================

=========  ===============  ============================================================================
output     shape            meaning
=========  ===============  ============================================================================
out        (1, 3, sH, sW)   the current frame upscaled, RGB, unclamped (about -0.45..1.34 on real frames)
new_state  (1, C, H, W)     the hidden state to feed back as ``state``
=========  ===============  ============================================================================

A runtime plays a clip by feeding each step's ``out`` and ``new_state`` back in; pad frames to multiples of 4
(replicate) and crop the output. ``--fp16`` gives the same graph with float16 weights, inputs and outputs (for
runtimes that compute in half precision, e.g. GPUs); the default is float32. The graph's metadata records the
model's SHA-256, scale and this signature.

:func:`cached_onnx` exports once per weight file into the cache (keyed by the file's SHA-256); the OpenVINO backend
reads that file, so a second process starts without exporting (reading it takes ~0.03 s; exporting took 20-60 s
on a shared 2-core machine).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch

from vsanimesr.archs.animesr import AnimeSRNet
from vsanimesr.loader import load_model
from vsanimesr.weights import cache_dir, resolve, sha256_of

__all__ = ["EXPORT_FORMAT", "INPUT_NAMES", "OUTPUT_NAMES", "cached_onnx", "export_onnx", "main"]

log = logging.getLogger("vsanimesr.export")

INPUT_NAMES = ("frames9", "prev_out", "state")
OUTPUT_NAMES = ("out", "new_state")
EXPORT_FORMAT = 1
"""Version of the exported signature; part of the cache key, bumped whenever names, shapes or meaning change."""

_NEEDS = ("onnx", "onnxscript")  # torch's ONNX exporter (torch.export-based) needs both


def _require_exporter(func: str) -> None:
    missing = [m for m in _NEEDS if importlib.util.find_spec(m) is None]
    if missing:
        raise RuntimeError(
            f"{func}: ONNX export needs the package(s) {', '.join(missing)}: "
            "pip install 'vapoursynth-animesr[onnx]' (or onnx onnxscript)"
        )


@contextlib.contextmanager
def _quiet(*loggers: str) -> Iterator[None]:
    """Hold third-party loggers at WARNING (the exporter's optimiser logs every pass at INFO: hundreds of lines)."""
    saved = [(lg, lg.level) for lg in map(logging.getLogger, loggers)]
    for lg, level in saved:
        lg.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        for lg, level in saved:
            lg.setLevel(level)


def export_onnx(
    model: str | os.PathLike[str] | AnimeSRNet,
    out: str | os.PathLike[str],
    *,
    fp16: bool = False,
    opset: int | None = None,
) -> Path:
    """Write one AnimeSR step as ONNX to ``out`` (see the module docstring for the signature); returns the path.

    ``model`` is ``"v1"``, ``"v2"``, a weight file or a loaded :class:`AnimeSRNet`. The file is written next to
    ``out`` and renamed into place, so ``out`` is either the complete graph or untouched.
    """
    _require_exporter("export_onnx")
    import onnx

    if isinstance(model, AnimeSRNet):
        net, digest = model, None
    else:
        path = resolve(model)
        net, digest = load_model(path), sha256_of(path)
    dtype = torch.float16 if fp16 else torch.float32
    # A copy: the caller's module keeps its device, dtype and memory format.
    net = load_model(net.state_dict()).to("cpu", dtype).eval()
    s, c = net.scale, net.num_feat
    frames9 = torch.zeros(1, 9, 64, 96, dtype=dtype)
    prev_out, state = net.init_state(frames9)
    h4 = torch.export.Dim("h4", min=1, max=8192)
    w4 = torch.export.Dim("w4", min=1, max=8192)
    h, w = 4 * h4, 4 * w4  # the network needs multiples of 4 (two stride-2 levels)
    dynamic = {"frames": {2: h, 3: w}, "prev_out": {2: s * h, 3: s * w}, "state": {2: h, 3: w}}
    with warnings.catch_warnings(), _quiet("onnx_ir", "onnxscript"), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's notes about axis names; we rename them below
        program = torch.onnx.export(
            net, (frames9, prev_out, state), dynamo=True, input_names=list(INPUT_NAMES),
            output_names=list(OUTPUT_NAMES), dynamic_shapes=dynamic, opset_version=opset, external_data=False,
            verbose=False,  # None would print progress to stdout, which belongs to vspipe
        )  # fmt: skip
    proto = program.model_proto
    dims = {
        "frames9": ["1", "9", "H", "W"],
        "prev_out": ["1", "3", f"{s}H", f"{s}W"],
        "state": ["1", str(c), "H", "W"],
        "out": ["1", "3", f"{s}H", f"{s}W"],
        "new_state": ["1", str(c), "H", "W"],
    }
    for value in [*proto.graph.input, *proto.graph.output]:
        for d, name in zip(value.type.tensor_type.shape.dim, dims[value.name], strict=True):
            if not name.isdigit():
                d.dim_param = name
    del proto.graph.value_info[:]  # intermediate shapes named after the exporter's symbols; runtimes infer them
    meta = {
        "vsanimesr.signature": "frames9, prev_out, state -> out, new_state (see vsanimesr/export.py)",
        "vsanimesr.format": str(EXPORT_FORMAT),
        "vsanimesr.scale": str(s),
        "vsanimesr.state_channels": str(c),
        "vsanimesr.precision": "fp16" if fp16 else "fp32",
    }
    if digest:
        meta["vsanimesr.model_sha256"] = digest
    for k, v in meta.items():
        proto.metadata_props.add(key=k, value=v)
    proto.graph.doc_string = "One AnimeSR step: frames9, prev_out, state -> out, new_state (vsanimesr.export)"
    onnx.checker.check_model(proto)
    dest = Path(out)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=dest.name + ".", suffix=".tmp", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(proto.SerializeToString())
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest


def cached_onnx(model: str | os.PathLike[str], *, fp16: bool = False) -> Path:
    """The ONNX export of ``model`` from the cache, exporting it on first use (once per weight file and machine).

    The key is the weight file's SHA-256, the precision and :data:`EXPORT_FORMAT`; the cache is
    ``$VSANIMESR_HOME/onnx`` (else the platform cache directory's ``vsanimesr/onnx``).
    """
    path = resolve(model)
    digest = sha256_of(path)
    dest = cache_dir() / "onnx" / f"animesr-{digest[:16]}-{'fp16' if fp16 else 'fp32'}-e{EXPORT_FORMAT}.onnx"
    if not dest.exists():
        log.info("exporting %s to ONNX (once per weight file): %s", path.name, dest)
        export_onnx(path, dest, fp16=fp16)
    return dest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m vsanimesr.export",
        description="Export AnimeSR for other runtimes. " + (__doc__ or "").split("\n\n", 2)[1].strip(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = ap.add_subparsers(dest="format", required=True, metavar="{onnx}")
    p = sub.add_parser("onnx", help="one recurrent step as ONNX: frames9, prev_out, state -> out, new_state")
    p.add_argument("--model", default="v2", metavar="v1|v2|PATH", help="model name or weight file; default: v2")
    p.add_argument("--out", type=Path, required=True, metavar="FILE.onnx", help="where to write the graph")
    p.add_argument("--fp16", action="store_true", help="float16 weights, inputs and outputs (default float32)")
    p.add_argument("--opset", type=int, default=None, metavar="N", help="ONNX opset (default: the exporter's)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    try:
        dest = export_onnx(args.model, args.out, fp16=args.fp16, opset=args.opset)
    except (ValueError, RuntimeError, OSError) as e:  # WeightsError is a ValueError
        print(f"vsanimesr.export: error: {e}", file=sys.stderr)
        return 1
    print(dest)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
