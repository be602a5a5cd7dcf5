//! Depthwise convolution on the test device against its reference (see the crate docs in `main.rs`).

use super::*;

struct ConvCase {
    b: usize,
    c: usize,
    h: usize,
    w: usize,
    kh: usize,
    kw: usize,
    pad: usize,
    bias: bool,
}

impl std::fmt::Display for ConvCase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "b{} c{} {}x{} k{}x{} pad{}{}",
            self.b,
            self.c,
            self.h,
            self.w,
            self.kh,
            self.kw,
            self.pad,
            if self.bias { " bias" } else { "" }
        )
    }
}

fn conv_case(r: &mut Rng) -> ConvCase {
    let (kh, kw): (usize, usize) = (r.pick(&[1, 3, 5, 7]), r.pick(&[1, 3, 5, 7]));
    let pad = r.int(0, 3);
    // The padded input must hold the kernel.
    let h = r.int((kh.saturating_sub(2 * pad)).max(1), 29);
    let w = r.int((kw.saturating_sub(2 * pad)).max(1), 41);
    ConvCase {
        b: r.int(1, 3),
        c: r.int(1, 9),
        h,
        w,
        kh,
        kw,
        pad,
        bias: r.coin(),
    }
}

/// `(x, weight, bias)` on the CPU and on the device.
type ConvInputs = ((Tensor, Tensor), (Tensor, Tensor), (Tensor, Tensor));

fn conv_inputs(s: &Setup, c: &ConvCase, seed: u64, dtype: DType, strided: bool) -> Res<ConvInputs> {
    Ok((
        input(s, &[c.b, c.c, c.h, c.w], seed, 1.0, dtype, strided)?,
        input(s, &[c.c, 1, c.kh, c.kw], seed + 1, 1.0, dtype, strided)?,
        input(s, &[c.c], seed + 2, 1.0, dtype, false)?,
    ))
}

#[test]
fn depthwise_conv_forward() {
    let s = setup("depthwise_conv_forward");
    let mut rep = Report::new("depthwise_conv_forward");
    for (di, dtype) in DTYPES.into_iter().enumerate() {
        let mut r = Rng::new(s.seed, 40 + di as u64);
        for i in 0..s.cases {
            let c = conv_case(&mut r);
            let strided = i % 2 == 1;
            let what = format!("depthwise_conv2d {c} {} {}", name(dtype), layout(strided));
            let res = (|| -> Res<()> {
                let ((xc, xd), (wc, wd), (bc, bd)) =
                    conv_inputs(&s, &c, 5000 * i as u64, dtype, strided)?;
                let (bc, bd) = if c.bias {
                    (Some(bc), Some(bd))
                } else {
                    (None, None)
                };
                let got = depthwise_conv2d(&xd, &wd, bd.as_ref(), c.pad)?;
                if got.dtype() != dtype {
                    return Err(format!("output dtype {:?}", got.dtype()).into());
                }
                let want = if s.gpu {
                    depthwise_conv2d(&xc, &wc, bc.as_ref(), c.pad)?
                } else {
                    let f = |t: &Tensor| t.to_dtype(DType::F32);
                    let bf = bc.as_ref().map(f).transpose()?;
                    depthwise_conv2d_shifted(&f(&xc)?, &f(&wc)?, bf.as_ref(), c.pad)?
                };
                rep.compare(&what, &got, &want, fwd_tol(dtype))
            })();
            rep.error(&what, res);
        }
    }
    rep.finish();
}

/// `(∂x, ∂weight, ∂bias)` of `sum(conv(x, w, b) · g)` through autograd, with `conv` the op
/// or the shifted composition.
fn conv_autograd(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    g: &Tensor,
    pad: usize,
    shifted: bool,
) -> Res<[Tensor; 3]> {
    let (x, w, b) = (
        Var::from_tensor(x)?,
        Var::from_tensor(w)?,
        Var::from_tensor(b)?,
    );
    let y = if shifted {
        depthwise_conv2d_shifted(&x, &w, Some(&b), pad)?
    } else {
        depthwise_conv2d(&x, &w, Some(&b), pad)?
    };
    let gs = (y * g)?.sum_all()?.backward()?;
    let get = |v: &Var| gs.get(v).cloned().ok_or("no gradient");
    Ok([get(&x)?, get(&w)?, get(&b)?])
}

#[test]
fn depthwise_conv_backward() {
    let s = setup("depthwise_conv_backward");
    let mut rep = Report::new("depthwise_conv_backward");
    for (di, dtype) in DTYPES.into_iter().enumerate() {
        let mut r = Rng::new(s.seed, 50 + di as u64);
        for i in 0..s.cases {
            let c = conv_case(&mut r);
            let strided = i % 2 == 1;
            let what = format!(
                "depthwise_conv2d backward {c} {} {}",
                name(dtype),
                layout(strided)
            );
            let res = (|| -> Res<()> {
                let seed = 6000 * i as u64;
                let ((xc, xd), (wc, wd), (bc, bd)) = conv_inputs(&s, &c, seed, dtype, strided)?;
                let (ho, wo) = (c.h + 2 * c.pad + 1 - c.kh, c.w + 2 * c.pad + 1 - c.kw);
                let (gc, gd) = input(&s, &[c.b, c.c, ho, wo], seed + 3, 1.0, dtype, strided)?;
                let auto = conv_autograd(&xd, &wd, &bd, &gd, c.pad, false)?;
                let (gx, gw, gb) = depthwise_conv2d_backward(&xd, &wd, &gd, c.pad)?;
                let direct = [gx, gw, gb];
                let want = if s.gpu {
                    let (gx, gw, gb) = depthwise_conv2d_backward(&xc, &wc, &gc, c.pad)?;
                    [gx, gw, gb]
                } else {
                    let f = |t: &Tensor| t.to_dtype(DType::F32);
                    conv_autograd(&f(&xc)?, &f(&wc)?, &f(&bc)?, &f(&gc)?, c.pad, true)?
                };
                for (k, n) in ["x", "weight", "bias"].iter().enumerate() {
                    let tol = grad_tol(dtype);
                    rep.compare(&format!("{what} autograd ∂{n}"), &auto[k], &want[k], tol)?;
                    rep.compare(&format!("{what} explicit ∂{n}"), &direct[k], &want[k], tol)?;
                }
                Ok(())
            })();
            rep.error(&what, res);
        }
    }
    rep.finish();
}
