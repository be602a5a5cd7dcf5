"""PyTorch eager timings of the UniRES++ path of `cargo run --release --example bench_e2e`
(comparison only).

Builds the same stages as the `base` preset (the LLM cut to `--layers`, default 2) from
transformers / torchvision blocks with seeded random weights, in the requested dtype, and times
them on the CPU the way examples/bench_e2e.rs does: a 640×480 image with 12 object and 24 part
proposals (a 644-position prompt prefix), three expressions per round (the first is the cold
query after the encoding, the other two cached queries), then the first expression once more
without the prefix cache (its whole prompt prefilled). `--rounds R` (default 2) rounds; every
figure is the fastest of the rounds. Stage names are those of src/pipeline/profile.rs; the
stages kept are the encoding's and the last (cached) query's, as on the Rust side.

    python tools/bench_torch_e2e.py [--dtype f32|f16|bf16] [--json FILE] [--layers N]
        [--rounds R]

Python: the reference venv (`bash ../shared/tools/ref-venv.sh` prints its python); written
against torch 2.15, torchvision 0.29, transformers 5.25 (the versions go into the JSON).
Threads: RAYON_NUM_THREADS, else all cores (as the Rust side). Needs ~6 GB of memory in f32.

What each stage builds (the Rust module it mirrors in brackets):
* preprocess: PIL expand-to-square (CLIP mean colour) + bicubic resize to 336, and bicubic
  resize of the long side to 768 + zero padding (after normalising) to 768²; proposals
  clipped and capped. [pipeline/preprocess.rs, pipeline/unires/encode.rs]
* clip: transformers CLIPVisionModel, ViT-L/14-336, built with 23 layers: the Rust tower runs
  only the layers up to select_layer −2 (`forward_select`), i.e. 23 of 24; CLS dropped; then
  the projector Linear(1024, 4096), GELU (erf), Linear(4096, 4096). [model/vision.rs]
* convnext: transformers ConvNextModel, ConvNeXt-L (192/384/768/1536, depths 3/3/27/3,
  layer scale 1e-6, erf GELU) at 768², the four stage outputs. HF also computes its pooled
  LayerNorm of the last stage (1536 values; the Rust side does not). [model/hires.rs]
* dense: neck (1×1 conv, LayerNorm2d, 3×3 conv, LayerNorm2d, no biases) on stage 2, and the
  1×1 skip projections of stages 1 and 0. [model/unires/heads.rs]
* regions: per level (stages 1, 2) a 1×1 projection to 256, torchvision roi_align (4×4,
  sampling 2, aligned, scale 1/8 and 1/16), mean over levels, Linear(4096, 4096), GELU,
  Linear(4096, 4096), plus the kind embedding and the sin/cos box encoding (16 frequencies)
  through Linear(128, 4096), for 36 boxes. [model/unires/region.rs]
* llm_prefix: the probe prompt's embeddings (text, 576 image tokens, 36 region tokens) up to
  the last region token, through transformers LlamaModel (4096 wide, 11008 MLP, 32 heads,
  vocabulary 32007, RoPE θ 1e4) with a DynamicCache. [pipeline/unires/prefix.rs, model/llm.rs]
* prompt: the expression tokenised by a word-level tokenizer equal to the Rust example's
  (lowercase, `\\w+|[^\\w\\s]+` splits, the chat template's own words) and the prompt's
  embeddings assembled. [model/unires/prompt.rs, pipeline/unires/query.rs]
* llm_query: the query's own positions (after the 644 of the prefix) prefilled on a copy of
  the prefix cache (a copy that shares the prefix tensors, as candle's clone), the three
  granularity logits (3 rows of lm_head) at the last position, then `<g_*> [SEG]` appended
  through the cache (the `Auto` path). Without the prefix cache: the whole prompt.
* head: the region rows, LISA's text_hidden_fcs, the target head, the region selection
  (bilinear score, softmax over competing regions), box coverage of the 48×48 grid, SAM box
  corner prompts, dense positional encoding, and a SAM mask decoder (transformers
  SamTwoWayTransformer, 256 wide, 2 layers, 8 heads, MLP 2048, downsample 2; upscaling with
  the two skip maps added; three hypernetwork MLPs; IoU head) to (1, 3, 192, 192).
  [model/unires/mod.rs, model/mask_decoder.rs]
* upsample: the chosen mask's logits bilinear to 768², cropped to 576×768, bilinear to
  480×640, thresholded at 0 (no probabilities: the Rust path computes none).
  [pipeline/unires/output.rs, ops/upsample.rs]
* instances: the mask's bounding box (or, for a multi-object answer, the mask within each
  selected object box; 8-connected components when none is selected).

Attention: transformers' default (sdpa) for CLIP, LLaMA and SAM. The Rust side computes the
CLIP and LLaMA attention in f32 whatever the dtype; PyTorch keeps the dtype. The Rust side
skips upsample and instances when the target score is below 0.5; here they always run (the
Rust f32 run at seed 5 reaches them). The second encoding of a round (prefix cache off) is not
timed on either side; here the round's own features are reused for it.

A stage whose op has no CPU kernel in the dtype runs that op in f32 and says so under
`f32_fallbacks` (torchvision's roi_align has none in bf16); a stage that cannot run at all
is null, with the reason under `unsupported`, and so are the totals that include it.
"""
import argparse
import inspect
import json
import os
import re
import resource
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
import transformers
from PIL import Image
from torchvision.ops import roi_align
from transformers import (CLIPVisionConfig, CLIPVisionModel, ConvNextConfig, ConvNextModel,
                          DynamicCache, LlamaConfig, LlamaForCausalLM, SamMaskDecoderConfig)
from transformers.models.sam.modeling_sam import (SamFeedForward, SamLayerNorm,
                                                  SamTwoWayTransformer)

from bench_torch_e2e_graph import *  # noqa: E402,F401,F403  (constants and modules)


# ---------------------------------------------------------------- profile (pipeline/profile.rs)

class StageFailed(Exception):
    def __init__(self, name, reason):
        super().__init__(f"{name}: {reason}")
        self.name, self.reason = name, reason


RECORD = []
FALLBACKS = {}


def stage(name, fn):
    t = time.perf_counter()
    try:
        out = fn()
    except (RuntimeError, NotImplementedError) as e:
        raise StageFailed(name, str(e).splitlines()[0][:300]) from e
    RECORD.append((name, (time.perf_counter() - t) * 1e3))
    return out


def take():
    out = list(RECORD)
    RECORD.clear()
    return out


# ---------------------------------------------------------------- inputs (examples/bench_e2e.rs)

def image():
    x = np.arange(640, dtype=np.uint32)[None, :].repeat(480, 0)
    y = np.arange(480, dtype=np.uint32)[:, None].repeat(640, 1)
    block = ((x // 80) + (y // 60)) % 3
    rgb = np.stack([x * 255 // 640, y * 255 // 480, block * 100 + (x ^ y) % 50], -1)
    return Image.fromarray(rgb.astype(np.uint8), "RGB")


def proposals():
    objects, parts = [], []
    for i in range(12):
        x, y = (i % 4) * 160.0, (i // 4) * 160.0
        objects.append((x + 10, y + 10, x + 150, y + 150))
        parts.append((x + 20, y + 20, x + 80, y + 70))
        parts.append((x + 70, y + 80, x + 140, y + 140))
    return objects, parts


def cap_proposals(objects, parts, w, h):
    def clip(b):
        x1, y1, x2, y2 = b
        c = (min(max(x1, 0.0), w), min(max(y1, 0.0), h), min(max(x2, 0.0), w), min(max(y2, 0.0), h))
        return c if c[2] > c[0] and c[3] > c[1] else None
    objs = [c for c in map(clip, objects) if c][:MAX_OBJECTS] or [(0.0, 0.0, float(w), float(h))]
    return objs, [c for c in map(clip, parts) if c][:MAX_PARTS]


# ---------------------------------------------------------------- tokenizer (unires/prompt.rs)

WORD = re.compile(r"\w+|[^\w\s]+")
SPECIAL = re.compile("(" + "|".join(map(re.escape, SPECIALS)) + ")")


class Prompter:
    """The word-level tokenizer of the Rust example: the specials, the template's own words,
    then the expressions' words; lowercased, split into runs of word / other characters."""

    def __init__(self, words):
        text = " ".join(t.replace("{regions}", " ").replace("{expression}", " ")
                        for t in (SYSTEM, USER, ASSISTANT))
        for s in SPECIALS:
            text = text.replace(s, " ")
        self.vocab = {}
        for w in SPECIALS + WORD.findall(text.lower()) + [w.lower() for w in words]:
            self.vocab.setdefault(w, len(self.vocab))
        self.gran = [self.vocab[t] for t in ("<g_part>", "<g_obj>", "<g_multi>")]
        self.seg = self.vocab["[SEG]"]

    def tokenize(self, text):
        ids = [self.vocab["<s>"]]
        for piece in SPECIAL.split(text):
            if piece in self.vocab and piece in SPECIALS:
                ids.append(self.vocab[piece])
            else:
                ids.extend(self.vocab.get(w, 0) for w in WORD.findall(piece.lower()))
        return ids

    def build(self, expression, n_obj, n_part):
        e = expression.strip()
        if not e:
            raise ValueError("empty expression")
        regions = " ".join(["<obj>"] * n_obj + ["<part>"] * n_part)
        user = USER.replace("{regions}", regions).replace("{expression}", e)
        ids = self.tokenize(" ".join(t for t in (SYSTEM, user, ASSISTANT) if t))
        at = lambda tok: [i for i, x in enumerate(ids) if x == self.vocab[tok]]  # noqa: E731
        image_at, objects_at, parts_at = at("<image>"), at("<obj>"), at("<part>")
        assert len(image_at) == 1 and len(objects_at) == n_obj and len(parts_at) == n_part
        return {"ids": ids, "image_at": image_at[0], "objects_at": objects_at,
                "parts_at": parts_at}


def expanded_len(p, n_img):
    return len(p["ids"]) - 1 + n_img


def expanded_pos(p, i, n_img):
    return i - 1 + n_img if i > p["image_at"] else i


class UniRes:
    def __init__(self, layers, dtype, words):
        torch.manual_seed(SEED)
        old = torch.get_default_dtype()
        torch.set_default_dtype(dtype)  # every block is created in the target dtype
        try:
            sdpa = {"attn_implementation": "sdpa"}
            self.clip = CLIPVisionModel(CLIPVisionConfig(
                hidden_size=1024, intermediate_size=4096, num_hidden_layers=23,
                num_attention_heads=16, num_channels=3, image_size=LOW, patch_size=14,
                hidden_act="quick_gelu", layer_norm_eps=1e-5, **sdpa)).eval()
            self.mm_projector = mlp2(1024, HIDDEN, HIDDEN, nn.GELU())
            self.convnext = ConvNextModel(ConvNextConfig(
                num_channels=3, patch_size=4, hidden_act="gelu", layer_norm_eps=1e-6,
                layer_scale_init_value=1e-6, drop_path_rate=0.0, **CONVNEXT)).eval()
            dims = CONVNEXT["hidden_sizes"]
            self.neck = Neck(dims[DENSE_LEVEL], DEC)
            self.skip_proj = nn.ModuleList([nn.Conv2d(dims[SKIP_LEVELS[0]], DEC // 4, 1),
                                            nn.Conv2d(dims[SKIP_LEVELS[1]], DEC // 8, 1)])
            self.region = RegionEncoder(dims, HIDDEN)
            self.llm = LlamaForCausalLM(LlamaConfig(
                vocab_size=32007, hidden_size=HIDDEN, intermediate_size=11008,
                num_hidden_layers=layers, num_attention_heads=32, num_key_value_heads=32,
                hidden_act="silu", max_position_embeddings=MAX_POSITIONS, rms_norm_eps=1e-5,
                rope_theta=10000.0, attention_bias=False, mlp_bias=False,
                tie_word_embeddings=False, **sdpa)).eval()
            sam = SamMaskDecoderConfig(
                hidden_size=DEC, hidden_act="relu", mlp_dim=2048, num_hidden_layers=2,
                num_attention_heads=8, attention_downsample_rate=2, num_multimask_outputs=2,
                iou_head_depth=3, iou_head_hidden_dim=256, layer_norm_eps=1e-6)
            sam._attn_implementation = "sdpa"
            self.head = Head(sam).eval()
        finally:
            torch.set_default_dtype(old)
        self.dtype = dtype
        self.prompter = Prompter(words)
        self.prefix_cache = True
        # transformers ≥ 5.2x names the cache argument `cache` (`past_key_values` before).
        params = inspect.signature(self.llm.model.forward).parameters
        self.cache_arg = "cache" if "cache" in params else "past_key_values"
        self.attn = {"clip": self.clip.config._attn_implementation,
                     "llm": self.llm.config._attn_implementation,
                     "sam": sam._attn_implementation}

    # ---- language side

    def embed(self, ids):
        return self.llm.model.embed_tokens(torch.tensor(ids)[None])[0]

    def prompt_embeddings(self, p, image_tokens, region_tokens):
        text = self.embed(p["ids"])
        specials = sorted([(i, r) for r, i in enumerate(p["objects_at"] + p["parts_at"])]
                          + [(p["image_at"], None)])
        pieces, start = [], 0
        for i, r in specials:
            if i > start:
                pieces.append(text[start:i])
            pieces.append(image_tokens if r is None else region_tokens[r:r + 1])
            start = i + 1
        if len(p["ids"]) > start:
            pieces.append(text[start:])
        return torch.cat(pieces, 0)

    def forward_llm(self, x, cache):
        return self.llm.model(inputs_embeds=x, use_cache=True,
                              **{self.cache_arg: cache}).last_hidden_state

    # ---- encode (pipeline/unires/encode.rs)

    def encode(self, img, props):
        def pre():
            w, h = img.size
            objs, parts = cap_proposals(*props, w, h)
            side = max(w, h)
            sq = Image.new("RGB", (side, side), tuple(int(m * 255) for m in CLIP_MEAN))
            sq.paste(img, ((side - w) // 2, (side - h) // 2))
            low = normalize(sq.resize((LOW, LOW), Image.BICUBIC))
            long = max(w, h)
            short = lambda s: max(1, int(s * HIRES / long + 0.5))  # noqa: E731
            rw, rh = (HIRES, short(h)) if w >= h else (short(w), HIRES)
            high = torch.zeros(1, 3, HIRES, HIRES)
            high[0, :, :rh, :rw] = normalize(img.resize((rw, rh), Image.BICUBIC))[0]
            return low, high, (objs, parts), (rw, rh)
        low, high, (objs, parts), (rw, rh) = stage("preprocess", pre)
        image_tokens = stage("clip", lambda: self.mm_projector(
            self.clip(pixel_values=low.to(self.dtype)).last_hidden_state[:, 1:]))[0]
        feats = stage("convnext", lambda: self.convnext(
            pixel_values=high.to(self.dtype), output_hidden_states=True).hidden_states[1:])
        dense, skips = stage("dense", lambda: (
            self.neck(feats[DENSE_LEVEL]),
            (self.skip_proj[0](feats[SKIP_LEVELS[0]]), self.skip_proj[1](feats[SKIP_LEVELS[1]]))))
        w, h = img.size
        sx, sy = rw / w, rh / h
        boxes = [(b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy) for b in objs + parts]
        rois = torch.tensor([[0.0, *b] for b in boxes])
        kinds = torch.tensor([0] * len(objs) + [1] * len(parts))
        region_boxes = (torch.tensor(boxes) / HIRES).to(self.dtype)
        region_tokens = stage("regions", lambda: self.region(feats, rois, kinds, region_boxes))
        enc = {"size": (w, h), "valid": (rh, rw), "objects": objs, "parts": parts,
               "image_tokens": image_tokens, "region_tokens": region_tokens,
               "region_boxes": region_boxes, "dense": dense, "skips": skips, "prefix": None}
        if self.prefix_cache:
            enc["prefix"] = stage("llm_prefix", lambda: self.prompt_prefix(enc))
        return enc

    def prompt_prefix(self, enc):
        """PromptPrefix::new: the probe prompt up to its last placeholder, prefilled."""
        p = self.prompter.build("x", len(enc["objects"]), len(enc["parts"]))
        cut = max(p["objects_at"] + p["parts_at"] + [p["image_at"]]) + 1
        n = cut - 1 + enc["image_tokens"].shape[0]
        embeds = self.prompt_embeddings(p, enc["image_tokens"], enc["region_tokens"])[:n][None]
        cache = DynamicCache()
        hidden = self.forward_llm(embeds, cache)
        if hasattr(cache, "layers"):
            kv = [(layer.keys, layer.values) for layer in cache.layers]
        else:  # transformers < 4.56
            kv = list(zip(cache.key_cache, cache.value_cache))
        return {"ids": p["ids"][:cut], "len": n, "kv": kv, "hidden": hidden}

    # ---- a query (pipeline/unires/mod.rs `segment_with_threshold`)

    def fork(self, kv):
        """A cache holding the prefix's keys and values without copying them (candle's clone);
        the query's positions are appended by concatenation, as on the Rust side."""
        if not hasattr(DynamicCache(), "layers"):  # transformers < 4.56: lists of tensors
            return DynamicCache.from_legacy_cache(tuple(kv))
        cache = DynamicCache()
        for i, (k, v) in enumerate(kv):
            cache.update(k[:, :, :1], v[:, :, :1], i)
            cache.layers[i].keys, cache.layers[i].values = k, v
        return cache

    def segment(self, enc, expression):
        n_obj, n_part = len(enc["objects"]), len(enc["parts"])
        n_img = enc["image_tokens"].shape[0]

        def prompt():
            p = self.prompter.build(expression, n_obj, n_part)
            s = expanded_len(p, n_img)
            if s + 2 > MAX_POSITIONS:
                raise ValueError("prompt too long")
            embeds = self.prompt_embeddings(p, enc["image_tokens"], enc["region_tokens"])
            pos = [expanded_pos(p, i, n_img) for i in p["objects_at"] + p["parts_at"]]
            return p, embeds, pos
        p, embeds, positions = stage("prompt", prompt)
        s = embeds.shape[0]

        def llm_query():
            pre = enc["prefix"]
            if pre is not None and s > pre["len"] and p["ids"][:len(pre["ids"])] == pre["ids"]:
                cache = self.fork(pre["kv"])
                h = self.forward_llm(embeds[pre["len"]:][None], cache)
                hidden = torch.cat([pre["hidden"], h], 1)
            else:
                cache = DynamicCache()
                hidden = self.forward_llm(embeds[None], cache)
            rows = self.llm.lm_head.weight[self.prompter.gran]
            probs = torch.softmax(F.linear(hidden[:, s - 1], rows).float(), -1)[0].tolist()
            chosen = int(np.argmax(probs))
            ans = self.embed([self.prompter.gran[chosen], self.prompter.seg])[None]
            seg = self.forward_llm(ans, cache)[:, 1]
            return hidden, probs, chosen, seg
        hidden, probs, chosen, seg_hidden = stage("llm_query", llm_query)
        multi = chosen == 2

        def head():
            region_hidden = hidden.reshape(s, -1)[torch.tensor(positions)][None]
            valid = torch.ones(1, len(positions)).to(self.dtype)
            compete_obj = 1.0 if chosen == 1 else 0.0
            compete_part = 1.0 if chosen == 0 else 0.0
            compete = torch.tensor([[compete_obj] * n_obj + [compete_part] * n_part])
            masks, target, select = self.head(seg_hidden, region_hidden, valid,
                                              enc["region_boxes"][None], enc["dense"],
                                              enc["skips"], compete)
            return masks, select, torch.sigmoid(target.float())[0].item()
        masks, select_logits, score = stage("head", head)
        # The Rust path stops here when score < NO_TARGET_THRESHOLD; here it always goes on.
        logits = masks[:, chosen].float()
        (w, h), (vh, vw) = enc["size"], enc["valid"]

        def upsample():
            x = F.interpolate(logits[:, None], (HIRES, HIRES), mode="bilinear", align_corners=False)
            x = F.interpolate(x[:, :, :vh, :vw], (h, w), mode="bilinear", align_corners=False)
            return (x[0, 0] > 0).numpy()
        mask = stage("upsample", upsample)
        stage("instances", lambda: instances(
            mask, multi, score, enc["objects"],
            torch.sigmoid(select_logits.float())[0].tolist()))
        return mask, chosen, score


def normalize(img):
    x = torch.from_numpy(np.asarray(img, dtype=np.float32) * (1.0 / 255.0)).permute(2, 0, 1)
    return torchvision.transforms.functional.normalize(x, CLIP_MEAN, CLIP_STD)[None]


def bbox(m):
    ys, xs = np.nonzero(m.any(1))[0], np.nonzero(m.any(0))[0]
    return None if len(ys) == 0 else (xs[0], ys[0], xs[-1] + 1, ys[-1] + 1)


def within_box(m, b):
    out = np.zeros_like(m)
    (h, w), lo, hi = m.shape, np.floor(b[:2]), np.ceil(b[2:])
    x1, y1 = (min(max(int(v), 0), n) for v, n in zip(lo, (w, h)))
    x2, y2 = (min(max(int(v), 0), n) for v, n in zip(hi, (w, h)))
    out[y1:y2, x1:x2] = m[y1:y2, x1:x2]
    return out


def components(m):
    """8-connected components, largest first (propagation of the largest label)."""
    fg = torch.from_numpy(m).float()[None, None]
    lab = (torch.arange(1, fg.numel() + 1, dtype=torch.float32).reshape(fg.shape)) * fg
    while True:
        nxt = F.max_pool2d(lab, 3, 1, 1) * fg
        if torch.equal(nxt, lab):
            break
        lab = nxt
    ids, counts = torch.unique(lab[lab > 0], return_counts=True)
    order = torch.argsort(counts, descending=True)
    return [(lab[0, 0] == ids[i]).numpy() for i in order]


def instances(mask, multi, score, objects, select):
    """output::instances: the whole mask, or per selected object box for multi-object."""
    if not mask.any():
        return []
    whole = lambda m, s: [] if bbox(m) is None else [(m.copy(), bbox(m), s)]  # noqa: E731
    if not multi:
        return whole(mask, score)
    out = [i for k, b in enumerate(objects) if k < len(select) and select[k] >= INSTANCE_THRESHOLD
           for i in whole(within_box(mask, b), select[k])]
    return out or [i for c in components(mask) for i in whole(c, score)]


# ---------------------------------------------------------------- the benchmark

def rss_mb(field):
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def keep_min(into, rec):
    total = {}
    for n, v in rec:
        total[n] = total.get(n, 0.0) + v
    for n, v in total.items():
        into[n] = min(into.get(n, float("inf")), v)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dtype", choices=DTYPES, default="f32")
    ap.add_argument("--json")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()
    a.rounds = max(a.rounds, 1)
    threads = int(os.environ.get("RAYON_NUM_THREADS", "0")) or os.cpu_count() or 1
    torch.set_num_threads(threads)
    dtype = DTYPES[a.dtype]
    words = [w for e in EXPRESSIONS for w in e.split()]
    t = time.perf_counter()
    with torch.inference_mode():
        model = UniRes(a.layers, dtype, words)
    init_ms = (time.perf_counter() - t) * 1e3
    weights_mb = rss_mb("VmRSS:")
    print(f"base preset, LLM {a.layers} layers, hires {HIRES}, {a.dtype}, {threads} threads; "
          f"weights initialised in {init_ms / 1e3:.1f} s, RSS {weights_mb:.0f} MiB "
          f"(peak {rss_mb('VmHWM:'):.0f} MiB); torch {torch.__version__}, transformers "
          f"{transformers.__version__}, torchvision {torchvision.__version__}", file=sys.stderr)
    img, props = image(), proposals()
    best, stages, unsupported = {}, {}, {}
    prefix_positions, suffix = 0, {}
    put = lambda k, v: best.__setitem__(k, min(best.get(k, float("inf")), v))  # noqa: E731
    try:
        with torch.inference_mode():
            for rnd in range(a.rounds):
                model.prefix_cache = True
                take()
                t = time.perf_counter()
                enc = model.encode(img, props)
                encode = (time.perf_counter() - t) * 1e3
                prefix_positions = enc["prefix"]["len"]
                query_ms = []
                for e in EXPRESSIONS:
                    p = model.prompter.build(e, len(enc["objects"]), len(enc["parts"]))
                    suffix[e] = expanded_len(p, enc["image_tokens"].shape[0]) - prefix_positions
                    t = time.perf_counter()
                    _, chosen, score = model.segment(enc, e)
                    query_ms.append((time.perf_counter() - t) * 1e3)
                # The encoding's stages and the last (cached) query's.
                rec = take()
                last = max(i for i, (n, _) in enumerate(rec) if n == "prompt")
                first = min(i for i, (n, _) in enumerate(rec) if n == "prompt")
                keep_min(stages, rec[:first] + rec[last:])
                # Without the prefix cache (the same features; not timed on either side).
                enc["prefix"] = None
                t = time.perf_counter()
                model.segment(enc, EXPRESSIONS[0])
                uncached = (time.perf_counter() - t) * 1e3
                take()
                del enc
                cached = (query_ms[1] + query_ms[2]) / 2
                print(f"  RSS now {rss_mb('VmRSS:'):.0f} MiB, peak {rss_mb('VmHWM:'):.0f} MiB; "
                      f"last answer: granularity {chosen}, score {score:.3f}", file=sys.stderr)
                print(f"round {rnd}: encode {encode:.0f} ms, first query {query_ms[0]:.0f} ms, "
                      f"cached {cached:.0f} ms, without the prefix cache {uncached:.0f} ms",
                      file=sys.stderr)
                put("encode_ms", encode)
                put("cold_query_ms", encode + query_ms[0])
                put("first_query_ms", query_ms[0])
                put("cached_query_ms", cached)
                put("uncached_query_ms", uncached)
    except StageFailed as e:
        # The stages before the one that failed keep their times; it and the totals are null.
        print(f"{a.dtype}: {e}", file=sys.stderr)
        unsupported[e.name] = e.reason
        keep_min(stages, take())
        best = {}
    names = ["preprocess", "clip", "convnext", "dense", "regions", "llm_prefix", "prompt",
             "llm_query", "head", "upsample", "instances"]
    stages_ms = {n: None if n in unsupported else stages.get(n) for n in names}
    keys = ["encode_ms", "cold_query_ms", "first_query_ms", "cached_query_ms",
            "uncached_query_ms"]
    figures = {k: best.get(k) for k in keys}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("stage            ms")
    for n in names:
        v = stages_ms[n]
        print(f"{n:<14} {v:>8.1f}" if v is not None else f"{n:<14}     null")
    for k in keys:
        v = figures[k]
        print(f"{k:<18} {v:>8.1f}" if v is not None else f"{k:<18}     null")
    ratio = ratio_plain = None
    if figures["cached_query_ms"] is not None:
        ratio = figures["cached_query_ms"] / figures["cold_query_ms"]
        ratio_plain = figures["cached_query_ms"] / figures["uncached_query_ms"]
        print(f"cached / cold query {ratio:.3f}; cached / uncached query {ratio_plain:.3f}; "
              f"prompt prefix {prefix_positions} positions; peak RSS {rss:.0f} MiB")
    if a.json:
        out = {
            "dtype": a.dtype,
            "threads": threads,
            "llm_layers": a.layers,
            "hires": HIRES,
            "prefix_positions": prefix_positions,
            "query_positions": suffix,
            "rounds": a.rounds,
            "init_ms": init_ms,
            **figures,
            "cached_over_cold": ratio,
            "cached_over_uncached": ratio_plain,
            "stages_ms": stages_ms,
            "peak_rss_mb": rss,
            "rss_after_init_mb": weights_mb,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "torchvision": torchvision.__version__,
            "attention": model.attn,
            "f32_fallbacks": FALLBACKS,
            "unsupported": unsupported,
        }
        with open(a.json, "w") as f:
            f.write(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
