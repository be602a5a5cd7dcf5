//! Mask upsampling on the test device against its reference (see the crate docs in `main.rs`).

use super::*;

struct UpCase {
    shape: Vec<usize>,
    r: MaskResize,
}

fn up_case(r: &mut Rng) -> UpCase {
    let (h, w) = (r.int(1, 70), r.int(1, 70));
    let shape = if r.coin() {
        vec![r.int(1, 4), h, w]
    } else {
        vec![r.int(1, 2), r.int(1, 3), h, w]
    };
    let padded = (r.int(1, 200), r.int(1, 200));
    let valid = (r.int(1, padded.0), r.int(1, padded.1));
    let orig = (r.int(1, 300), r.int(1, 300));
    UpCase {
        shape,
        r: MaskResize {
            padded,
            valid,
            orig,
        },
    }
}

/// The plain chain's logits (`upsample_masks_plain` without the sigmoid), on the CPU in f32.
fn plain_logits(x: &Tensor, r: &MaskResize) -> Res<Tensor> {
    let dims = x.dims();
    let (h, w) = (dims[dims.len() - 2], dims[dims.len() - 1]);
    let n: usize = dims[..dims.len() - 2].iter().product();
    let mut out_shape = dims[..dims.len() - 2].to_vec();
    out_shape.extend([r.orig.0, r.orig.1]);
    Ok(x.to_dtype(DType::F32)?
        .reshape((n, 1, h, w))?
        .upsample_bilinear2d(r.padded.0, r.padded.1, false)?
        .narrow(2, 0, r.valid.0)?
        .narrow(3, 0, r.valid.1)?
        .contiguous()?
        .upsample_bilinear2d(r.orig.0, r.orig.1, false)?
        .reshape(out_shape)?)
}

#[test]
fn mask_upsampling() {
    let s = setup("mask_upsampling");
    let mut rep = Report::new("mask_upsampling");
    // The outputs are f32 whatever the input dtype.
    let tol = fwd_tol(DType::F32);
    let prob_tol = Tol {
        atol: 1e-5,
        rtol: 0.0,
    };
    for (di, dtype) in DTYPES.into_iter().enumerate() {
        let mut r = Rng::new(s.seed, 60 + di as u64);
        for i in 0..s.cases {
            let c = up_case(&mut r);
            let strided = i % 2 == 1;
            let what = format!(
                "upsample {:?} {:?} {} {}",
                c.shape,
                c.r,
                name(dtype),
                layout(strided)
            );
            let res = (|| -> Res<()> {
                let (xc, xd) = input(&s, &c.shape, 7000 * i as u64, 8.0, dtype, strided)?;
                let logits = upsample_mask_logits(&xd, &c.r)?;
                let probs = upsample_mask_probs(&xd, &c.r)?;
                let masks = upsample_masks(&xd, &c.r)?.concat();
                let (want_logits, want_probs, want_masks) = if s.gpu {
                    (
                        upsample_mask_logits(&xc, &c.r)?,
                        upsample_mask_probs(&xc, &c.r)?,
                        upsample_masks(&xc, &c.r)?.concat(),
                    )
                } else {
                    let (m, p) = upsample_masks_plain(&xc, &c.r)?;
                    let m: Vec<u8> = m.flatten_all()?.to_vec1()?;
                    (plain_logits(&xc, &c.r)?, p, m)
                };
                rep.compare(&format!("{what} logits"), &logits, &want_logits, tol)?;
                rep.compare(&format!("{what} probs"), &probs, &want_probs, prob_tol)?;
                let reference = flat(&want_logits)?;
                rep.compare_masks(&format!("{what} masks"), &masks, &want_masks, &reference);
                Ok(())
            })();
            rep.error(&what, res);
        }
    }
    rep.finish();
}
