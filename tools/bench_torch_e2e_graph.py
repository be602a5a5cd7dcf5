"""The stages of the `base` preset built from PyTorch / transformers / torchvision blocks, for
`tools/bench_torch_e2e.py` (which times them): the preset's constants and the modules that
transformers does not provide (neck, region encoder, prompt encoder, mask decoder wrapper,
[SEG] head)."""

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.ops import roi_align
from transformers import SamMaskDecoderConfig
from transformers.models.sam.modeling_sam import (SamFeedForward, SamLayerNorm,
                                                  SamTwoWayTransformer)

DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}
SEED = 5
EXPRESSIONS = ["the red car on the left", "the handle of the mug", "all the cars"]

# The `base` preset (src/config/presets.rs).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
LOW, HIRES = 336, 768
HIDDEN, DEC = 4096, 256
CONVNEXT = dict(hidden_sizes=[192, 384, 768, 1536], depths=[3, 3, 27, 3])
REGION_LEVELS, REGION_DIM, POOL, SAMPLING, BOX_FREQS, SELECT_DIM = [1, 2], 256, 4, 2, 16, 256
DENSE_LEVEL, SKIP_LEVELS = 2, (1, 0)
MAX_OBJECTS, MAX_PARTS = 16, 32
MAX_POSITIONS = 4096
SYSTEM = ("A chat between a curious human and an artificial intelligence assistant. "
          "The assistant gives helpful, detailed, and polite answers to the human's questions.")
USER = "USER: <image>\n{regions}\nPlease segment {expression}."
ASSISTANT = "ASSISTANT:"
SPECIALS = ["<unk>", "<s>", "</s>", "<pad>", "<image>", "<obj>", "<part>",
            "<g_part>", "<g_obj>", "<g_multi>", "[SEG]"]
NO_TARGET_THRESHOLD = INSTANCE_THRESHOLD = 0.5


# ---------------------------------------------------------------- the graph

def mlp2(d_in, d_mid, d_out, act):
    return nn.Sequential(nn.Linear(d_in, d_mid), act, nn.Linear(d_mid, d_out))


class LayerNorm2d(nn.LayerNorm):
    def forward(self, x):
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2).contiguous()


class Neck(nn.Module):
    def __init__(self, c_in, d):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, d, 1, bias=False)
        self.layer_norm1 = LayerNorm2d(d, eps=1e-6)
        self.conv2 = nn.Conv2d(d, d, 3, padding=1, bias=False)
        self.layer_norm2 = LayerNorm2d(d, eps=1e-6)

    def forward(self, x):
        return self.layer_norm2(self.conv2(self.layer_norm1(self.conv1(x))))


def box_encoding(boxes, freqs):
    f = (2.0 ** torch.arange(freqs, dtype=torch.float32) * torch.pi).to(boxes.dtype)
    a = (boxes[:, :, None] * f).reshape(boxes.shape[0], 4 * freqs)
    return torch.cat([a.sin(), a.cos()], 1)


class RegionEncoder(nn.Module):
    def __init__(self, dims, hidden):
        super().__init__()
        self.level_proj = nn.ModuleList(nn.Conv2d(dims[l], REGION_DIM, 1) for l in REGION_LEVELS)
        self.strides = [4 << l for l in REGION_LEVELS]
        self.mlp = mlp2(REGION_DIM * POOL * POOL, hidden, hidden, nn.GELU())
        self.kind_embed = nn.Parameter(torch.randn(2, hidden) * 0.02)
        self.box_proj = nn.Linear(8 * BOX_FREQS, hidden)

    def forward(self, feats, rois, kinds, boxes_norm):
        pooled = None
        for proj, l, stride in zip(self.level_proj, REGION_LEVELS, self.strides):
            p = proj(feats[l])
            try:
                r = roi_align(p, rois.to(p.dtype), (POOL, POOL), 1.0 / stride, SAMPLING, True)
            except RuntimeError as e:  # no CPU kernel in this dtype: pool in f32
                FALLBACKS["regions"] = "roi_align in f32: " + str(e).splitlines()[0][:200]
                r = roi_align(p.float(), rois.float(), (POOL, POOL), 1.0 / stride, SAMPLING,
                              True).to(p.dtype)
            pooled = r if pooled is None else pooled + r
        x = self.mlp((pooled / len(self.strides)).reshape(rois.shape[0], -1))
        return x + self.kind_embed[kinds] + self.box_proj(box_encoding(boxes_norm, BOX_FREQS))


class PromptEncoder(nn.Module):
    """The parts of SAM's prompt encoder the graph uses (random-Fourier PE, box corners,
    no_mask_embed)."""

    def __init__(self, d):
        super().__init__()
        self.gaussian = nn.Parameter(torch.randn(2, d // 2))
        self.corner_embed = nn.Parameter(torch.randn(2, d))
        self.no_mask_embed = nn.Parameter(torch.randn(1, d))

    def encode(self, coords):
        c = coords * 2 - 1
        proj = (c.to(self.gaussian.dtype) @ self.gaussian) * (2 * torch.pi)
        return torch.cat([proj.sin(), proj.cos()], -1)

    def embed_boxes(self, boxes):
        return self.encode(boxes.reshape(-1, 2, 2)) + self.corner_embed[None]

    def dense_pe(self, h, w, dtype):
        ys = (torch.arange(h, dtype=torch.float32) + 0.5) / h
        xs = (torch.arange(w, dtype=torch.float32) + 0.5) / w
        grid = torch.stack([xs[None, :].expand(h, w), ys[:, None].expand(h, w)], -1)
        return self.encode(grid).permute(2, 0, 1)[None].contiguous().to(dtype)


def box_coverage(boxes, gh, gw):
    """(B, R, gh·gw) f32: the fraction of each grid cell inside each normalised box."""
    b = boxes.float()

    def overlap(lo, hi, n):
        c0 = torch.arange(n, dtype=torch.float32) / n
        return (torch.minimum(hi[..., None], c0 + 1.0 / n) - torch.maximum(lo[..., None], c0)
                ).clamp(min=0) * n
    ox, oy = overlap(b[..., 0], b[..., 2], gw), overlap(b[..., 1], b[..., 3], gh)
    return (oy[..., :, None] * ox[..., None, :]).reshape(b.shape[0], b.shape[1], gh * gw)


class MaskDecoder(nn.Module):
    """SAM's mask decoder (transformers blocks) with the two upscaling skips of our graph."""

    def __init__(self, cfg):
        super().__init__()
        d, n = cfg.hidden_size, cfg.num_multimask_outputs + 1
        self.iou_token = nn.Parameter(torch.randn(1, d))
        self.mask_tokens = nn.Parameter(torch.randn(n, d))
        self.transformer = SamTwoWayTransformer(cfg)
        self.upscale_conv1 = nn.ConvTranspose2d(d, d // 4, 2, 2)
        self.upscale_layer_norm = SamLayerNorm(d // 4, eps=1e-6, data_format="channels_first")
        self.upscale_conv2 = nn.ConvTranspose2d(d // 4, d // 8, 2, 2)
        self.output_hypernetworks_mlps = nn.ModuleList(
            SamFeedForward(d, d, d // 8, 3) for _ in range(n))
        self.iou_prediction_head = SamFeedForward(d, cfg.iou_head_hidden_dim, n,
                                                  cfg.iou_head_depth)
        self.n = n

    def forward(self, image, pe, sparse, dense, skips):
        b, c, h, w = image.shape
        out = torch.cat([self.iou_token, self.mask_tokens], 0).to(sparse.dtype)
        tokens = torch.cat([out[None].expand(b, -1, -1), sparse], 1)
        hs, keys = self.transformer(
            point_embeddings=tokens[:, None], image_embeddings=image + dense,
            image_positional_embeddings=pe, attention_similarity=None)
        hs, keys = hs[:, 0], keys[:, 0]
        src = keys.transpose(1, 2).reshape(b, c, h, w)
        up = self.upscale_layer_norm(self.upscale_conv1(src)) + skips[0]
        up = F.gelu(up)
        up = F.gelu(self.upscale_conv2(up) + skips[1])
        hyper = torch.stack([m(hs[:, 1 + i]) for i, m in enumerate(self.output_hypernetworks_mlps)],
                            1)
        _, cu, hu, wu = up.shape
        masks = (hyper @ up.reshape(b, cu, hu * wu)).reshape(b, self.n, hu, wu)
        return masks, self.iou_prediction_head(hs[:, 0])


class Head(nn.Module):
    """`UniRes::head`: [SEG] → sparse prompt, region selection → weighted box prompts and a
    dense coverage prompt, the mask decoder, the no-target score."""

    def __init__(self, sam_cfg):
        super().__init__()
        d = DEC
        self.text_hidden_fcs = mlp2(HIDDEN, HIDDEN, d, nn.ReLU())
        self.target_head = mlp2(d, d, 1, nn.ReLU())
        self.q = nn.Linear(HIDDEN, SELECT_DIM)
        self.k = nn.Linear(HIDDEN, SELECT_DIM)
        self.mask_embed = nn.Parameter(torch.randn(1, d))
        self.prompt_encoder = PromptEncoder(d)
        self.decoder = MaskDecoder(sam_cfg)

    def forward(self, seg_hidden, region_hidden, valid, boxes, dense, skips, compete):
        b, r, _ = region_hidden.shape
        seg = self.text_hidden_fcs(seg_hidden)
        d = seg.shape[1]
        target = self.target_head(seg).squeeze(1)
        gh, gw = dense.shape[-2:]
        logits = (self.k(region_hidden) @ self.q(seg_hidden)[:, :, None]).squeeze(2) \
            * SELECT_DIM ** -0.5
        w = torch.sigmoid(logits)
        c = compete.to(w.dtype)
        soft = torch.softmax(logits + (c - 1) * 1e4, -1) * c
        f = c.amax(1, keepdim=True)
        w = (soft * f + w * (1 - f)) * valid
        cov = box_coverage(boxes, gh, gw)
        coverage = (w[:, None] @ cov.to(w.dtype)).reshape(b, 1, gh, gw)
        corners = self.prompt_encoder.embed_boxes(boxes.reshape(b * r, 4)).reshape(b, r, 2, d)
        corners = (corners * w.reshape(b, r, 1, 1)).reshape(b, 2 * r, d)
        sparse = torch.cat([seg[:, None], corners], 1)
        target = target + (logits + (valid - 1) * 1e4).amax(1)
        pe = self.prompt_encoder.dense_pe(gh, gw, dense.dtype)
        dense_prompt = coverage * self.mask_embed.reshape(1, d, 1, 1) \
            + self.prompt_encoder.no_mask_embed.reshape(1, d, 1, 1)
        masks, _ = self.decoder(dense, pe, sparse, dense_prompt, skips)
        return masks, target, logits
