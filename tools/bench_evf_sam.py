"""PyTorch timings of the reference EVF-SAM for `cargo bench --bench evf_sam` (comparison only).

Builds hustvl/EVF-SAM's EvfSamModel (BEiT-3 large + SAM ViT-H, the published config) with its
own random initialisation, and times on a 640×480 image, as the repository's inference.py runs
it: the first query (both preprocessing branches, SAM's image encoder, BEiT-3, prompt and mask
decoder, post-processing) and a cached query (everything after the image encoder), in float32
and float16. One warm-up run, then UNIRES_BENCH_REPEAT (default 2) runs; the fastest, in
seconds (a warm-up over a minute is the measurement). Threads: RAYON_NUM_THREADS, else all
cores (as the Rust side).

Needs the EVF-SAM venv (tests/fixtures/gen/evf-venv.sh) and EVF_SAM_SRC=<checkout of
hustvl/EVF-SAM at 9935dc5>. Prints one JSON object; a dtype PyTorch cannot run on the CPU is
reported as -1, one whose runs take over 10 minutes in all as -2.
"""
import json
import os
import signal
import sys
import time
import types

import numpy as np
import torch
import torch.nn.functional as F

src = os.environ.get("EVF_SAM_SRC")
if not src or not os.path.isfile(os.path.join(src, "model", "evf_sam.py")):
    sys.exit("set EVF_SAM_SRC to a checkout of hustvl/EVF-SAM")
sys.path.insert(0, src)
sys.argv = [sys.argv[0]]
try:  # inference.py imports OpenCV for file I/O, which is not used here
    import cv2  # noqa: F401
except ImportError:
    sys.modules["cv2"] = types.ModuleType("cv2")

from inference import beit3_preprocess, sam_preprocess  # noqa: E402
from model.configuration_evf import EvfConfig  # noqa: E402
from model.evf_sam import EvfSamModel  # noqa: E402

threads = int(os.environ.get("RAYON_NUM_THREADS", os.cpu_count() or 1))
torch.set_num_threads(threads)
repeat = int(os.environ.get("UNIRES_BENCH_REPEAT", "2"))


SLOW = 60.0  # seconds: a warm-up longer than this is the measurement (as the Rust side)
LIMIT = 150  # seconds: a dtype whose runs take longer than 4× this is reported as -2


def on_alarm(signum, frame):
    raise TimeoutError


signal.signal(signal.SIGALRM, on_alarm)


def best(fn, n):
    t = time.perf_counter()
    fn()
    warm = time.perf_counter() - t
    if warm > SLOW:
        return warm
    times = []
    for _ in range(max(n, 1)):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def image(w=640, h=480):
    x = np.arange(w)[None, :].repeat(h, 0)
    y = np.arange(h)[:, None].repeat(w, 1)
    return np.stack([x * 255 // w, y * 255 // h, (x ^ y) & 0xFF], -1).astype(np.uint8)


def query(model, emb, images_evf, ids, resize, orig):
    out = model.mm_extractor.beit3(
        visual_tokens=images_evf, textual_tokens=ids, text_padding_position=torch.zeros_like(ids))
    feat = model.text_hidden_fcs[0](out["encoder_out"][:, :1, ...])
    sparse, dense = model.visual_model.prompt_encoder(
        points=None, boxes=None, masks=None, text_embeds=feat)
    low, _ = model.visual_model.mask_decoder(
        image_embeddings=emb, image_pe=model.visual_model.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse.to(feat.dtype), dense_prompt_embeddings=dense,
        multimask_output=False)
    mask = model.visual_model.postprocess_masks(low, input_size=resize, original_size=orig)
    return (mask[:, 0] > 0), mask.float().sigmoid()


def main():
    cfg = EvfConfig(hidden_size=1024, out_dim=256, mm_extractor_scale="large", sam_scale="huge")
    with torch.no_grad():
        model = EvfSamModel(cfg).eval()
    img = image()
    ids = torch.tensor([[0, 70, 7244, 4, 70, 25553, 2]])
    out = {"version": torch.__version__, "threads": threads}
    for name, dtype in [("f32", torch.float32), ("f16", torch.float16)]:
        m = model.to(dtype)

        def encode():
            sam, resize = sam_preprocess(img)
            evf = beit3_preprocess(img, 224)
            emb = m.visual_model.image_encoder(sam.unsqueeze(0).to(dtype))
            return emb, evf.unsqueeze(0).to(dtype), resize

        try:
            signal.alarm(LIMIT * 4)
            with torch.no_grad():
                def first():
                    emb, evf, resize = encode()
                    query(m, emb, evf, ids, resize, img.shape[:2])

                out[f"{name} first"] = best(first, repeat)
                emb, evf, resize = encode()
                out[f"{name} cached"] = best(
                    lambda: query(m, emb, evf, ids, resize, img.shape[:2]), max(repeat, 3))
        except RuntimeError as e:
            print(f"{name}: {e}", file=sys.stderr)
            out.setdefault(f"{name} first", -1.0)
            out.setdefault(f"{name} cached", -1.0)
        except TimeoutError:
            print(f"{name}: a run took over {LIMIT} s", file=sys.stderr)
            out.setdefault(f"{name} first", -2.0)
            out.setdefault(f"{name} cached", -2.0)
        finally:
            signal.alarm(0)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
