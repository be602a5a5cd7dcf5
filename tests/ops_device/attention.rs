//! Attention on the test device against its reference (see the crate docs in `main.rs`).

use super::*;

#[derive(Clone, Copy, Debug, PartialEq)]
enum MaskKind {
    None,
    Causal,
    /// `(B, 1, Sq, Sk)` values in [-2, 2), −inf on the last third of the keys of batch 1+.
    Additive,
}

struct AttnCase {
    b: usize,
    h: usize,
    hkv: usize,
    sq: usize,
    sk: usize,
    d: usize,
    dv: usize,
    mask: MaskKind,
}

impl std::fmt::Display for AttnCase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "b{} h{}/{} sq{} sk{} d{} dv{} {:?}",
            self.b, self.h, self.hkv, self.sq, self.sk, self.d, self.dv, self.mask
        )
    }
}

fn attn_case(r: &mut Rng, additive_ok: bool) -> AttnCase {
    let hkv = r.int(1, 3);
    let h = hkv * r.int(1, 3);
    let d = r.pick(&[8, 16, 24, 33, 40, 64, 80, 96, 128, 160]);
    let dv = if r.coin() {
        d
    } else {
        r.pick(&[8, 20, 32, 48, 64])
    };
    let sk = r.pick(&[1, 7, 16, 33, 64, 129, 200, 301]);
    let sq = if r.coin() { sk } else { r.int(1, 97) };
    let mask = match r.int(0, if additive_ok { 2 } else { 1 }) {
        0 => MaskKind::None,
        1 => MaskKind::Causal,
        _ => MaskKind::Additive,
    };
    AttnCase {
        b: r.int(1, 3),
        h,
        hkv,
        sq,
        sk,
        d,
        dv,
        mask,
    }
}

/// The additive mask of `c` (f32) on the CPU.
fn additive_mask(c: &AttnCase, seed: u64) -> Res<Tensor> {
    let mut v: Vec<f32> = values(c.b * c.sq * c.sk, seed)
        .into_iter()
        .map(|x| x * 2.0)
        .collect();
    for bi in 1..c.b {
        for i in 0..c.sq {
            for j in c.sk - c.sk / 3..c.sk {
                v[(bi * c.sq + i) * c.sk + j] = f32::NEG_INFINITY;
            }
        }
    }
    Ok(Tensor::from_vec(v, (c.b, 1, c.sq, c.sk), &Device::Cpu)?)
}

fn attn_mask<'a>(kind: MaskKind, m: &'a Tensor) -> AttnMask<'a> {
    match kind {
        MaskKind::None => AttnMask::None,
        MaskKind::Causal => AttnMask::Causal,
        MaskKind::Additive => AttnMask::Additive(m),
    }
}

/// The op under test: the fused kernel, or with an additive mask the dispatcher (the GPU
/// kernels take none; on the CPU it runs the fused kernel from 16 keys).
fn attn_op(q: &Tensor, k: &Tensor, v: &Tensor, mask: AttnMask, scale: f64) -> Res<Tensor> {
    Ok(match mask {
        AttnMask::Additive(_) => attention(q, k, v, mask, scale)?,
        _ => attention_fused(q, k, v, mask, scale)?,
    })
}

#[test]
fn attention_forward() {
    let s = setup("attention_forward");
    let mut rep = Report::new("attention_forward");
    for (di, dtype) in DTYPES.into_iter().enumerate() {
        let mut r = Rng::new(s.seed, 1 + di as u64);
        for i in 0..s.cases {
            // Additive masks in f32 only: on a GPU they take the plain composition, whose
            // half-precision scores and probabilities are rounded (not a kernel property).
            let c = attn_case(&mut r, dtype == DType::F32);
            let strided = i % 2 == 1;
            let what = format!("attention {c} {} {}", name(dtype), layout(strided));
            let res = (|| -> Res<()> {
                let seed = 1000 * i as u64;
                let (qc, qd) = input(&s, &[c.b, c.h, c.sq, c.d], seed, 2.0, dtype, strided)?;
                let (kc, kd) = input(&s, &[c.b, c.hkv, c.sk, c.d], seed + 1, 2.0, dtype, strided)?;
                let (vc, vd) = input(&s, &[c.b, c.hkv, c.sk, c.dv], seed + 2, 1.0, dtype, strided)?;
                let mc = additive_mask(&c, seed + 3)?;
                let md = mc.to_device(&s.dev)?;
                let scale = 1.0 / (c.d as f64).sqrt();
                let got = attn_op(&qd, &kd, &vd, attn_mask(c.mask, &md), scale)?;
                if got.dtype() != dtype {
                    return Err(format!("output dtype {:?}", got.dtype()).into());
                }
                let want = if s.gpu {
                    attn_op(&qc, &kc, &vc, attn_mask(c.mask, &mc), scale)?
                } else {
                    let f = |t: &Tensor| t.to_dtype(DType::F32);
                    attention_plain(&f(&qc)?, &f(&kc)?, &f(&vc)?, attn_mask(c.mask, &mc), scale)?
                };
                rep.compare(&what, &got, &want, fwd_tol(dtype))
            })();
            rep.error(&what, res);
        }
    }
    rep.finish();
}

/// Gradients of `sum(attention(q, k, v) · g)` with respect to q, k and v: `attention` takes
/// the plain composition when inputs track gradients, so this checks candle's backward of
/// that composition on the device against the CPU.
#[test]
fn attention_backward() {
    let s = setup("attention_backward");
    let mut rep = Report::new("attention_backward");
    if !s.gpu {
        rep.skip(
            "attention gradients",
            "tracked inputs take the plain composition, on the CPU that would be compared with itself",
        );
        rep.finish();
        return;
    }
    let mut r = Rng::new(s.seed, 10);
    for i in 0..s.cases {
        let c = attn_case(&mut r, true);
        let what = format!("attention grads {c} f32");
        let res = (|| -> Res<()> {
            let seed = 2000 * i as u64;
            let f32 = DType::F32;
            let (qc, qd) = input(&s, &[c.b, c.h, c.sq, c.d], seed, 2.0, f32, false)?;
            let (kc, kd) = input(&s, &[c.b, c.hkv, c.sk, c.d], seed + 1, 2.0, f32, false)?;
            let (vc, vd) = input(&s, &[c.b, c.hkv, c.sk, c.dv], seed + 2, 1.0, f32, false)?;
            let (gc, gd) = input(&s, &[c.b, c.h, c.sq, c.dv], seed + 3, 1.0, f32, i % 2 == 1)?;
            let mc = additive_mask(&c, seed + 4)?;
            let md = mc.to_device(&s.dev)?;
            let scale = 1.0 / (c.d as f64).sqrt();
            let grads = |q: &Tensor, k: &Tensor, v: &Tensor, g: &Tensor, m: &Tensor| {
                let (q, k, v) = (
                    Var::from_tensor(q)?,
                    Var::from_tensor(k)?,
                    Var::from_tensor(v)?,
                );
                let y = attention(&q, &k, &v, attn_mask(c.mask, m), scale)?;
                let gs = (y * g)?.sum_all()?.backward()?;
                let get = |x: &Var| gs.get(x).cloned().ok_or("no gradient");
                Res::Ok([get(&q)?, get(&k)?, get(&v)?])
            };
            let got = grads(&qd, &kd, &vd, &gd, &md)?;
            let want = grads(&qc, &kc, &vc, &gc, &mc)?;
            for (n, (a, b)) in ["q", "k", "v"].iter().zip(got.iter().zip(&want)) {
                rep.compare(&format!("{what} ∂{n}"), a, b, grad_tol(f32))?;
            }
            Ok(())
        })();
        rep.error(&what, res);
    }
    rep.finish();
}
