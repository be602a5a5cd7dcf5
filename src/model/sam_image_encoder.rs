//! SAM's ViT image encoder (segment-anything `ImageEncoderViT`, the ViTDet backbone): patch
//! embedding, absolute positions, pre-LN blocks with windowed or global attention and
//! decomposed relative positions, and the convolutional neck.
//!
//! Facts about the reference that this file reproduces:
//! * Tokens stay on their `(B, H, W, C)` grid. A windowed block pads the *normalised* grid
//!   with zeros at the bottom and right to a multiple of the window, attends within each
//!   window, and drops the padding again; the padded tokens therefore enter `qkv` as zeros
//!   (their keys and values are the `qkv` bias) and are seen by the windows they fall in.
//! * Relative positions are decomposed (MViTv2): the logit of query `(y, x)` and key
//!   `(ky, kx)` gains `q·Rh[y, ky] + q·Rw[x, kx]`, with the *unscaled* query, where
//!   `R[i, j] = table[i − j + size − 1]` (`get_rel_pos`). A table whose length is not
//!   `2·size − 1` is first resized along its length with `F.interpolate(mode="linear",
//!   align_corners=False)`. Window blocks have tables for the window, global blocks for the
//!   configured grid.
//! * The logits are `(q · scale) kᵀ`: the query is scaled before the product.
//! * GELU is the exact `erf` form; the blocks' LayerNorm eps comes from the config (1e-6 in
//!   SAM's builders); the neck is conv 1×1 (no bias), LayerNorm2d (eps 1e-6), conv 3×3
//!   padding 1 (no bias), LayerNorm2d.
//! * The absolute position table is added as is: the reference has no interpolation, so
//!   with `use_abs_pos` the patch grid must be the configured one.
//!
//! Computation: every window of a block goes through one batched attention call. The
//! relative positions ride inside the attention's dot product: the query gets the
//! `kh + kw` values `q·Rh[y, ·]`, `q·Rw[x, ·]` appended and the key the one-hot codes of its
//! row and column, so the fused kernel adds them to the logits without a `Sq × Sk` bias.
//! `qkv` and `proj` run on the unpadded grid (padding rows of `qkv` are its bias; padded
//! outputs are dropped before `proj`), which is the same arithmetic per token. Attention
//! runs in f32 for f16/bf16 weights.
//!
//! Checkpoint keys (relative to the encoder): `pos_embed`, `patch_embed.proj.{weight,bias}`,
//! `blocks.N.{norm1,norm2}.*`, `blocks.N.attn.{qkv,proj}.*`, `blocks.N.attn.rel_pos_{h,w}`,
//! `blocks.N.mlp.{lin1,lin2}.*`, `neck.{0,2}.weight`, `neck.{1,3}.{weight,bias}`.

use candle_core::{DType, Tensor, D};
use candle_nn::{Init, VarBuilder};

use crate::config::{Activation, SamImageEncoderConfig};
use crate::error::{Error, Result};
use crate::model::nn::{activation, patch_conv2d, LayerNorm, Linear};
use crate::ops::attention::{attention, AttnMask};

/// The neck's LayerNorm2d eps (segment-anything's default, whatever the blocks use).
const NECK_EPS: f64 = 1e-6;

/// The dtype attention is computed in: f32 for the half types, the model's otherwise.
fn compute_dtype(dtype: DType) -> DType {
    match dtype {
        DType::F16 | DType::BF16 => DType::F32,
        d => d,
    }
}

/// The `(out, in)` matrix of PyTorch's 1-D linear resize with `align_corners=False`: source
/// coordinate `(i + ½)·in/out − ½`, clamped below at 0; two taps, the upper one clamped to
/// the last index. Computed in f32 as PyTorch does for f32 input.
fn linear_resize_matrix(in_size: usize, out_size: usize) -> Vec<f32> {
    let scale = in_size as f32 / out_size as f32;
    let mut m = vec![0f32; out_size * in_size];
    for (i, row) in m.chunks_exact_mut(in_size).enumerate() {
        let src = (scale * (i as f32 + 0.5) - 0.5).max(0.0);
        let i0 = (src as usize).min(in_size - 1);
        let i1 = (i0 + 1).min(in_size - 1);
        let t = (src - i0 as f32).clamp(0.0, 1.0);
        row[i0] += 1.0 - t;
        row[i1] += t;
    }
    m
}

/// segment-anything's `get_rel_pos`: the `(q_size, k_size, C)` embeddings of the relative
/// positions between `q_size` queries and `k_size` keys along one axis, from a `(L, C)`
/// table (resized linearly to `2·max(q, k) − 1` entries when `L` differs).
fn get_rel_pos(q_size: usize, k_size: usize, table: &Tensor) -> Result<Tensor> {
    let (len, c) = table.dims2()?;
    let max_dist = 2 * q_size.max(k_size) - 1;
    let resized = if len != max_dist {
        if len == 0 {
            return Err(Error::shape("get_rel_pos", "empty relative-position table"));
        }
        let m = Tensor::from_vec(
            linear_resize_matrix(len, max_dist),
            (max_dist, len),
            table.device(),
        )?;
        m.matmul(&table.to_dtype(DType::F32)?.contiguous()?)?
            .to_dtype(table.dtype())?
    } else {
        table.clone()
    };
    // The reference's coordinates are f32 tensors, truncated to integers.
    let (qs, ks) = (q_size as f32, k_size as f32);
    let (q_step, k_step) = ((ks / qs).max(1.0), (qs / ks).max(1.0));
    let offset = (k_size - 1) as f32 * k_step;
    let idx: Vec<u32> = (0..q_size)
        .flat_map(|i| {
            (0..k_size).map(move |j| ((i as f32 * q_step - j as f32 * k_step) + offset) as u32)
        })
        .collect();
    let idx = Tensor::from_vec(idx, q_size * k_size, table.device())?;
    Ok(resized
        .index_select(&idx, 0)?
        .reshape((q_size, k_size, c))?)
}

/// Pads a `(B, H, W, C)` grid at the bottom and right by `(ph, pw)` with `fill` (a `(C,)`
/// row) or zeros.
fn pad_bottom_right(x: &Tensor, ph: usize, pw: usize, fill: Option<&Tensor>) -> Result<Tensor> {
    let (b, h, w, c) = x.dims4()?;
    let block = |hh: usize, ww: usize| -> Result<Tensor> {
        Ok(match fill {
            Some(f) => f
                .reshape((1, 1, 1, c))?
                .broadcast_as((b, hh, ww, c))?
                .contiguous()?,
            None => Tensor::zeros((b, hh, ww, c), x.dtype(), x.device())?,
        })
    };
    let mut x = x.clone();
    if pw > 0 {
        x = Tensor::cat(&[&x, &block(h, pw)?], 2)?;
    }
    if ph > 0 {
        x = Tensor::cat(&[&x, &block(ph, w + pw)?], 1)?;
    }
    Ok(x)
}

/// `window_partition`: `(B, H, W, C)` → `(B·nH·nW, ws·ws, C)` windows in row-major window
/// order, after padding the grid at the bottom and right (with `fill` or zeros) to
/// `(Hp, Wp)`, multiples of `ws`. Returns the windows and `(Hp, Wp)`.
fn window_partition(
    x: &Tensor,
    ws: usize,
    fill: Option<&Tensor>,
) -> Result<(Tensor, (usize, usize))> {
    let (b, h, w, c) = x.dims4()?;
    let (ph, pw) = ((ws - h % ws) % ws, (ws - w % ws) % ws);
    let (hp, wp) = (h + ph, w + pw);
    let x = pad_bottom_right(x, ph, pw, fill)?;
    let windows = x
        .reshape((b, hp / ws, ws, wp / ws, ws, c))?
        .permute((0, 1, 3, 2, 4, 5))?
        .contiguous()?
        .reshape((b * (hp / ws) * (wp / ws), ws * ws, c))?;
    Ok((windows, (hp, wp)))
}

/// `window_unpartition`: `(B·nH·nW, ws·ws, C)` → `(B, H, W, C)`, dropping the padding.
fn window_unpartition(
    windows: &Tensor,
    ws: usize,
    (hp, wp): (usize, usize),
    (h, w): (usize, usize),
) -> Result<Tensor> {
    let (n, _, c) = windows.dims3()?;
    let b = n / ((hp / ws) * (wp / ws));
    let x = windows
        .reshape((b, hp / ws, wp / ws, ws, ws, c))?
        .permute((0, 1, 3, 2, 4, 5))?
        .contiguous()?
        .reshape((b, hp, wp, c))?;
    Ok(if hp > h || wp > w {
        x.narrow(1, 0, h)?.narrow(2, 0, w)?.contiguous()?
    } else {
        x
    })
}

/// Multi-head attention over `(N, sh·sw, ·)` token grids with decomposed relative positions.
#[derive(Debug, Clone)]
struct Attention {
    qkv: Linear,
    proj: Linear,
    /// `(rel_pos_h, rel_pos_w)`, each `(2·size − 1, head_dim)`.
    rel_pos: Option<(Tensor, Tensor)>,
    heads: usize,
    head_dim: usize,
}

impl Attention {
    fn new(cfg: &SamImageEncoderConfig, size: usize, vb: VarBuilder) -> Result<Self> {
        let (d, hd) = (cfg.embed_dim, cfg.head_dim());
        let rel_pos = if cfg.use_rel_pos {
            let len = 2 * size - 1;
            Some((
                vb.get_with_hints((len, hd), "rel_pos_h", Init::Const(0.0))?,
                vb.get_with_hints((len, hd), "rel_pos_w", Init::Const(0.0))?,
            ))
        } else {
            None
        };
        Ok(Self {
            qkv: Linear::new(d, 3 * d, cfg.qkv_bias, vb.pp("qkv"))?,
            proj: Linear::new(d, d, true, vb.pp("proj"))?,
            rel_pos,
            heads: cfg.num_heads,
            head_dim: hd,
        })
    }

    /// What a zero (padding) token gives out of `qkv`: its bias, or zeros.
    fn qkv_of_zero(&self) -> Option<&Tensor> {
        self.qkv.bias()
    }

    /// `qkv: (N, sh·sw, 3C)` (the `qkv` projection of each grid) → `(N, sh·sw, C)` before
    /// `proj`, in `qkv`'s dtype.
    fn attend(&self, qkv: &Tensor, (sh, sw): (usize, usize)) -> Result<Tensor> {
        let (n, s, _) = qkv.dims3()?;
        let (nh, hd) = (self.heads, self.head_dim);
        let dtype = qkv.dtype();
        let cdt = compute_dtype(dtype);
        let qkv = qkv.to_dtype(cdt)?.reshape((n, s, 3, nh, hd))?;
        let part = |i: usize| -> Result<Tensor> {
            Ok(qkv
                .narrow(2, i, 1)?
                .squeeze(2)?
                .transpose(1, 2)?
                .contiguous()?)
        };
        let (q, k, v) = (part(0)?, part(1)?, part(2)?); // (N, nh, S, hd)
        let scaled = (&q * (hd as f64).powf(-0.5))?;
        let (q, k) = match &self.rel_pos {
            None => (scaled, k),
            Some((th, tw)) => {
                let (rel_h, rel_w) = self.rel_logits(&q, th, tw, (sh, sw))?;
                let codes = one_hot_rows_cols(sh, sw, cdt, q.device())?
                    .broadcast_as((n, nh, s, sh + sw))?
                    .contiguous()?;
                (
                    Tensor::cat(&[&scaled, &rel_h, &rel_w], D::Minus1)?,
                    Tensor::cat(&[&k, &codes], D::Minus1)?,
                )
            }
        };
        let o = attention(&q, &k, &v, AttnMask::None, 1.0)?; // (N, nh, S, hd)
        Ok(o.transpose(1, 2)?
            .reshape((n, s, nh * hd))?
            .to_dtype(dtype)?)
    }

    /// `add_decomposed_rel_pos`'s `rel_h` `(N, nh, S, sh)` and `rel_w` `(N, nh, S, sw)` for
    /// the unscaled queries `q: (N, nh, sh·sw, hd)`.
    fn rel_logits(
        &self,
        q: &Tensor,
        table_h: &Tensor,
        table_w: &Tensor,
        (sh, sw): (usize, usize),
    ) -> Result<(Tensor, Tensor)> {
        let (n, nh, s, hd) = q.dims4()?;
        let m = n * nh;
        let cdt = q.dtype();
        let rh = get_rel_pos(sh, sh, &table_h.to_dtype(cdt)?)?; // (sh, kh, hd)
        let rw = get_rel_pos(sw, sw, &table_w.to_dtype(cdt)?)?; // (sw, kw, hd)
        let q4 = q.reshape((m, sh, sw, hd))?;
        // rel_h[m, y, x, ky] = Σc q[m, y, x, c]·Rh[y, ky, c]: one product per query row y.
        let rel_h = q4
            .transpose(0, 1)?
            .contiguous()?
            .reshape((sh, m * sw, hd))?
            .matmul(&rh.transpose(1, 2)?.contiguous()?)?
            .reshape((sh, m, sw, sh))?
            .transpose(0, 1)?
            .contiguous()?
            .reshape((n, nh, s, sh))?;
        // rel_w[m, y, x, kx] = Σc q[m, y, x, c]·Rw[x, kx, c]: one product per query column x.
        let rel_w = q4
            .permute((2, 0, 1, 3))?
            .contiguous()?
            .reshape((sw, m * sh, hd))?
            .matmul(&rw.transpose(1, 2)?.contiguous()?)?
            .reshape((sw, m, sh, sw))?
            .permute((1, 2, 0, 3))?
            .contiguous()?
            .reshape((n, nh, s, sw))?;
        Ok((rel_h, rel_w))
    }
}

/// `(sh·sw, sh + sw)`: for key `(ky, kx)` a one at column `ky` and one at `sh + kx`, so that
/// a query carrying `[rel_h | rel_w]` picks up `rel_h[ky] + rel_w[kx]` in its dot product.
fn one_hot_rows_cols(
    sh: usize,
    sw: usize,
    dtype: DType,
    dev: &candle_core::Device,
) -> Result<Tensor> {
    let width = sh + sw;
    let mut codes = vec![0f32; sh * sw * width];
    for (j, row) in codes.chunks_exact_mut(width).enumerate() {
        row[j / sw] = 1.0;
        row[sh + j % sw] = 1.0;
    }
    Ok(Tensor::from_vec(codes, (sh * sw, width), dev)?.to_dtype(dtype)?)
}

#[derive(Debug, Clone)]
struct Block {
    norm1: LayerNorm,
    attn: Attention,
    norm2: LayerNorm,
    lin1: Linear,
    lin2: Linear,
    /// 0 for global attention.
    window: usize,
}

impl Block {
    fn new(cfg: &SamImageEncoderConfig, window: usize, vb: VarBuilder) -> Result<Self> {
        let (d, eps) = (cfg.embed_dim, cfg.layer_norm_eps);
        let size = if window > 0 { window } else { cfg.grid() };
        let mlp = vb.pp("mlp");
        Ok(Self {
            norm1: LayerNorm::new(d, eps, vb.pp("norm1"))?,
            attn: Attention::new(cfg, size, vb.pp("attn"))?,
            norm2: LayerNorm::new(d, eps, vb.pp("norm2"))?,
            lin1: Linear::new(d, cfg.mlp_dim(), true, mlp.pp("lin1"))?,
            lin2: Linear::new(cfg.mlp_dim(), d, true, mlp.pp("lin2"))?,
            window,
        })
    }

    /// `x: (B, H, W, C)` → `(B, H, W, C)`. The per-token layers run on `(B·H·W, C)` rows
    /// (one large product each).
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, h, w, c) = x.dims4()?;
        let rows = x.reshape((b * h * w, c))?;
        let qkv = self
            .attn
            .qkv
            .forward(&self.norm1.forward(&rows)?)?
            .reshape((b, h, w, 3 * c))?;
        let o = if self.window > 0 {
            let ws = self.window;
            let (windows, padded) = window_partition(&qkv, ws, self.attn.qkv_of_zero())?;
            let o = self.attn.attend(&windows, (ws, ws))?;
            window_unpartition(&o, ws, padded, (h, w))?
        } else {
            self.attn.attend(&qkv.reshape((b, h * w, 3 * c))?, (h, w))?
        };
        let rows = (rows + self.attn.proj.forward(&o.reshape((b * h * w, c))?)?)?;
        let y = activation(
            &self.lin1.forward(&self.norm2.forward(&rows)?)?,
            Activation::Gelu,
        )?;
        Ok((&rows + self.lin2.forward(&y)?)?.reshape((b, h, w, c))?)
    }
}

/// segment-anything's `ImageEncoderViT`.
#[derive(Debug, Clone)]
pub struct SamImageEncoder {
    patch_weight: Tensor,
    patch_bias: Tensor,
    /// `(1, g, g, C)`.
    pos_embed: Option<Tensor>,
    blocks: Vec<Block>,
    /// `neck.0` as a `(out, C)` matrix.
    neck_conv1: Tensor,
    neck_norm1: LayerNorm,
    /// `neck.2` as an `(out, 3·3·out)` matrix in `(ky, kx, c)` order.
    neck_conv2: Tensor,
    neck_norm2: LayerNorm,
    in_chans: usize,
    patch_size: usize,
    grid: usize,
    use_abs_pos: bool,
}

impl SamImageEncoder {
    /// `vb` sits where the encoder's keys start (`visual_model.image_encoder` in an EVF-SAM
    /// checkpoint, `image_encoder` in a SAM one).
    pub fn new(cfg: &SamImageEncoderConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate("sam_image_encoder")?;
        let (d, p, g, out) = (cfg.embed_dim, cfg.patch_size, cfg.grid(), cfg.out_chans);
        let conv_init = candle_nn::init::DEFAULT_KAIMING_NORMAL;
        let pe = vb.pp("patch_embed").pp("proj");
        let patch_weight = pe.get_with_hints((d, cfg.in_chans, p, p), "weight", conv_init)?;
        let patch_bias = pe.get_with_hints(d, "bias", Init::Const(0.0))?;
        let pos_embed = if cfg.use_abs_pos {
            Some(vb.get_with_hints((1, g, g, d), "pos_embed", Init::Const(0.0))?)
        } else {
            None
        };
        let vblocks = vb.pp("blocks");
        let blocks = (0..cfg.depth)
            .map(|i| {
                let global = cfg.global_attn_indexes.contains(&i);
                let window = if global { 0 } else { cfg.window_size };
                Block::new(cfg, window, vblocks.pp(i))
            })
            .collect::<Result<Vec<_>>>()?;
        let neck = vb.pp("neck");
        let neck_conv1 = neck
            .pp("0")
            .get_with_hints((out, d, 1, 1), "weight", conv_init)?
            .reshape((out, d))?;
        let neck_conv2 = neck
            .pp("2")
            .get_with_hints((out, out, 3, 3), "weight", conv_init)?
            .permute((0, 2, 3, 1))?
            .contiguous()?
            .reshape((out, 9 * out))?;
        Ok(Self {
            patch_weight,
            patch_bias,
            pos_embed,
            blocks,
            neck_conv1,
            neck_norm1: LayerNorm::new(out, NECK_EPS, neck.pp("1"))?,
            neck_conv2,
            neck_norm2: LayerNorm::new(out, NECK_EPS, neck.pp("3"))?,
            in_chans: cfg.in_chans,
            patch_size: p,
            grid: g,
            use_abs_pos: cfg.use_abs_pos,
        })
    }

    /// Side of the image embedding at the configured input size.
    pub fn grid(&self) -> usize {
        self.grid
    }

    /// The dtype of the weights (inputs are cast to it).
    pub fn dtype(&self) -> DType {
        self.patch_weight.dtype()
    }

    fn check_input(&self, x: &Tensor) -> Result<()> {
        crate::ops::require_float(x, "SamImageEncoder", "pixel_values")?;
        let want = self.grid * self.patch_size;
        let bad = || {
            let size = if self.use_abs_pos {
                format!("{want}x{want}")
            } else {
                format!("at least {p}x{p}", p = self.patch_size)
            };
            Error::shape(
                "SamImageEncoder",
                format!(
                    "pixel_values {:?}: expected (B ≥ 1, {}, H, W) with H×W {size}",
                    x.dims(),
                    self.in_chans
                ),
            )
        };
        let (b, c, h, w) = x.dims4().map_err(|_| bad())?;
        let p = self.patch_size;
        let grid_ok = if self.use_abs_pos {
            // The position table is not interpolated: the patch grid must be the trained one.
            h / p == self.grid && w / p == self.grid
        } else {
            h >= p && w >= p
        };
        if b == 0 || c != self.in_chans || !grid_ok {
            return Err(bad());
        }
        Ok(())
    }

    /// `pixel_values: (B, in_chans, S, S)`, normalised (SAM's `preprocess`) → image
    /// embeddings `(B, out_chans, S/p, S/p)`. Without absolute positions other sizes work as
    /// in the reference (the global blocks' tables are resized).
    pub fn forward(&self, pixel_values: &Tensor) -> Result<Tensor> {
        self.check_input(pixel_values)?;
        let x = pixel_values.to_dtype(self.dtype())?;
        let mut x = patch_conv2d(&x, &self.patch_weight, Some(&self.patch_bias))?;
        if let Some(pos) = &self.pos_embed {
            x = x.broadcast_add(pos)?;
        }
        for block in &self.blocks {
            x = block.forward(&x)?;
        }
        self.neck(&x)
    }

    /// `(B, H, W, C)` → `(B, out, H, W)`, convolutions as matmuls on channels-last rows.
    fn neck(&self, x: &Tensor) -> Result<Tensor> {
        let (b, h, w, c) = x.dims4()?;
        let out = self.neck_conv1.dim(0)?;
        let y = x
            .reshape((b * h * w, c))?
            .matmul(&self.neck_conv1.t()?)?
            .reshape((b, h, w, out))?;
        let y = self.neck_norm1.forward(&y)?;
        // 3×3, padding 1: the nine shifted views side by side, then one product.
        let padded = y.pad_with_zeros(1, 1, 1)?.pad_with_zeros(2, 1, 1)?;
        let mut taps = Vec::with_capacity(9);
        for dy in 0..3 {
            for dx in 0..3 {
                taps.push(padded.narrow(1, dy, h)?.narrow(2, dx, w)?);
            }
        }
        let cols = Tensor::cat(&taps, D::Minus1)?.reshape((b * h * w, 9 * out))?;
        let y = cols
            .matmul(&self.neck_conv2.t()?)?
            .reshape((b, h, w, out))?;
        let y = self.neck_norm2.forward(&y)?;
        Ok(y.permute((0, 3, 1, 2))?.contiguous()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use candle_nn::VarMap;

    fn max_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
        Ok((a - b)?.abs()?.max_all()?.to_scalar::<f32>()?)
    }

    #[test]
    fn get_rel_pos_matches_reference_values() -> Result<()> {
        let dev = Device::Cpu;
        let flat = |t: Tensor| -> Result<Vec<f32>> { Ok(t.flatten_all()?.to_vec1::<f32>()?) };
        let close = |got: Vec<f32>, want: &[f32]| {
            assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(want) {
                assert!((g - w).abs() < 1e-5, "{got:?} vs {want:?}");
            }
        };
        // segment-anything's get_rel_pos on tables 0..L (torch 2.1.2): L = 7 is resized
        // linearly to the 5 entries that 3 positions need; L = 5 is used as is.
        let table = |l: usize| Tensor::arange(0f32, l as f32, &dev)?.reshape((l, 1));
        close(
            flat(get_rel_pos(3, 3, &table(7)?)?)?,
            &[3.0, 1.6, 0.2, 4.4, 3.0, 1.6, 5.8, 4.4, 3.0],
        );
        close(
            flat(get_rel_pos(3, 3, &table(5)?)?)?,
            &[2.0, 1.0, 0.0, 3.0, 2.0, 1.0, 4.0, 3.0, 2.0],
        );
        // Unequal query and key lengths scale the shorter axis.
        close(
            flat(get_rel_pos(2, 4, &table(7)?)?)?,
            &[3.0, 2.0, 1.0, 0.0, 5.0, 4.0, 3.0, 2.0],
        );
        // Upsampling a (3, 2) table to 5 rows, both channels.
        let t = Tensor::new(&[[0f32, 1.0], [1.0, -2.0], [4.0, 0.5]], &dev)?;
        let r = get_rel_pos(3, 3, &t)?;
        close(
            flat(r.narrow(2, 0, 1)?)?,
            &[1.0, 0.4, 0.0, 2.8, 1.0, 0.4, 4.0, 2.8, 1.0],
        );
        close(
            flat(r.narrow(2, 1, 1)?)?,
            &[-2.0, -0.2, 1.0, -0.5, -2.0, -0.2, 0.5, -0.5, -2.0],
        );
        Ok(())
    }

    #[test]
    fn window_partition_pads_and_unpartition_restores() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (2, 5, 7, 3), &dev)?;
        let fill = Tensor::new(&[7f32, 8.0, 9.0], &dev)?;
        let (windows, padded) = window_partition(&x, 3, Some(&fill))?;
        // 5×7 pads to 6×9: 2×3 windows of 9 tokens per image.
        assert_eq!(padded, (6, 9));
        assert_eq!(windows.dims(), &[12, 9, 3]);
        // Window (0, 0) of image 1 is x[1, 0..3, 0..3] in row-major order.
        let want = x
            .get(1)?
            .narrow(0, 0, 3)?
            .narrow(1, 0, 3)?
            .reshape((9, 3))?;
        assert_eq!(max_diff(&windows.get(6)?, &want)?, 0.0);
        // The last window of image 0 covers rows 3..6 and columns 6..9: row 5 and columns
        // 7, 8 are padding.
        let last = windows.get(5)?.reshape((3, 3, 3))?;
        let pad = fill.reshape((1, 1, 3))?.broadcast_as((1, 3, 3))?;
        assert_eq!(max_diff(&last.narrow(0, 2, 1)?, &pad)?, 0.0);
        let pad = fill.reshape((1, 1, 3))?.broadcast_as((2, 2, 3))?;
        assert_eq!(
            max_diff(&last.narrow(0, 0, 2)?.narrow(1, 1, 2)?, &pad)?,
            0.0
        );
        let back = window_unpartition(&windows, 3, padded, (5, 7))?;
        assert_eq!(back.dims(), x.dims());
        assert_eq!(max_diff(&back, &x)?, 0.0);
        // Zero padding without a fill row.
        let (w0, _) = window_partition(&x, 4, None)?;
        let tail = w0.get(3)?.reshape((4, 4, 3))?.narrow(0, 1, 3)?;
        assert_eq!(tail.abs()?.max_all()?.to_scalar::<f32>()?, 0.0);
        Ok(())
    }

    /// The one-hot-augmented attention equals the reference's composition: logits
    /// `(q·scale) kᵀ`, plus `rel_h` broadcast over key columns and `rel_w` over key rows,
    /// softmax, times `v`; on a non-square grid whose tables need resizing.
    #[test]
    fn augmented_attention_equals_explicit_rel_pos_logits() -> Result<()> {
        let dev = Device::Cpu;
        let (nh, hd, sh, sw, n) = (2, 4, 3, 5, 2);
        let cfg = SamImageEncoderConfig {
            img_size: 32,
            patch_size: 8,
            embed_dim: nh * hd,
            num_heads: nh,
            depth: 1,
            window_size: 0,
            ..SamImageEncoderConfig::vit_b()
        };
        let varmap = VarMap::new();
        let attn = Attention::new(&cfg, 4, VarBuilder::from_varmap(&varmap, DType::F32, &dev))?;
        let (th, tw) = (
            Tensor::randn(0f32, 1.0, (7, hd), &dev)?,
            Tensor::randn(0f32, 1.0, (7, hd), &dev)?,
        );
        let attn = Attention {
            rel_pos: Some((th.clone(), tw.clone())),
            ..attn
        };
        let s = sh * sw;
        let qkv = Tensor::randn(0f32, 1.0, (n, s, 3 * nh * hd), &dev)?;
        let got = attn.attend(&qkv, (sh, sw))?;

        let qkv5 = qkv.reshape((n, s, 3, nh, hd))?;
        let part = |i: usize| -> Result<Tensor> {
            Ok(qkv5
                .narrow(2, i, 1)?
                .squeeze(2)?
                .transpose(1, 2)?
                .contiguous()?)
        };
        let (q, k, v) = (part(0)?, part(1)?, part(2)?);
        let logits = (&q * (hd as f64).powf(-0.5))?.matmul(&k.t()?)?;
        let (rel_h, rel_w) = attn.rel_logits(&q, &th, &tw, (sh, sw))?;
        let logits = logits
            .reshape((n, nh, sh, sw, sh, sw))?
            .broadcast_add(&rel_h.reshape((n, nh, sh, sw, sh, 1))?)?
            .broadcast_add(&rel_w.reshape((n, nh, sh, sw, 1, sw))?)?
            .reshape((n, nh, s, s))?;
        let p = candle_nn::ops::softmax_last_dim(&logits)?;
        let want = p.matmul(&v)?.transpose(1, 2)?.reshape((n, s, nh * hd))?;
        let d = max_diff(&got, &want)?;
        assert!(d < 1e-5, "augmented vs explicit: {d}");
        Ok(())
    }

    #[test]
    fn bad_inputs_are_typed_errors() -> Result<()> {
        let dev = Device::Cpu;
        let cfg = SamImageEncoderConfig {
            img_size: 32,
            patch_size: 8,
            embed_dim: 8,
            num_heads: 2,
            depth: 2,
            out_chans: 4,
            window_size: 3,
            global_attn_indexes: vec![1],
            ..SamImageEncoderConfig::vit_b()
        };
        let enc = SamImageEncoder::new(&cfg, VarBuilder::zeros(DType::F32, &dev))?;
        let ok = enc.forward(&Tensor::zeros((2, 3, 32, 32), DType::F32, &dev)?)?;
        assert_eq!(ok.dims(), &[2, 4, 4, 4]);
        for dims in [
            &[1, 3, 32, 24][..],
            &[1, 1, 32, 32],
            &[0, 3, 32, 32],
            &[3, 32, 32],
        ] {
            let x = Tensor::zeros(dims, DType::F32, &dev)?;
            assert!(
                matches!(enc.forward(&x), Err(Error::BadShape { .. })),
                "{dims:?}"
            );
        }
        let x = Tensor::zeros((1, 3, 32, 32), DType::U8, &dev)?;
        assert!(matches!(enc.forward(&x), Err(Error::DTypeMismatch { .. })));
        let bad_cfg = SamImageEncoderConfig {
            global_attn_indexes: vec![2],
            ..cfg
        };
        let built = SamImageEncoder::new(&bad_cfg, VarBuilder::zeros(DType::F32, &dev));
        assert!(matches!(built, Err(Error::Config { .. })));
        Ok(())
    }
}
