//! Writes held-out scenes of the synthetic benchmark for people and for the CLI.
//!
//! ```text
//! cargo run --release --example make_scenes                 # examples/scenes/NAME.{png,json}
//! cargo run --release --example make_scenes -- --dump 12 /tmp/scenes   # GT overlays to look at
//! cargo run --release --example make_scenes -- --stats 300  # sample statistics + proposal recall
//! cargo run --release --example make_scenes -- --bench 300  # generation / proposal timings
//! ```
//! Held-out scenes use seeds from 7 000 000 up; training uses small seeds.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use image::{Rgb, RgbImage};
use unires::proposals::SelectiveSearch;
use unires::synthetic::{
    self, detector_proposals, episode, Cue, DetectorConfig, Episode, Query, Sample, Scene,
    SplitMix64, SyntheticConfig,
};
use unires::{BoxXyxy, Granularity, Mask, ProposalSource, Proposals};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// First seed of the held-out scenes.
const HELD_OUT_SEED: u64 = 7_000_000;
/// Seed of the scenes the statistics and recall are measured on.
const STATS_SEED: u64 = 9_000_000;

const TINTS: [[u8; 3]; 8] = [
    [255, 64, 64],
    [64, 200, 255],
    [255, 220, 0],
    [0, 230, 120],
    [255, 100, 230],
    [255, 150, 40],
    [150, 120, 255],
    [255, 255, 255],
];

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("--dump") => {
            let n: usize = args.get(1).map_or(Ok(12), |s| s.parse())?;
            let dir = PathBuf::from(args.get(2).map_or("scene_dump", String::as_str));
            let seed: u64 = args.get(3).map_or(Ok(HELD_OUT_SEED), |s| s.parse())?;
            dump(n, &dir, seed)
        }
        Some("--stats") => stats(args.get(1).map_or(Ok(300), |s| s.parse())?),
        Some("--bench") => bench(args.get(1).map_or(Ok(300), |s| s.parse())?),
        Some(dir) => showcase(Path::new(dir)),
        None => showcase(Path::new("examples/scenes")),
    }
}

// ------------------------------------------------------------------------------ drawing

fn tint(img: &mut RgbImage, mask: &Mask, c: [u8; 3], alpha: f32) {
    for y in 0..mask.height() {
        for x in 0..mask.width() {
            if mask.get(y, x) == Some(true) {
                let p = img.get_pixel_mut(x as u32, y as u32);
                for (v, &t) in p.0.iter_mut().zip(&c) {
                    *v = (*v as f32 * (1.0 - alpha) + t as f32 * alpha) as u8;
                }
            }
        }
    }
}

fn draw_box(img: &mut RgbImage, b: &BoxXyxy, c: [u8; 3]) {
    let (w, h) = (img.width() as i64, img.height() as i64);
    let (x1, y1) = (b.x1.floor() as i64, b.y1.floor() as i64);
    let (x2, y2) = (b.x2.ceil() as i64 - 1, b.y2.ceil() as i64 - 1);
    let mut put = |x: i64, y: i64| {
        if (0..w).contains(&x) && (0..h).contains(&y) {
            img.put_pixel(x as u32, y as u32, Rgb(c));
        }
    };
    for x in x1..=x2 {
        put(x, y1);
        put(x, y2);
    }
    for y in y1..=y2 {
        put(x1, y);
        put(x2, y);
    }
}

fn dim(img: &RgbImage) -> RgbImage {
    let mut out = img.clone();
    for p in out.pixels_mut() {
        p.0 = p.0.map(|v| (v as f32 * 0.55) as u8);
    }
    out
}

/// Pastes `src` scaled by an integer factor at `(ox, oy)`.
fn paste(dst: &mut RgbImage, src: &RgbImage, ox: u32, oy: u32, scale: u32) {
    for y in 0..src.height() * scale {
        for x in 0..src.width() * scale {
            let (dx, dy) = (ox + x, oy + y);
            if dx < dst.width() && dy < dst.height() {
                dst.put_pixel(dx, dy, *src.get_pixel(x / scale, y / scale));
            }
        }
    }
}

/// The overview of one episode: image, objects, parts, proposals on top; one panel per sample
/// below (target tinted, one tint per instance; no-target panels dimmed with a red frame).
fn overview(ep: &Episode, built_in: &Proposals) -> RgbImage {
    let s = &ep.scene;
    let mut objects = dim(&s.image);
    let mut parts = dim(&s.image);
    for (k, o) in s.objects.iter().enumerate() {
        tint(&mut objects, &o.mask, TINTS[k % TINTS.len()], 0.7);
        draw_box(&mut objects, &o.bbox, [255, 255, 255]);
        for (p, part) in o.parts.iter().enumerate() {
            tint(
                &mut parts,
                &part.mask,
                TINTS[(k + 2 * p) % TINTS.len()],
                0.75,
            );
        }
    }
    let mut det = s.image.clone();
    for b in &ep.proposals.parts {
        draw_box(&mut det, b, [0, 160, 255]);
    }
    for b in &ep.proposals.objects {
        draw_box(&mut det, b, [255, 30, 30]);
    }
    let mut ss = s.image.clone();
    for b in &built_in.parts {
        draw_box(&mut ss, b, [0, 160, 255]);
    }
    for b in &built_in.objects {
        draw_box(&mut ss, b, [255, 30, 30]);
    }
    let mut panels = vec![s.image.clone(), objects, parts, det, ss];
    for smp in &ep.samples {
        let mut p = dim(&s.image);
        if smp.targets.is_empty() {
            let (w, h) = (p.width() as f32, p.height() as f32);
            for i in 0..3 {
                let i = i as f32;
                draw_box(&mut p, &BoxXyxy::new(i, i, w - i, h - i), [255, 0, 0]);
            }
        }
        for (i, t) in smp.targets.iter().enumerate() {
            tint(&mut p, &t.mask, TINTS[i % TINTS.len()], 0.8);
        }
        panels.push(p);
    }
    let (pw, ph) = (s.image.width(), s.image.height());
    let cols = 5u32;
    let rows = (panels.len() as u32).div_ceil(cols);
    let gap = 4;
    let mut out = RgbImage::from_pixel(cols * (pw + gap), rows * (ph + gap), Rgb([30, 30, 30]));
    for (i, p) in panels.iter().enumerate() {
        let (c, r) = (i as u32 % cols, i as u32 / cols);
        paste(&mut out, p, c * (pw + gap), r * (ph + gap), 1);
    }
    out
}

fn describe_episode(ep: &Episode) -> String {
    let s = &ep.scene;
    let mut t = format!(
        "seed {} index {}  {}x{}  background {:?}\n",
        s.seed,
        s.index,
        s.image.width(),
        s.image.height(),
        s.background
    );
    for (k, o) in s.objects.iter().enumerate() {
        t += &format!(
            "  object {k}: {} {} size {:.0} visible {}/{} px box [{:.0} {:.0} {:.0} {:.0}]\n",
            o.colour.name(),
            o.class.name(),
            o.size,
            o.area,
            o.amodal_area,
            o.bbox.x1,
            o.bbox.y1,
            o.bbox.x2,
            o.bbox.y2
        );
    }
    t += "panels: image | objects | parts | detector proposals | built-in proposals, then samples:\n";
    for (i, smp) in ep.samples.iter().enumerate() {
        let who: Vec<String> = smp
            .targets
            .iter()
            .map(|t| match t.part {
                Some(p) => format!("{}.{}", t.object, p),
                None => t.object.to_string(),
            })
            .collect();
        t += &format!(
            "  {:2} [{:6}] {:?}: \"{}\" -> {}\n",
            i + 5,
            smp.granularity.as_str(),
            smp.cue,
            smp.expression,
            if who.is_empty() {
                "nothing".to_string()
            } else {
                who.join(", ")
            }
        );
    }
    t
}

fn dump(n: usize, dir: &Path, seed: u64) -> Res<()> {
    std::fs::create_dir_all(dir)?;
    let cfg = SyntheticConfig::mixed_sizes();
    let ss = SelectiveSearch::default();
    for i in 0..n as u64 {
        let ep = episode(seed, i, &cfg);
        let props = ss.propose(&ep.scene.image)?;
        let name = format!("scene_{seed}_{i:04}");
        overview(&ep, &props).save(dir.join(format!("{name}.png")))?;
        std::fs::write(dir.join(format!("{name}.txt")), describe_episode(&ep))?;
    }
    println!("wrote {n} scenes to {}", dir.display());
    Ok(())
}

// ------------------------------------------------------------------------------ showcase

fn boxes_json(b: &[BoxXyxy]) -> String {
    let items: Vec<String> = b
        .iter()
        .map(|b| {
            let v = [b.x1, b.y1, b.x2, b.y2].map(|v| v.round() as i64);
            format!("[{}, {}, {}, {}]", v[0], v[1], v[2], v[3])
        })
        .collect();
    format!("[{}]", items.join(", "))
}

/// `{"proposals": {...}, "queries": [...]}` with one box list and one query per line.
fn scene_json(props: &Proposals, samples: &[Sample]) -> Res<String> {
    let queries: Vec<String> = samples
        .iter()
        .map(|s| {
            Ok(format!(
                "{{\"expression\": {}, \"granularity\": \"{}\", \"empty\": {}}}",
                serde_json::to_string(&s.expression)?,
                s.granularity.as_str(),
                s.targets.is_empty()
            ))
        })
        .collect::<Res<_>>()?;
    Ok(format!(
        "{{\n  \"proposals\": {{\n    \"objects\": {},\n    \"parts\": {}\n  }},\n  \"queries\": [\n    {}\n  ]\n}}\n",
        boxes_json(&props.objects),
        boxes_json(&props.parts),
        queries.join(",\n    ")
    ))
}

/// Writes a PNG with the strongest compression.
fn save_png(img: &RgbImage, path: &Path) -> Res<()> {
    use image::codecs::png::{CompressionType, FilterType, PngEncoder};
    use image::ImageEncoder;
    let file = std::io::BufWriter::new(std::fs::File::create(path)?);
    PngEncoder::new_with_quality(file, CompressionType::Best, FilterType::Adaptive).write_image(
        img.as_raw(),
        img.width(),
        img.height(),
        image::ExtendedColorType::Rgb8,
    )?;
    Ok(())
}

fn showcase(dir: &Path) -> Res<()> {
    std::fs::create_dir_all(dir)?;
    type Pick = fn(&Episode) -> bool;
    let wants: [(&str, Pick); 6] = [
        ("parts", |e| {
            e.samples
                .iter()
                .filter(|s| s.granularity == Granularity::Part && !s.targets.is_empty())
                .count()
                >= 3
        }),
        ("colour", |e| {
            e.samples
                .iter()
                .filter(|s| s.cue == Cue::Colour && matches!(s.query, Query::Object(_)))
                .count()
                >= 2
        }),
        ("relation", |e| {
            e.samples
                .iter()
                .any(|s| s.cue == Cue::Relation && matches!(s.query, Query::Object(_)))
                && e.samples
                    .iter()
                    .any(|s| s.cue == Cue::Relation && matches!(s.query, Query::Part { .. }))
        }),
        ("multi", |e| {
            e.samples
                .iter()
                .filter(|s| s.granularity == Granularity::MultiObject && s.targets.len() >= 2)
                .count()
                >= 2
        }),
        ("no_target", |e| {
            e.samples
                .iter()
                .filter(|s| s.cue == Cue::AbsentColour)
                .count()
                >= 2
        }),
        ("tall", |e| {
            e.scene.image.height() > e.scene.image.width() && e.scene.objects.len() >= 4
        }),
    ];
    let cfg = SyntheticConfig::mixed_sizes();
    let mut index = 0u64;
    for (name, want) in wants {
        let ep = loop {
            let ep = episode(HELD_OUT_SEED, index, &cfg);
            index += 1;
            if ep.scene.objects.len() >= 4 && want(&ep) {
                break ep;
            }
        };
        let mut rng = SplitMix64::stream(HELD_OUT_SEED, &[ep.scene.index, 3]);
        let props = detector_proposals(&ep.scene, &mut rng, &DetectorConfig::clean());
        save_png(&ep.scene.image, &dir.join(format!("{name}.png")))?;
        std::fs::write(
            dir.join(format!("{name}.json")),
            scene_json(&props, &ep.samples)?,
        )?;
        println!("{name}: scene {} of seed {HELD_OUT_SEED}", ep.scene.index);
    }
    Ok(())
}

// ------------------------------------------------------------------------------ statistics

fn recall(gt: &[BoxXyxy], props: &[BoxXyxy], thr: f32) -> usize {
    gt.iter()
        .filter(|g| props.iter().any(|p| p.iou(g) >= thr))
        .count()
}

fn stats(n: usize) -> Res<()> {
    let cfg = SyntheticConfig::mixed_sizes();
    let ss = SelectiveSearch::default();
    let mut count: BTreeMap<String, usize> = BTreeMap::new();
    let mut bump = |k: String| *count.entry(k).or_default() += 1;
    let (mut n_obj, mut n_part) = (0usize, 0usize);
    let (mut o5, mut o7, mut p5, mut p7) = (0, 0, 0, 0);
    let (mut np_obj, mut np_part) = (0usize, 0usize);
    let mut n_samples = 0;
    for i in 0..n as u64 {
        let ep = episode(STATS_SEED, i, &cfg);
        let s: &Scene = &ep.scene;
        bump(format!("scene objects {}", s.objects.len()));
        let pairs = |same_colour: bool| {
            s.objects.iter().enumerate().any(|(i, a)| {
                s.objects[i + 1..]
                    .iter()
                    .any(|b| a.class == b.class && (!same_colour || a.colour == b.colour))
            })
        };
        if pairs(false) {
            bump("scenes with a repeated class".into());
        }
        if pairs(true) {
            bump("scenes with a repeated class+colour".into());
        }
        for o in &s.objects {
            bump(format!("class {}", o.class.name()));
            bump(format!("colour {}", o.colour.name()));
            if o.area < o.amodal_area {
                bump("objects occluded".into());
            }
        }
        for smp in &ep.samples {
            n_samples += 1;
            let g = smp.granularity.as_str();
            let kind = if smp.targets.is_empty() {
                "no-target"
            } else {
                g
            };
            bump(format!("kind {kind}"));
            bump(format!("cue {kind} {:?}", smp.cue));
            if smp.targets.is_empty() {
                bump(format!("no-target phrase {g}"));
            }
            if smp.granularity == Granularity::MultiObject && !smp.targets.is_empty() {
                bump(format!("multi instances {}", smp.targets.len()));
            }
        }
        let props = ss.propose(&s.image)?;
        let gt_o: Vec<BoxXyxy> = s.objects.iter().map(|o| o.bbox).collect();
        let gt_p: Vec<BoxXyxy> = s
            .objects
            .iter()
            .flat_map(|o| o.parts.iter().map(|p| p.bbox))
            .collect();
        for (o, g) in s.objects.iter().zip(&gt_o) {
            let hit = props.objects.iter().any(|p| p.iou(g) >= 0.5);
            if !hit && std::env::var("SHOW_MISSES").is_ok() {
                eprintln!(
                    "miss scene {i} {} {} {:?}",
                    o.colour.name(),
                    o.class.name(),
                    o.bbox
                );
            }
            let occ = if o.area < o.amodal_area {
                "occluded"
            } else {
                "whole"
            };
            bump(format!(
                "recall@0.5 object {} {occ} {}",
                o.class.name(),
                if hit { "hit" } else { "MISS" }
            ));
            for p in &o.parts {
                let hit = props.parts.iter().any(|b| b.iou(&p.bbox) >= 0.5);
                bump(format!(
                    "recall@0.5 part {} {}",
                    p.kind.name(),
                    if hit { "hit" } else { "MISS" }
                ));
            }
        }
        n_obj += gt_o.len();
        n_part += gt_p.len();
        o5 += recall(&gt_o, &props.objects, 0.5);
        o7 += recall(&gt_o, &props.objects, 0.7);
        p5 += recall(&gt_p, &props.parts, 0.5);
        p7 += recall(&gt_p, &props.parts, 0.7);
        np_obj += props.objects.len();
        np_part += props.parts.len();
    }
    println!(
        "{n} scenes (seed {STATS_SEED}), {n_samples} samples, {n_obj} objects, {n_part} parts"
    );
    for (k, v) in &count {
        println!("  {k:40} {v:6}");
    }
    let pct = |a: usize, b: usize| 100.0 * a as f64 / b.max(1) as f64;
    println!(
        "built-in proposals: objects recall@0.5 {:.1}%  @0.7 {:.1}%  mean {:.1} boxes",
        pct(o5, n_obj),
        pct(o7, n_obj),
        np_obj as f64 / n as f64
    );
    println!(
        "                    parts   recall@0.5 {:.1}%  @0.7 {:.1}%  mean {:.1} boxes",
        pct(p5, n_part),
        pct(p7, n_part),
        np_part as f64 / n as f64
    );
    Ok(())
}

fn bench(n: usize) -> Res<()> {
    let cfg = SyntheticConfig::default();
    let ss = SelectiveSearch::default();
    // Warm-up, then timed passes over the same scenes.
    let _ = synthetic::scene(STATS_SEED, 0, &cfg);
    let t = Instant::now();
    let scenes: Vec<Scene> = (0..n as u64)
        .map(|i| synthetic::scene(STATS_SEED, i, &cfg))
        .collect();
    let t_scene = t.elapsed().as_secs_f64() / n as f64;
    let t = Instant::now();
    let mut k = 0;
    for (i, s) in scenes.iter().enumerate() {
        let mut rng = SplitMix64::stream(STATS_SEED, &[i as u64, 1]);
        k += synthetic::samples(s, &mut rng, 8, &cfg).len();
    }
    let t_samples = t.elapsed().as_secs_f64() / n as f64;
    let t = Instant::now();
    for (i, s) in scenes.iter().enumerate() {
        let mut rng = SplitMix64::stream(STATS_SEED, &[i as u64, 2]);
        k += detector_proposals(s, &mut rng, &cfg.detector).objects.len();
    }
    let t_det = t.elapsed().as_secs_f64() / n as f64;
    let t = Instant::now();
    for s in &scenes {
        k += ss.propose(&s.image)?.objects.len();
    }
    let t_ss = t.elapsed().as_secs_f64() / n as f64;
    println!("per 160x128 scene, mean over {n} scenes ({k} items):");
    println!("| step | ms |\n|---|---|");
    println!("| scene (layout + render + masks) | {:.3} |", 1e3 * t_scene);
    println!("| 8 samples | {:.3} |", 1e3 * t_samples);
    println!("| detector proposals | {:.3} |", 1e3 * t_det);
    println!(
        "| built-in proposals (SelectiveSearch) | {:.3} |",
        1e3 * t_ss
    );
    Ok(())
}
