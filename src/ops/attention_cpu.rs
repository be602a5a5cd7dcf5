//! The fused attention kernel on the CPU: flash-attention's online softmax (Dao et al., 2022)
//! over blocks of keys, per block of queries, so the `Sq × Sk` score matrix never exists.
//!
//! Work is split by rayon over batch × heads × query blocks. Each task keeps its queries
//! (pre-scaled, packed in panels of [`MR`] rows), a running row maximum and sum, and an f32
//! accumulator of the output rows; for each block of [`BK`] keys it computes the scores with a
//! register-tiled [`MR`]×[`NR`] micro-kernel, updates the softmax statistics, and accumulates
//! `P · V` with the same micro-kernel. Keys are transposed once per call (`O(Sk · D)` extra
//! memory) so that both products stream contiguous rows.

use std::sync::Arc;

use rayon::prelude::*;

use super::cpu::{exp, simd_dispatch, Elem, FloatSlice, Fma};
use super::params::Dims;

/// Rows of the micro-kernel's register tile.
const MR: usize = 6;
/// Columns of the micro-kernel's register tile (two AVX vectors).
const NR: usize = 16;
/// Queries per task.
pub(crate) const BQ: usize = 8 * MR;
/// Keys per block.
const BK: usize = 256;

/// An additive mask broadcast to `(B, H, Sq, Sk)` through the strides of its own shape.
#[derive(Debug)]
pub(crate) struct AdditiveMask {
    pub(crate) values: Vec<f32>,
    /// Element strides for `(B, H, Sq, Sk)`; 0 along broadcast dimensions.
    pub(crate) strides: [usize; 4],
}

/// Which keys each query may see.
#[derive(Debug, Clone)]
pub(crate) enum FusedMask {
    None,
    /// Queries are the last `Sq` of `Sk` positions.
    Causal,
    Additive(Arc<AdditiveMask>),
}

/// `acc += A · B` for one register tile: `A` packed as `k` columns of [`MR`] values, `B` a
/// `k × NR` tile stored row after row.
#[inline(always)]
fn micro_packed<F: Fma>(acc: &mut [[f32; NR]; MR], a: &[f32], b: &[f32]) {
    for (av, brow) in a.chunks_exact(MR).zip(b.chunks_exact(NR)) {
        for r in 0..MR {
            for j in 0..NR {
                acc[r][j] = F::fma(av[r], brow[j], acc[r][j]);
            }
        }
    }
}

/// `acc += A · B` for one register tile: `A` as [`MR`] row slices of length `k`, `B` a
/// `k × NR` tile stored row after row.
#[inline(always)]
fn micro_rows<F: Fma>(acc: &mut [[f32; NR]; MR], a: &[&[f32]; MR], b: &[f32], k: usize) {
    for (p, brow) in b.chunks_exact(NR).take(k).enumerate() {
        for r in 0..MR {
            let av = a[r][p];
            for j in 0..NR {
                acc[r][j] = F::fma(av, brow[j], acc[r][j]);
            }
        }
    }
}

/// Copies a register tile to rows `t·MR..` of `c` at column `j0`.
#[inline(always)]
fn store_tile(acc: &[[f32; NR]; MR], c: &mut [f32], ldc: usize, t: usize, j0: usize) {
    for (r, row) in acc.iter().enumerate() {
        c[(t * MR + r) * ldc + j0..][..NR].copy_from_slice(row);
    }
}

/// Reads a register tile from rows `t·MR..` of `c` at column `j0`.
#[inline(always)]
fn load_tile(acc: &mut [[f32; NR]; MR], c: &[f32], ldc: usize, t: usize, j0: usize) {
    for (r, row) in acc.iter_mut().enumerate() {
        row.copy_from_slice(&c[(t * MR + r) * ldc + j0..][..NR]);
    }
}

/// Lane-parallel maximum (vectorisable).
#[inline(always)]
fn max_of(xs: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 8];
    let body = xs.len() / 8 * 8;
    for c in xs[..body].chunks_exact(8) {
        for j in 0..8 {
            lanes[j] = if c[j] > lanes[j] { c[j] } else { lanes[j] };
        }
    }
    let mut m = f32::NEG_INFINITY;
    for &v in lanes.iter().chain(&xs[body..]) {
        m = if v > m { v } else { m };
    }
    m
}

/// Lane-parallel sum (vectorisable).
#[inline(always)]
fn sum_of(xs: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let body = xs.len() / 8 * 8;
    for c in xs[..body].chunks_exact(8) {
        for j in 0..8 {
            lanes[j] += c[j];
        }
    }
    lanes.iter().sum::<f32>() + xs[body..].iter().sum::<f32>()
}

/// Per-thread buffers of one query block.
#[derive(Default)]
pub(crate) struct Scratch {
    q: Vec<f32>,
    s: Vec<f32>,
    acc: Vec<f32>,
    m: Vec<f32>,
    l: Vec<f32>,
}

/// Where one query block sits and what it may see.
pub(crate) struct Block<'a> {
    /// Index of the block's first query among the `Sq`.
    pub(crate) q0: usize,
    /// `Sk − Sq`: absolute position of query 0 (causal masks).
    pub(crate) offset: usize,
    pub(crate) causal: bool,
    /// The additive mask as (values, element offset of this (b, h), row stride, key stride).
    pub(crate) mask: Option<(&'a [f32], usize, usize, usize)>,
}

/// What every query block of one (batch, head) reads: the packed keys `kt` (see
/// [`pack_keys`]) and values `v` (see [`pack_values`]) of its kv head.
#[derive(Clone, Copy)]
struct Head<'a> {
    kt: &'a [f32],
    v: &'a [f32],
    dims: &'a Dims,
    /// `dv` rounded up to whole panels.
    dvp: usize,
    scale: f32,
}

/// One query block: `q` (`rows × d`) against the head's keys and values, written to `out`
/// (`rows × dv`).
#[inline(always)]
fn block_generic<F: Fma>(
    q: &[f32],
    head: &Head<'_>,
    blk: &Block,
    sc: &mut Scratch,
    out: &mut [f32],
) {
    let Head {
        kt,
        v,
        dims,
        dvp,
        scale,
    } = *head;
    let (d, dv, sk) = (dims.d, dims.dv, dims.sk);
    let rows = out.len() / dv;
    let rp = rows.div_ceil(MR) * MR;
    // Queries, scaled, in panels of MR rows (rows past `rows` are zero).
    sc.q.clear();
    sc.q.resize(rp * d, 0.0);
    for (i, qrow) in q.chunks_exact(d).take(rows).enumerate() {
        let panel = &mut sc.q[(i / MR) * d * MR..][..d * MR];
        for (p, &x) in qrow.iter().enumerate() {
            panel[p * MR + i % MR] = x * scale;
        }
    }
    sc.s.clear();
    sc.s.resize(rp * BK, 0.0);
    sc.acc.clear();
    sc.acc.resize(rp * dvp, 0.0);
    sc.m.clear();
    sc.m.resize(rows, f32::NEG_INFINITY);
    sc.l.clear();
    sc.l.resize(rows, 0.0);
    let kend = if blk.causal {
        sk.min(blk.offset + blk.q0 + rows)
    } else {
        sk
    };
    for kb in (0..kend).step_by(BK) {
        let kc = BK.min(kend - kb);
        let kcp = kc.div_ceil(NR) * NR;
        // Scores of this key block: packed queries × packed key panels.
        for j0 in (0..kcp).step_by(NR) {
            let b = &kt[(kb + j0) / NR * d * NR..][..d * NR];
            for t in 0..rp / MR {
                let mut acc = [[0f32; NR]; MR];
                micro_packed::<F>(&mut acc, &sc.q[t * d * MR..][..d * MR], b);
                store_tile(&acc, &mut sc.s, BK, t, j0);
            }
        }
        // Online softmax: scores become probabilities (relative to the running maximum).
        for r in 0..rows {
            let srow = &mut sc.s[r * BK..][..kc];
            let qi = blk.q0 + r;
            if let Some((vals, base, si, sj)) = blk.mask {
                let start = base + qi * si + kb * sj;
                if sj == 1 {
                    for (s, mv) in srow.iter_mut().zip(&vals[start..start + kc]) {
                        *s += *mv;
                    }
                } else {
                    for (j, s) in srow.iter_mut().enumerate() {
                        *s += vals[start + j * sj];
                    }
                }
            }
            // Keys [0, visible) of this block are allowed for this row.
            let visible = if blk.causal {
                (blk.offset + qi + 1).saturating_sub(kb).min(kc)
            } else {
                kc
            };
            let m_old = sc.m[r];
            let m_new = m_old.max(max_of(&srow[..visible]));
            if m_new == f32::NEG_INFINITY {
                srow.iter_mut().for_each(|x| *x = 0.0);
                continue;
            }
            for x in srow[..visible].iter_mut() {
                *x = exp::<F>(*x - m_new);
            }
            srow[visible..].iter_mut().for_each(|x| *x = 0.0);
            let alpha = if m_old == f32::NEG_INFINITY {
                0.0
            } else {
                exp::<F>(m_old - m_new)
            };
            sc.l[r] = sc.l[r] * alpha + sum_of(&srow[..visible]);
            sc.m[r] = m_new;
            if alpha != 1.0 {
                for a in sc.acc[r * dvp..][..dvp].iter_mut() {
                    *a *= alpha;
                }
            }
        }
        // Output rows += probabilities × value panels.
        for j0 in (0..dvp).step_by(NR) {
            let b = &v[(j0 / NR) * sk * NR + kb * NR..][..kc * NR];
            for t in 0..rp / MR {
                let rows: [&[f32]; MR] = std::array::from_fn(|r| &sc.s[(t * MR + r) * BK..][..kc]);
                let mut acc = [[0f32; NR]; MR];
                load_tile(&mut acc, &sc.acc, dvp, t, j0);
                micro_rows::<F>(&mut acc, &rows, b, kc);
                store_tile(&acc, &mut sc.acc, dvp, t, j0);
            }
        }
    }
    for (r, o) in out.chunks_exact_mut(dv).enumerate() {
        let inv = if sc.l[r] > 0.0 { 1.0 / sc.l[r] } else { 0.0 };
        for (x, a) in o.iter_mut().zip(&sc.acc[r * dvp..][..dv]) {
            *x = a * inv;
        }
    }
}

simd_dispatch! {
    fn block(
        q: &[f32],
        head: &Head<'_>,
        blk: &Block,
        sc: &mut Scratch,
        out: &mut [f32],
    ) = block_generic;
}

/// Keys of every (b, kv head) packed in panels of [`NR`] keys: panel `jp` holds
/// `K[jp·NR + j][p]` at `jp·d·NR + p·NR + j` (zero past `sk`).
fn pack_keys<T: Elem>(k: &[T], dims: &Dims, skp: usize) -> Vec<f32> {
    let (sk, d) = (dims.sk, dims.d);
    let mut kt = vec![0f32; dims.b * dims.hkv * d * skp];
    kt.par_chunks_mut(d * skp)
        .zip(k.par_chunks(sk * d))
        .for_each(|(dst, src)| {
            for (j, row) in src.chunks_exact(d).enumerate() {
                let panel = &mut dst[(j / NR) * d * NR..][..d * NR];
                for (p, x) in row.iter().enumerate() {
                    panel[p * NR + j % NR] = x.to_f32();
                }
            }
        });
    kt
}

/// Values of every (b, kv head) packed in panels of [`NR`] columns: panel `cp` holds
/// `V[key][cp·NR + j]` at `cp·sk·NR + key·NR + j` (zero past `dv`).
fn pack_values<T: Elem>(v: &[T], dims: &Dims, dvp: usize) -> Vec<f32> {
    let (sk, dv) = (dims.sk, dims.dv);
    let mut out = vec![0f32; dims.b * dims.hkv * sk * dvp];
    out.par_chunks_mut(sk * dvp)
        .zip(v.par_chunks(sk * dv))
        .for_each(|(dst, src)| {
            for (key, row) in src.chunks_exact(dv).enumerate() {
                for (c, x) in row.iter().enumerate() {
                    dst[(c / NR) * sk * NR + key * NR + c % NR] = x.to_f32();
                }
            }
        });
    out
}

fn packed_keys(k: FloatSlice, dims: &Dims, skp: usize) -> Vec<f32> {
    match k {
        FloatSlice::F32(k) => pack_keys(k, dims, skp),
        FloatSlice::F16(k) => pack_keys(k, dims, skp),
        FloatSlice::BF16(k) => pack_keys(k, dims, skp),
    }
}

fn packed_values(v: FloatSlice, dims: &Dims, dvp: usize) -> Vec<f32> {
    match v {
        FloatSlice::F32(v) => pack_values(v, dims, dvp),
        FloatSlice::F16(v) => pack_values(v, dims, dvp),
        FloatSlice::BF16(v) => pack_values(v, dims, dvp),
    }
}

/// The fused attention on the CPU; returns `(B, H, Sq, Dv)` as f32.
pub(crate) fn attention_cpu(
    q: FloatSlice,
    k: FloatSlice,
    v: FloatSlice,
    dims: &Dims,
    scale: f32,
    mask: &FusedMask,
) -> Vec<f32> {
    let (sq, d, dv) = (dims.sq, dims.d, dims.dv);
    let mut out = vec![0f32; dims.b * dims.h * sq * dv];
    if out.is_empty() || d == 0 || dims.sk == 0 {
        return out;
    }
    let skp = dims.sk.div_ceil(NR) * NR;
    let dvp = dv.div_ceil(NR) * NR;
    let kt = packed_keys(k, dims, skp);
    let vp = packed_values(v, dims, dvp);
    let q = q.to_f32();
    let n_rep = dims.h / dims.hkv;
    let offset = dims.sk.saturating_sub(sq);
    out.par_chunks_mut(sq * dv)
        .enumerate()
        .for_each(|(bh, head_out)| {
            let (b, h) = (bh / dims.h, bh % dims.h);
            let kv = b * dims.hkv + h / n_rep;
            let kt = &kt[kv * d * skp..][..d * skp];
            let vh = &vp[kv * dims.sk * dvp..][..dims.sk * dvp];
            let qh = &q[bh * sq * d..][..sq * d];
            head_out.par_chunks_mut(BQ * dv).enumerate().for_each_init(
                Scratch::default,
                |sc, (qb, o)| {
                    let q0 = qb * BQ;
                    let blk = Block {
                        q0,
                        offset,
                        causal: matches!(mask, FusedMask::Causal),
                        mask: match mask {
                            FusedMask::Additive(m) => Some((
                                &m.values[..],
                                b * m.strides[0] + h * m.strides[1],
                                m.strides[2],
                                m.strides[3],
                            )),
                            _ => None,
                        },
                    };
                    let qb = &qh[q0 * d..][..(o.len() / dv) * d];
                    let head = Head {
                        kt,
                        v: vh,
                        dims,
                        dvp,
                        scale,
                    };
                    block(qb, &head, &blk, sc, o);
                },
            );
        });
    out
}
