//! ROI Align on the test device against its reference (see the crate docs in `main.rs`).

use super::*;

struct RoiCase {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    k: usize,
    p: RoiAlign,
}

impl std::fmt::Display for RoiCase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "n{} c{} {}x{} k{} out{}x{} scale{} ratio{} aligned={}",
            self.n,
            self.c,
            self.h,
            self.w,
            self.k,
            self.p.output_size.0,
            self.p.output_size.1,
            self.p.spatial_scale,
            self.p.sampling_ratio,
            self.p.aligned
        )
    }
}

fn roi_case(r: &mut Rng) -> RoiCase {
    let scale = r.pick(&[1.0, 0.5, 0.25, 0.0625]);
    RoiCase {
        n: r.int(1, 3),
        c: r.int(1, 7),
        h: r.int(3, 31),
        w: r.int(3, 37),
        k: r.int(1, 11),
        p: RoiAlign::new((r.int(1, 7), r.int(1, 7)))
            .with_spatial_scale(scale)
            .with_sampling_ratio(r.pick(&[-1, 1, 2, 3]))
            .with_aligned(r.coin()),
    }
}

/// `(K, 5)` boxes in image coordinates (feature size / scale), some reaching past the
/// edges, some smaller than a feature pixel; with `strided` non-contiguous. CPU and device.
fn roi_boxes(s: &Setup, c: &RoiCase, r: &mut Rng, strided: bool) -> Res<(Tensor, Tensor)> {
    let (ih, iw) = (
        c.h as f32 / c.p.spatial_scale,
        c.w as f32 / c.p.spatial_scale,
    );
    let mut v = Vec::with_capacity(c.k * 5);
    for _ in 0..c.k {
        let x1 = r.float(-0.1 * iw, iw);
        let y1 = r.float(-0.1 * ih, ih);
        let bw = r.float(0.1, 0.6 * iw);
        let bh = r.float(0.1, 0.6 * ih);
        v.extend([r.int(0, c.n - 1) as f32, x1, y1, x1 + bw, y1 + bh]);
    }
    let cpu = if strided {
        // Stored as (5, K), seen as (K, 5).
        let mut t = vec![0f32; c.k * 5];
        for (i, x) in v.iter().enumerate() {
            t[(i % 5) * c.k + i / 5] = *x;
        }
        Tensor::from_vec(t, (5, c.k), &Device::Cpu)?.t()?
    } else {
        Tensor::from_vec(v, (c.k, 5), &Device::Cpu)?
    };
    let dev = if strided {
        cpu.t()?.contiguous()?.to_device(&s.dev)?.t()?
    } else {
        cpu.to_device(&s.dev)?
    };
    Ok((cpu, dev))
}

#[test]
fn roi_align_forward() {
    let s = setup("roi_align_forward");
    let mut rep = Report::new("roi_align_forward");
    if !s.gpu {
        rep.skip(
            "roi_align forward",
            "no plain composition to compare with on the CPU (the parity suite checks the CPU op against torchvision)",
        );
        rep.finish();
        return;
    }
    for (di, dtype) in DTYPES.into_iter().enumerate() {
        let mut r = Rng::new(s.seed, 20 + di as u64);
        for i in 0..s.cases {
            let c = roi_case(&mut r);
            let strided = i % 2 == 1;
            let what = format!("roi_align {c} {} {}", name(dtype), layout(strided));
            let res = (|| -> Res<()> {
                let (fc, fd) = input(
                    &s,
                    &[c.n, c.c, c.h, c.w],
                    3000 * i as u64,
                    1.0,
                    dtype,
                    strided,
                )?;
                let (bc, bd) = roi_boxes(&s, &c, &mut r, strided)?;
                let got = roi_align(&fd, &bd, &c.p)?;
                let want = roi_align(&fc, &bc, &c.p)?;
                rep.compare(&what, &got, &want, fwd_tol(dtype))
            })();
            rep.error(&what, res);
        }
    }
    rep.finish();
}

#[test]
fn roi_align_backward_pass() {
    let s = setup("roi_align_backward_pass");
    let mut rep = Report::new("roi_align_backward_pass");
    if s.dev.is_metal() {
        rep.skip(
            "roi_align backward",
            "the Metal build has no backward kernel",
        );
        rep.finish();
        return;
    }
    for (di, dtype) in DTYPES.into_iter().enumerate() {
        let mut r = Rng::new(s.seed, 30 + di as u64);
        for i in 0..s.cases {
            let c = roi_case(&mut r);
            let strided = i % 2 == 1;
            let what = format!("roi_align backward {c} {} {}", name(dtype), layout(strided));
            let res = (|| -> Res<()> {
                let seed = 4000 * i as u64;
                // The CPU reference needs no features: the gradient is linear in g.
                let (_, fd) = input(&s, &[c.n, c.c, c.h, c.w], seed, 1.0, dtype, strided)?;
                let (bc, bd) = roi_boxes(&s, &c, &mut r, strided)?;
                let (oh, ow) = c.p.output_size;
                let (gc, gd) = input(&s, &[c.k, c.c, oh, ow], seed + 1, 1.0, dtype, strided)?;
                let dims = (c.n, c.c, c.h, c.w);
                // Autograd and the explicit function on the device.
                let var = Var::from_tensor(&fd)?;
                let y = roi_align(&var, &bd, &c.p)?;
                let auto = (y * &gd)?
                    .sum_all()?
                    .backward()?
                    .get(&var)
                    .cloned()
                    .ok_or("no gradient for the features")?;
                let direct = roi_align_backward(&gd, &bd, &c.p, dims)?;
                // Adjoint: <roi_align(x), g> = <x, roi_align_backward(g)>, in f32.
                if dtype == DType::F32 {
                    rep.checks += 1;
                    let lhs = dot(&roi_align(&fd, &bd, &c.p)?, &gd);
                    let rhs = dot(&fd, &direct);
                    let line = format!("adjoint <y, g> = {lhs:.6}, <x, ∂x> = {rhs:.6}");
                    if (lhs - rhs).abs() <= 1e-4 * (1.0 + lhs.abs()) {
                        eprintln!("  {what}: {line} ok");
                    } else {
                        rep.fail(&what, line);
                    }
                }
                if s.gpu {
                    let want = roi_align_backward(&gc, &bc, &c.p, dims)?;
                    rep.compare(&format!("{what} autograd"), &auto, &want, grad_tol(dtype))?;
                    rep.compare(&format!("{what} explicit"), &direct, &want, grad_tol(dtype))?;
                } else {
                    // Same kernel on the CPU: autograd must give what the function gives.
                    rep.compare(&format!("{what} autograd"), &auto, &direct, grad_tol(dtype))?;
                }
                Ok(())
            })();
            rep.error(&what, res);
        }
    }
    rep.finish();
}
