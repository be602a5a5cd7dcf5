//! `interpolate` cases: torch.nn.functional.interpolate(mode="bilinear") through candle's
//! `upsample_bilinear2d` and, for `align_corners=False`, through the fused mask-upsampling
//! op as well (a single resize: padded = valid = input size, so its first stage is the
//! identity). Both results are compared with the reference `output`.

use candle_core::{DType, Tensor};
use unires::ops::upsample::{upsample_mask_logits, MaskResize};

use crate::harness::{Case, Res};

pub fn run(case: &Case) -> Res<Vec<(String, Tensor)>> {
    let (oh, ow) = case.fixture["size"]
        .as_array()
        .and_then(|a| Some((a.first()?.as_u64()? as usize, a.get(1)?.as_u64()? as usize)))
        .ok_or("fixture.json: size must be [h, w]")?;
    let align_corners = case.bool("align_corners").ok_or("no align_corners")?;
    let input = case.input("input")?;
    let mut out = vec![(
        "output".to_string(),
        input.upsample_bilinear2d(oh, ow, align_corners)?,
    )];
    if !align_corners {
        let (n, c, h, w) = input.dims4()?;
        let r = MaskResize {
            padded: (h, w),
            valid: (h, w),
            orig: (oh, ow),
        };
        let fused = upsample_mask_logits(&input.reshape((n * c, h, w))?, &r)?
            .reshape((n, c, oh, ow))?
            .to_dtype(DType::F32)?;
        out.push(("output".to_string(), fused));
    }
    Ok(out)
}
