"""PyTorch eager timings for the shapes of `cargo bench --bench ops` (comparison only).

Prints one JSON object {row key: milliseconds} on stdout; the Rust bench reads it when run
with UNIRES_BENCH_PYTHON=<python with torch + torchvision>, or use --table to print it alone.
Timing: one warm-up call, then repeated calls until 2 s (3 to 30 calls); the fastest.
Threads: as many as the Rust side uses (RAYON_NUM_THREADS, else all cores).

--device cpu|cuda[:N]|mps (default cpu) runs on that device, as the Rust bench does with
UNIRES_DEVICE; on a GPU every call ends with a synchronisation and TF32 is off (the Rust side
computes in full f32). Inputs are drawn on the CPU with a seeded generator, then copied.
"""
import json
import os
import sys
import time

import torch
import torch.nn.functional as F
from torchvision.ops import roi_align


DEV = torch.device("cpu")


def sync():
    if DEV.type == "cuda":
        torch.cuda.synchronize(DEV)
    elif DEV.type == "mps":
        torch.mps.synchronize()


def timed(fn):
    fn()
    sync()
    times = []
    start = time.perf_counter()
    while len(times) < 3 or (time.perf_counter() - start < 2.0 and len(times) < 30):
        t = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t) * 1e3)
    return min(times)


def randn(*shape, generator):
    return torch.randn(*shape, generator=generator).to(DEV)


def attention_rows(out):
    for h, d, s, causal in [
        (32, 128, 577, False), (32, 128, 1024, False), (32, 128, 1024, True),
        (32, 128, 2048, False), (32, 128, 2048, True), (8, 32, 4096, False),
    ]:
        g = torch.Generator().manual_seed(0)
        q, k, v = (randn(1, h, s, d, generator=g) for _ in range(3))
        scale = d ** -0.5
        key = f"attention h{h} d{d} s{s} {'causal' if causal else 'full'}"
        out[key + " sdpa"] = timed(
            lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale))

        def eager():
            a = (q @ k.transpose(-1, -2)) * scale
            if causal:
                a = a + torch.full((s, s), float("-inf"), device=DEV).triu(1)
            return a.softmax(-1) @ v
        out[key + " eager"] = timed(eager)


def upsample_rows(out):
    for n in (1, 8):
        for (oh, ow), valid in [((480, 640), (768, 1024)), ((1080, 1920), (576, 1024))]:
            x = torch.randn(n, 1, 256, 256).to(DEV)

            def chain():
                y = F.interpolate(x, (1024, 1024), mode="bilinear", align_corners=False)
                y = y[..., : valid[0], : valid[1]]
                y = F.interpolate(y, (oh, ow), mode="bilinear", align_corners=False)
                return y > 0, y.sigmoid()
            out[f"upsample n{n} 256->{oh}x{ow}"] = timed(chain)


def roi_rows(out):
    g = torch.Generator().manual_seed(0)
    feats = randn(1, 1536, 48, 48, generator=g)
    xy = torch.rand(48, 2, generator=g) * 600
    wh = torch.rand(48, 2, generator=g) * 160 + 8
    boxes = torch.cat([torch.zeros(48, 1), xy, xy + wh], 1).to(DEV)
    fwd = lambda: roi_align(feats, boxes, (7, 7), 1 / 16, 2, True)  # noqa: E731
    out["roi_align c1536 48x48 k48 7x7 fwd"] = timed(fwd)
    # The input gradient for a given output gradient (autograd runs the backward kernel).
    x = feats.clone().requires_grad_(True)
    y = roi_align(x, boxes, (7, 7), 1 / 16, 2, True)
    go = randn(y.shape, generator=g)
    out["roi_align c1536 48x48 k48 7x7 bwd"] = timed(
        lambda: torch.autograd.grad(y, x, go, retain_graph=True))


def linear_act_rows(out):
    cases = [
        ("ConvNeXt-L stage 1", 192 * 192, 192, 768, "gelu"),
        ("ConvNeXt-L stage 3", 48 * 48, 768, 3072, "gelu"),
        ("CLIP ViT-L/14-336", 577, 1024, 4096, "quick_gelu"),
    ]
    for name, rows, k, n, act in cases:
        g = torch.Generator().manual_seed(11)
        w = randn(n, k, generator=g) * 0.03
        b = randn(n, generator=g)
        x = randn(1, rows, k, generator=g)
        if act == "gelu":
            fn = lambda: F.gelu(F.linear(x, w, b))
        else:
            fn = lambda: (lambda h: h * torch.sigmoid(1.702 * h))(F.linear(x, w, b))
        out[f"linear+{act} {name} {rows}x{k}->{n}"] = timed(fn)


def residual_rows(out):
    # HF ConvNeXtLayer's end: pwconv2, layer scale, permute back, residual.
    for name, c, side in [("ConvNeXt-L stage 1", 192, 192), ("ConvNeXt-L stage 3", 768, 48)]:
        g = torch.Generator().manual_seed(21)
        x = randn(1, c, side, side, generator=g)
        y = randn(1, side, side, c, generator=g)
        gamma = randn(c, generator=g) * 0.1
        b = randn(c, generator=g)
        out[f"block end {name} c{c} {side}x{side}"] = timed(
            lambda: x + (gamma * (y + b)).permute(0, 3, 1, 2))
        w = randn(c, 4 * c, generator=g) * 0.03
        h = randn(1, side, side, 4 * c, generator=g)
        out[f"pwconv2+block end {name} c{c} {side}x{side}"] = timed(
            lambda: x + (gamma * F.linear(h, w, b)).permute(0, 3, 1, 2))


def dwconv_rows(out):
    for c, s in [(192, 128), (1536, 16)]:
        g = torch.Generator().manual_seed(0)
        x = randn(1, c, s, s, generator=g)
        w = randn(c, 1, 7, 7, generator=g)
        b = randn(c, generator=g)
        out[f"dwconv c{c} {s}x{s} k7 fwd"] = timed(lambda: F.conv2d(x, w, b, padding=3, groups=c))
        xr = x.clone().requires_grad_(True)
        wr = w.clone().requires_grad_(True)
        br = b.clone().requires_grad_(True)
        y = F.conv2d(xr, wr, br, padding=3, groups=c)
        go = randn(y.shape, generator=g)
        # The three gradients for a given output gradient (the backward kernels) ...
        out[f"dwconv c{c} {s}x{s} k7 bwd"] = timed(
            lambda: torch.autograd.grad(y, (xr, wr, br), go, retain_graph=True))
        # ... and through a scalar loss, as candle's `loss.backward()`.
        loss = (y * go).sum()
        out[f"dwconv c{c} {s}x{s} k7 loss.backward"] = timed(
            lambda: torch.autograd.grad(loss, (xr, wr, br), retain_graph=True))


def main():
    global DEV
    if "--device" in sys.argv:
        DEV = torch.device(sys.argv[sys.argv.index("--device") + 1])
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    threads = int(os.environ.get("RAYON_NUM_THREADS", "0")) or os.cpu_count()
    torch.set_num_threads(threads)
    name = str(DEV)
    if DEV.type == "cuda":
        name = f"{DEV} ({torch.cuda.get_device_name(DEV)}, CUDA {torch.version.cuda})"
    out = {"_torch": torch.__version__, "_threads": threads, "_device": name}
    with torch.no_grad():
        attention_rows(out)
        upsample_rows(out)
        linear_act_rows(out)
        residual_rows(out)
    roi_rows(out)
    dwconv_rows(out)
    if "--table" in sys.argv:
        for k, v in out.items():
            print(f"{k:45s} {v}")
    else:
        print(json.dumps(out))


if __name__ == "__main__":
    main()
