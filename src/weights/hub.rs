//! Fetching a unires checkpoint directory from the Hugging Face hub with `hf-hub` (sync API,
//! rustls), following the hub client's conventions: the cache in `HF_HUB_CACHE`, else
//! `HF_HOME/hub`, else `~/.cache/huggingface/hub`; `HF_HUB_OFFLINE=1` reads the cache only
//! and never touches the network; `HF_ENDPOINT` and `HF_TOKEN` are honoured.

use std::path::{Path, PathBuf};

use hf_hub::api::sync::{ApiBuilder, ApiError};
use hf_hub::{Cache, Repo, RepoType};

use crate::error::{Error, Result};
use crate::io::read::{read_capped_to_string, MAX_CONFIG_BYTES};
use crate::weights::checkpoint::{INDEX_FILE, SINGLE_FILE};

/// Where and how to reach the hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubOptions {
    /// The hub cache directory (the one holding `models--owner--name`).
    pub cache_dir: Option<PathBuf>,
    /// Read the cache only.
    pub offline: bool,
    /// Draw a progress bar (on stderr) while downloading.
    pub progress: bool,
    /// Hub URL; `None` is `https://huggingface.co`.
    pub endpoint: Option<String>,
    /// Access token for gated or private repositories.
    pub token: Option<String>,
}

fn truthy(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_uppercase().as_str(),
        "1" | "ON" | "YES" | "TRUE"
    )
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The cache directory the environment names, as the Python hub client resolves it.
pub fn default_cache_dir() -> Option<PathBuf> {
    if let Some(p) = env("HF_HUB_CACHE") {
        return Some(PathBuf::from(p));
    }
    if let Some(p) = env("HF_HOME") {
        return Some(PathBuf::from(p).join("hub"));
    }
    if let Some(p) = env("XDG_CACHE_HOME") {
        return Some(PathBuf::from(p).join("huggingface").join("hub"));
    }
    env("HOME").map(|h| {
        PathBuf::from(h)
            .join(".cache")
            .join("huggingface")
            .join("hub")
    })
}

impl HubOptions {
    /// Options from `HF_HUB_CACHE` / `HF_HOME`, `HF_HUB_OFFLINE`, `HF_ENDPOINT`, `HF_TOKEN`;
    /// progress bar on.
    pub fn from_env() -> Self {
        Self {
            cache_dir: default_cache_dir(),
            offline: env("HF_HUB_OFFLINE").is_some_and(|v| truthy(&v)),
            progress: true,
            endpoint: env("HF_ENDPOINT"),
            token: env("HF_TOKEN"),
        }
    }
}

fn hub_err(repo: &str, reason: impl Into<String>) -> Error {
    Error::Hub {
        repo: repo.to_string(),
        reason: reason.into(),
    }
}

fn api_err(repo: &str, what: &str, e: ApiError) -> Error {
    let reason = match &e {
        ApiError::RequestError(r) => match r.as_ref() {
            ureq::Error::Status(401 | 403 | 404, _) => format!(
                "{what}: not found (the repository or revision does not exist, or it is gated \
                 or private: set HF_TOKEN)"
            ),
            ureq::Error::Status(code, _) => format!("{what}: the hub answered HTTP {code}"),
            ureq::Error::Transport(t) => {
                format!("{what}: network error ({t}); set HF_HUB_OFFLINE=1 to use the cache only")
            }
        },
        other => format!("{what}: {other}"),
    };
    hub_err(repo, reason)
}

/// `owner/name` with nothing odd in it.
fn check_repo_id(repo: &str) -> Result<()> {
    let ok = |s: &str| {
        !s.is_empty()
            && s != "."
            && s != ".."
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    match repo.split_once('/') {
        Some((a, b)) if ok(a) && ok(b) => Ok(()),
        _ => Err(hub_err(repo, "a repository id is \"owner/name\"")),
    }
}

/// The snapshot directory of `repo` at `revision` in the cache, when the cache knows it.
fn cached_snapshot(cache: &Path, repo: &str, revision: &str) -> Option<PathBuf> {
    let root = cache.join(format!("models--{}", repo.replace('/', "--")));
    let is_commit = revision.len() == 40 && revision.chars().all(|c| c.is_ascii_hexdigit());
    let commit = if is_commit {
        revision.to_string()
    } else {
        read_capped_to_string(
            &root.join("refs").join(revision),
            MAX_CONFIG_BYTES,
            "hub ref",
        )
        .ok()?
        .trim()
        .to_string()
    };
    let snap = root.join("snapshots").join(commit);
    snap.is_dir().then_some(snap)
}

/// The files of a checkpoint directory: config, tokenizer, and either the single weights
/// file or the index and its shards.
fn needed_files(repo: &str, has: impl Fn(&str) -> bool) -> Result<Vec<String>> {
    let mut files = vec!["config.json".to_string(), "tokenizer.json".to_string()];
    if has(SINGLE_FILE) {
        files.push(SINGLE_FILE.into());
    } else if has(INDEX_FILE) {
        files.push(INDEX_FILE.into());
    } else {
        return Err(hub_err(
            repo,
            format!("holds neither {SINGLE_FILE} nor {INDEX_FILE}: not a unires checkpoint"),
        ));
    }
    Ok(files)
}

/// Shard names listed by an index file.
fn shards_of(index: &Path) -> Result<Vec<String>> {
    #[derive(serde::Deserialize)]
    struct Idx {
        weight_map: std::collections::BTreeMap<String, String>,
    }
    let text = read_capped_to_string(index, MAX_CONFIG_BYTES, "shard index")?;
    let idx: Idx = serde_json::from_str(&text).map_err(|e| Error::Json {
        path: index.to_path_buf(),
        source: e,
    })?;
    let mut v: Vec<String> = idx.weight_map.into_values().collect();
    v.sort();
    v.dedup();
    Ok(v)
}

/// Makes the files of a unires checkpoint in `repo` at `revision` available locally and
/// returns the directory holding them (a snapshot directory of the hub cache).
pub fn fetch_checkpoint(repo: &str, revision: &str, opts: &HubOptions) -> Result<PathBuf> {
    check_repo_id(repo)?;
    let cache_dir = opts.cache_dir.clone().ok_or_else(|| {
        hub_err(
            repo,
            "no cache directory: set HF_HOME (or HF_HUB_CACHE, or HOME)",
        )
    })?;
    if opts.offline {
        return fetch_offline(repo, revision, &cache_dir);
    }
    let api_repo = api_repo(repo, revision, opts)?;
    let info = api_repo
        .info()
        .map_err(|e| api_err(repo, &format!("revision {revision:?}"), e))?;
    let listed: Vec<String> = info.siblings.into_iter().map(|s| s.rfilename).collect();
    let files = needed_files(repo, |f| listed.iter().any(|l| l == f))?;
    let mut dir = None;
    for f in &files {
        let p = api_repo.get(f).map_err(|e| api_err(repo, f, e))?;
        if f == INDEX_FILE {
            for shard in shards_of(&p)? {
                api_repo.get(&shard).map_err(|e| api_err(repo, &shard, e))?;
            }
        }
        dir = p.parent().map(Path::to_path_buf);
    }
    dir.ok_or_else(|| hub_err(repo, "no files fetched"))
}

/// Starts the hub client for `repo` at `revision`.
fn api_repo(repo: &str, revision: &str, opts: &HubOptions) -> Result<hf_hub::api::sync::ApiRepo> {
    check_repo_id(repo)?;
    let cache_dir = opts.cache_dir.clone().ok_or_else(|| {
        hub_err(
            repo,
            "no cache directory: set HF_HOME (or HF_HUB_CACHE, or HOME)",
        )
    })?;
    let mut builder = ApiBuilder::from_cache(Cache::new(cache_dir))
        .with_progress(opts.progress)
        .with_retries(2);
    if let Some(e) = &opts.endpoint {
        builder = builder.with_endpoint(e.clone());
    }
    if let Some(t) = &opts.token {
        builder = builder.with_token(Some(t.clone()));
    }
    let api = builder
        .build()
        .map_err(|e| api_err(repo, "cannot start the hub client", e))?;
    Ok(api.repo(Repo::with_revision(
        repo.to_string(),
        RepoType::Model,
        revision.to_string(),
    )))
}

/// The files of `repo` at `revision`: from the hub, or from the cache when offline.
fn list_files(repo: &str, revision: &str, opts: &HubOptions) -> Result<Vec<String>> {
    if opts.offline {
        let cache = opts.cache_dir.clone().unwrap_or_default();
        let snap = cached_snapshot(&cache, repo, revision).ok_or_else(|| {
            hub_err(
                repo,
                format!(
                    "HF_HUB_OFFLINE is set and revision {revision:?} is not in the cache {}",
                    cache.display()
                ),
            )
        })?;
        let rd = std::fs::read_dir(&snap).map_err(|e| Error::io(&snap, e))?;
        return Ok(rd
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .collect());
    }
    let info = api_repo(repo, revision, opts)?
        .info()
        .map_err(|e| api_err(repo, &format!("revision {revision:?}"), e))?;
    Ok(info.siblings.into_iter().map(|s| s.rfilename).collect())
}

/// Makes one file of `repo` available locally (the cache only, when offline).
pub fn fetch_file(repo: &str, revision: &str, file: &str, opts: &HubOptions) -> Result<PathBuf> {
    check_repo_id(repo)?;
    if opts.offline {
        let cache = opts.cache_dir.clone().unwrap_or_default();
        return cached_snapshot(&cache, repo, revision)
            .map(|s| s.join(file))
            .filter(|p| p.exists())
            .ok_or_else(|| {
                hub_err(
                    repo,
                    format!(
                        "HF_HUB_OFFLINE is set and {file} of revision {revision:?} is not in the \
                         cache {}",
                        cache.display()
                    ),
                )
            });
    }
    api_repo(repo, revision, opts)?
        .get(file)
        .map_err(|e| api_err(repo, file, e))
}

/// Makes one file of `repo` available locally when the repository has it; `None` when it
/// does not (an optional file such as `added_tokens.json`).
pub fn fetch_optional_file(
    repo: &str,
    revision: &str,
    file: &str,
    opts: &HubOptions,
) -> Result<Option<PathBuf>> {
    let listed = list_files(repo, revision, opts)?;
    if !listed.iter().any(|l| l == file) {
        return Ok(None);
    }
    fetch_file(repo, revision, file, opts).map(Some)
}

/// Makes a published component checkpoint available locally: its `config.json` (if the
/// repository has one) and the first weights layout found among `candidates` (a single file,
/// or an index and its shards). Returns the directory holding them.
pub fn fetch_component(
    repo: &str,
    revision: &str,
    candidates: &[&str],
    opts: &HubOptions,
) -> Result<PathBuf> {
    let listed = list_files(repo, revision, opts)?;
    let has = |f: &str| listed.iter().any(|l| l == f);
    let weights = candidates
        .iter()
        .find(|c| has(c))
        .ok_or_else(|| hub_err(repo, format!("holds none of {}", candidates.join(", "))))?;
    if has("config.json") {
        fetch_file(repo, revision, "config.json", opts)?;
    }
    let p = fetch_file(repo, revision, weights, opts)?;
    if weights.ends_with(".index.json") {
        for shard in shards_of(&p)? {
            fetch_file(repo, revision, &shard, opts)?;
        }
    }
    p.parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| hub_err(repo, "no files fetched"))
}

/// `hf:owner/name[@revision]` → `(owner/name, revision)`; anything else is a local path.
pub fn parse_hub_spec(spec: &str) -> Option<(String, String)> {
    let rest = spec.strip_prefix("hf:")?;
    Some(match rest.split_once('@') {
        Some((r, v)) if !v.is_empty() => (r.to_string(), v.to_string()),
        Some((r, _)) => (r.to_string(), "main".to_string()),
        None => (rest.to_string(), "main".to_string()),
    })
}

fn fetch_offline(repo: &str, revision: &str, cache_dir: &Path) -> Result<PathBuf> {
    let snap = cached_snapshot(cache_dir, repo, revision).ok_or_else(|| {
        hub_err(
            repo,
            format!(
                "HF_HUB_OFFLINE is set and revision {revision:?} is not in the cache {}",
                cache_dir.display()
            ),
        )
    })?;
    if !snap.join(SINGLE_FILE).exists() && !snap.join(INDEX_FILE).exists() {
        return Err(hub_err(
            repo,
            format!(
                "HF_HUB_OFFLINE is set and neither {SINGLE_FILE} nor {INDEX_FILE} is in the \
                 cache {}",
                snap.display()
            ),
        ));
    }
    let files = needed_files(repo, |f| snap.join(f).exists())?;
    let mut missing: Vec<String> = files
        .iter()
        .filter(|f| !snap.join(f.as_str()).exists())
        .cloned()
        .collect();
    if missing.is_empty() && files.iter().any(|f| f == INDEX_FILE) {
        missing = shards_of(&snap.join(INDEX_FILE))?
            .into_iter()
            .filter(|s| !snap.join(s).exists())
            .collect();
    }
    if !missing.is_empty() {
        return Err(hub_err(
            repo,
            format!(
                "HF_HUB_OFFLINE is set and {} is not in the cache {}",
                missing.join(", "),
                snap.display()
            ),
        ));
    }
    Ok(snap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids_are_checked() {
        assert!(check_repo_id("owner/name-1.5_x").is_ok());
        for bad in ["name", "a/b/c", "../x", "a/..", "/x", "a b/c"] {
            assert!(check_repo_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn truthy_values_follow_the_hub_client() {
        for v in ["1", "true", "YES", "on"] {
            assert!(truthy(v));
        }
        for v in ["0", "false", "", "no"] {
            assert!(!truthy(v));
        }
    }
}
