//! RefCOCO, RefCOCO+, RefCOCOg (refer toolkit layout: `refs(<split_by>).p` + `instances.json`)
//! and gRefCOCO (`grefs(unc).json` + `instances.json`), one sample per sentence, split
//! selection as the refer toolkit's `getRefIds` and ReLA's `G_REFER` do it.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::eval::coco::{union_mask, CocoAnnotation, CocoImage, Instances, PolygonPolicy};
use crate::eval::dataset::{
    out_of_range, Dataset, DatasetKind, LoadSummary, MetricFamily, Sample, SplitBy,
};
use crate::eval::refs::{read_refs_json, read_refs_pickle, RefRecord};
use crate::types::{Granularity, Mask};

/// Where COCO train2014 images are looked for, relative to `--root` (the layout of the
/// ReLA/CRIS instructions first, then the refer toolkit's own).
pub const IMAGE_DIRS: [&str; 2] = ["images/train2014", "images/mscoco/images/train2014"];

/// Split-by schemes and their splits, per benchmark (first scheme = default).
pub fn known_splits(kind: DatasetKind) -> &'static [(SplitBy, &'static [&'static str])] {
    const UNC4: &[&str] = &["train", "val", "testA", "testB"];
    match kind {
        DatasetKind::RefCoco => &[
            (SplitBy::Unc, UNC4),
            (SplitBy::Google, &["train", "val", "test"]),
        ],
        DatasetKind::RefCocoPlus => &[(SplitBy::Unc, UNC4)],
        DatasetKind::RefCocoG => &[
            (SplitBy::Umd, &["train", "val", "test"]),
            (SplitBy::Google, &["train", "val"]),
        ],
        DatasetKind::GRefCoco => &[(SplitBy::Unc, UNC4)],
        DatasetKind::RefCocoM => &[],
    }
}

/// Resolves `split_by` (default: the benchmark's first scheme) and checks `split` against it.
pub fn check_split(kind: DatasetKind, split: &str, split_by: Option<SplitBy>) -> Result<SplitBy> {
    let schemes = known_splits(kind);
    let by = match split_by {
        None => schemes.first().map(|s| s.0),
        Some(b) => schemes.iter().find(|s| s.0 == b).map(|s| s.0),
    };
    let Some(by) = by else {
        return Err(Error::UnknownSplit {
            dataset: format!("{kind} (split-by)"),
            split: split_by.map_or("", SplitBy::as_str).to_string(),
            known: schemes
                .iter()
                .map(|s| s.0.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        });
    };
    let splits = schemes.iter().find(|s| s.0 == by).map_or(&[][..], |s| s.1);
    if !splits.contains(&split) {
        return Err(Error::UnknownSplit {
            dataset: format!("{kind} ({by})"),
            split: split.to_string(),
            known: splits.join(", "),
        });
    }
    Ok(by)
}

/// `REFER.getRefIds(split=...)`: `testA`/`testB`/`testC` match any split containing that
/// letter, `test` any split containing "test", the rest exactly.
fn refer_split_matches(query: &str, ref_split: &str) -> bool {
    match query {
        "testA" | "testB" | "testC" => ref_split.contains(&query[query.len() - 1..]),
        "test" => ref_split.contains("test"),
        _ => ref_split == query,
    }
}

pub(crate) fn dataset_err(path: &Path, reason: impl Into<String>) -> Error {
    Error::Dataset {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Checks that `root` is an existing directory.
pub(crate) fn check_root(root: &Path) -> Result<()> {
    if !root.exists() {
        return Err(Error::FileNotFound {
            path: root.to_path_buf(),
        });
    }
    if !root.is_dir() {
        return Err(Error::NotADirectory {
            path: root.to_path_buf(),
        });
    }
    Ok(())
}

/// The first existing path, or an error listing every path looked at.
pub(crate) fn find_first(root: &Path, what: &str, candidates: &[PathBuf]) -> Result<PathBuf> {
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or_else(|| {
            let looked: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
            dataset_err(
                root,
                format!("no {what} found; looked for: {}", looked.join(", ")),
            )
        })
}

/// The image folder (first existing candidate; the first candidate when none exists).
pub(crate) fn image_dir(root: &Path) -> (PathBuf, bool) {
    let candidates: Vec<PathBuf> = IMAGE_DIRS.iter().map(|d| root.join(d)).collect();
    match candidates.iter().find(|p| p.is_dir()) {
        Some(p) => (p.clone(), true),
        None => (candidates[0].clone(), false),
    }
}

/// Loads RefCOCO, RefCOCO+ or RefCOCOg from `root/<name>/refs(<split_by>).p` and
/// `root/<name>/instances.json` (also accepted: `root` being the `<name>` folder itself).
pub fn load_refer(
    kind: DatasetKind,
    root: &Path,
    split: &str,
    split_by: Option<SplitBy>,
) -> Result<CocoRefDataset> {
    let by = check_split(kind, split, split_by)?;
    check_root(root)?;
    let file = format!("refs({by}).p");
    let refs_path = find_first(
        root,
        &format!("{kind} refs file"),
        &[root.join(kind.as_str()).join(&file), root.join(&file)],
    )?;
    let refs = read_refs_pickle(&refs_path)?;
    let refs: Vec<RefRecord> = refs
        .into_iter()
        .filter(|r| refer_split_matches(split, &r.split))
        .collect();
    build(kind, split, root, &refs_path, refs, PolygonPolicy::AsGiven)
}

/// Loads gRefCOCO from `root/grefcoco/grefs(unc).json` (or `grefs(unc).p`) and
/// `root/grefcoco/instances.json`.
pub fn load_grefcoco(
    root: &Path,
    split: &str,
    split_by: Option<SplitBy>,
) -> Result<CocoRefDataset> {
    let kind = DatasetKind::GRefCoco;
    let by = check_split(kind, split, split_by)?;
    check_root(root)?;
    let dir = root.join(kind.as_str());
    let (json, pickle) = (format!("grefs({by}).json"), format!("grefs({by}).p"));
    let refs_path = find_first(
        root,
        "gRefCOCO refs file",
        &[
            dir.join(&json),
            dir.join(&pickle),
            root.join(&json),
            root.join(&pickle),
        ],
    )?;
    let refs = if refs_path.extension().is_some_and(|e| e == "json") {
        read_refs_json(&refs_path)?
    } else {
        read_refs_pickle(&refs_path)?
    };
    let refs: Vec<RefRecord> = refs.into_iter().filter(|r| r.split == split).collect();
    build(
        kind,
        split,
        root,
        &refs_path,
        refs,
        PolygonPolicy::ValidOnly,
    )
}

#[derive(Debug, Clone)]
struct Entry {
    sent_id: i64,
    ref_id: i64,
    text: String,
    image: usize,
    anns: Vec<usize>,
    no_target: bool,
    n_targets: usize,
}

/// A RefCOCO-family or gRefCOCO split: sentences, their images and annotations.
#[derive(Debug, Clone)]
pub struct CocoRefDataset {
    kind: DatasetKind,
    split: String,
    image_dir: PathBuf,
    policy: PolygonPolicy,
    images: Vec<CocoImage>,
    annotations: Vec<CocoAnnotation>,
    entries: Vec<Entry>,
    summary: LoadSummary,
}

fn build(
    kind: DatasetKind,
    split: &str,
    root: &Path,
    refs_path: &Path,
    refs: Vec<RefRecord>,
    policy: PolygonPolicy,
) -> Result<CocoRefDataset> {
    if refs.is_empty() {
        return Err(dataset_err(
            refs_path,
            format!("no refs of split {split:?} in this file"),
        ));
    }
    let dir = refs_path.parent().unwrap_or(root);
    let instances_path = find_first(root, "instances.json", &[dir.join("instances.json")])?;
    let image_ids: HashSet<i64> = refs.iter().map(|r| r.image_id).collect();
    let ann_ids: HashSet<i64> = refs
        .iter()
        .filter(|r| !r.is_no_target())
        .flat_map(|r| r.ann_ids.iter().copied())
        .collect();
    let instances = Instances::read(&instances_path, &image_ids, &ann_ids)?;

    let mut images = Vec::new();
    let mut image_index: HashMap<i64, usize> = HashMap::new();
    let mut annotations = Vec::new();
    let mut ann_index: HashMap<i64, usize> = HashMap::new();
    let mut entries = Vec::new();
    let mut summary = LoadSummary {
        refs: refs.len(),
        ..LoadSummary::default()
    };
    for r in &refs {
        let image = match image_index.get(&r.image_id) {
            Some(&i) => i,
            None => {
                let im = instances.images.get(&r.image_id).ok_or_else(|| {
                    dataset_err(
                        &instances_path,
                        format!(
                            "ref {} points at image {}, which is not listed",
                            r.ref_id, r.image_id
                        ),
                    )
                })?;
                images.push(im.clone());
                image_index.insert(r.image_id, images.len() - 1);
                images.len() - 1
            }
        };
        let no_target = r.is_no_target();
        let mut anns = Vec::new();
        if !no_target {
            for id in &r.ann_ids {
                let idx = match ann_index.get(id) {
                    Some(&i) => i,
                    None => {
                        let a = instances.annotations.get(id).ok_or_else(|| {
                            dataset_err(
                                &instances_path,
                                format!(
                                    "ref {} points at annotation {id}, which is not listed",
                                    r.ref_id
                                ),
                            )
                        })?;
                        if a.image_id != r.image_id {
                            return Err(dataset_err(
                                &instances_path,
                                format!(
                                    "ref {} is on image {} but its annotation {id} is on image {}",
                                    r.ref_id, r.image_id, a.image_id
                                ),
                            ));
                        }
                        annotations.push(a.clone());
                        ann_index.insert(*id, annotations.len() - 1);
                        annotations.len() - 1
                    }
                };
                anns.push(idx);
            }
        }
        let n_targets = anns.len();
        for s in &r.sentences {
            summary.no_target += usize::from(no_target);
            summary.multi_target += usize::from(n_targets > 1);
            entries.push(Entry {
                sent_id: s.sent_id,
                ref_id: r.ref_id,
                text: s.text.clone(),
                image,
                anns: anns.clone(),
                no_target,
                n_targets,
            });
        }
    }
    let (image_dir, images_found) = image_dir(root);
    summary.images = images.len();
    summary.instances = annotations.len();
    summary.sentences = entries.len();
    summary.images_found = images_found;
    Ok(CocoRefDataset {
        kind,
        split: split.to_string(),
        image_dir,
        policy,
        images,
        annotations,
        entries,
        summary,
    })
}

impl CocoRefDataset {
    fn entry(&self, index: usize) -> Result<&Entry> {
        self.entries
            .get(index)
            .ok_or_else(|| out_of_range(self.kind.as_str(), &self.split, index, self.entries.len()))
    }
}

impl Dataset for CocoRefDataset {
    fn name(&self) -> &str {
        self.kind.as_str()
    }

    fn split(&self) -> &str {
        &self.split
    }

    fn metric_family(&self) -> MetricFamily {
        self.kind.metric_family()
    }

    fn len(&self) -> usize {
        self.entries.len()
    }

    fn sample(&self, index: usize) -> Result<Sample> {
        let e = self.entry(index)?;
        let im = &self.images[e.image];
        let granularity = match self.kind {
            DatasetKind::GRefCoco => None,
            _ => Some(Granularity::Object),
        };
        Ok(Sample {
            index,
            sent_id: e.sent_id,
            ref_id: e.ref_id,
            sentence: e.text.clone(),
            image_path: self.image_dir.join(&im.file_name),
            height: im.height,
            width: im.width,
            no_target: e.no_target,
            n_targets: e.n_targets,
            granularity,
        })
    }

    fn gt_mask(&self, index: usize) -> Result<Mask> {
        let e = self.entry(index)?;
        let im = &self.images[e.image];
        let anns: Vec<&CocoAnnotation> = e.anns.iter().map(|&a| &self.annotations[a]).collect();
        union_mask(&anns, im.height, im.width, self.policy)
    }

    fn summary(&self) -> LoadSummary {
        self.summary.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_rules_follow_the_refer_toolkit() {
        assert!(refer_split_matches("testA", "testA"));
        assert!(refer_split_matches("testA", "testAB"));
        assert!(!refer_split_matches("testA", "testB"));
        assert!(refer_split_matches("test", "testB"));
        assert!(!refer_split_matches("val", "valB"));
        assert!(!refer_split_matches("train", "val"));
    }

    #[test]
    fn unknown_splits_list_the_known_ones() {
        match check_split(DatasetKind::RefCocoG, "testA", None) {
            Err(Error::UnknownSplit { known, .. }) => assert_eq!(known, "train, val, test"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            check_split(DatasetKind::RefCocoG, "val", Some(SplitBy::Google)).unwrap(),
            SplitBy::Google
        );
        assert!(check_split(DatasetKind::RefCocoG, "test", Some(SplitBy::Google)).is_err());
        assert!(matches!(
            check_split(DatasetKind::RefCocoPlus, "val", Some(SplitBy::Google)),
            Err(Error::UnknownSplit { .. })
        ));
        assert_eq!("UMD".parse::<SplitBy>().unwrap(), SplitBy::Umd);
        assert!(matches!(
            "ucn".parse::<SplitBy>(),
            Err(Error::UnknownSplit { known, .. }) if known == "unc, google, umd"
        ));
    }
}
