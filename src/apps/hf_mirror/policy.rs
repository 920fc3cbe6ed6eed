//! Which repos the mirror serves, and which it keeps (olah's `proxy` and
//! `cache` rules): globs of repo ids, as huggingface_hub writes them
//! (`org/name`, `datasets/org/name`, `spaces/org/name`).

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoRules {
    /// Repos admitted; `*` is any run of characters (`/` too), `?` one,
    /// `[...]` one of a set.
    #[serde(default = "everything")]
    pub allow: Vec<String>,
    /// Repos refused, whatever `allow` says.
    #[serde(default)]
    pub deny: Vec<String>,
}

fn everything() -> Vec<String> {
    vec!["*".into()]
}

impl RepoRules {
    pub fn admits(&self, repo: &str) -> bool {
        let matches = |globs: &[String]| globs.iter().any(|g| glob::Pattern::new(g).is_ok_and(|p| p.matches(repo)));
        matches(&self.allow) && !matches(&self.deny)
    }

    /// A glob that does not parse, named.
    pub fn validate(&self) -> Result<(), String> {
        match self.allow.iter().chain(&self.deny).find_map(|g| glob::Pattern::new(g).err().map(|e| (g, e))) {
            Some((glob, e)) => Err(format!("repos: {glob:?} is not a glob: {e}")),
            None => Ok(()),
        }
    }
}

/// The repo a hub path names, if it names one: the API's
/// (`/api/models/org/name/...`, `/api/resolve-cache/datasets/...`), a
/// file's (`/org/name/resolve/...`, `/datasets/org/name/resolve/...`), git's
/// (`/org/name.git/...`).
pub fn repo_of(path: &str) -> Option<String> {
    let path = path.split('?').next().unwrap_or_default();
    let (kind, repo) = match path.strip_prefix("/api/resolve-cache/").or_else(|| path.strip_prefix("/api/")) {
        Some(rest) => {
            let (kind, names) = rest.split_once('/')?;
            let kind = kind.strip_suffix('s').filter(|k| matches!(*k, "model" | "dataset" | "space"))?;
            // `gpt2` is one segment: the next one is already the request's own.
            let mut names = names.split('/');
            let first = names.next().filter(|n| !n.is_empty())?;
            match names.next().filter(|n| !n.is_empty() && !API_AFTER_REPO.contains(n)) {
                Some(second) => (kind, format!("{first}/{second}")),
                None => (kind, first.to_owned()),
            }
        }
        None => {
            let (kind, rest) = match path.trim_start_matches('/').split_once('/') {
                Some((kind @ ("datasets" | "spaces"), rest)) => (kind.trim_end_matches('s'), rest),
                _ => ("model", path.trim_start_matches('/')),
            };
            let names: Vec<&str> = rest.split('/').collect();
            // The repo's names end with the one ending `.git`, or before
            // `resolve` or git's own (`info/refs`, `info/lfs`, `git-upload-pack`).
            let git = names.iter().position(|n| n.ends_with(".git")).map(|i| i + 1);
            let end = git.or_else(|| names.iter().position(|n| matches!(*n, "resolve" | "info" | "git-upload-pack" | "git-receive-pack")))?;
            let repo = names[..end].join("/");
            (kind, repo.trim_end_matches(".git").to_owned())
        }
    };
    if repo.is_empty() {
        return None;
    }
    Some(if kind == "model" { repo } else { format!("{kind}s/{repo}") })
}

/// What follows a one-segment repo id in an API path.
const API_AFTER_REPO: &[&str] = &["resolve", "revision", "tree", "paths-info", "xet-read-token", "xet-write-token", "refs", "commit", "preupload"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_their_repo_as_huggingface_hub_writes_it() {
        assert_eq!(repo_of("/api/models/org/name/revision/main").as_deref(), Some("org/name"));
        assert_eq!(repo_of("/api/datasets/org/d/tree/main/sub?recursive=True").as_deref(), Some("datasets/org/d"));
        assert_eq!(repo_of("/api/models/gpt2/revision/main").as_deref(), Some("gpt2"));
        assert_eq!(repo_of("/api/resolve-cache/models/org/name/0123/README.md").as_deref(), Some("org/name"));
        assert_eq!(repo_of("/org/name/resolve/main/model.bin").as_deref(), Some("org/name"));
        assert_eq!(repo_of("/datasets/org/d/resolve/main/x.parquet").as_deref(), Some("datasets/org/d"));
        assert_eq!(repo_of("/spaces/org/s/resolve/main/app.py").as_deref(), Some("spaces/org/s"));
        assert_eq!(repo_of("/org/name.git/info/refs?service=git-upload-pack").as_deref(), Some("org/name"));
        assert_eq!(repo_of("/org/name/info/refs?service=git-upload-pack").as_deref(), Some("org/name"));
        assert_eq!(repo_of("/datasets/org/d/git-upload-pack").as_deref(), Some("datasets/org/d"));
        assert_eq!(repo_of("/api/whoami-v2"), None);
        assert_eq!(repo_of("/"), None);
        assert_eq!(repo_of("/favicon.ico"), None, "not a repo's path");
    }

    #[test]
    fn rules_allow_then_deny_by_glob() {
        let rules = RepoRules { allow: vec!["org/*".into(), "datasets/*".into()], deny: vec!["org/secret-*".into()] };
        assert!(rules.admits("org/small") && rules.admits("datasets/org/d"));
        assert!(!rules.admits("org/secret-model"), "deny wins");
        assert!(!rules.admits("other/model"), "not allowed");
        let only = |glob: &str| RepoRules { allow: vec![glob.into()], deny: Vec::new() };
        assert!(only("*/*-7b*").admits("meta/llama-7b-hf") && !only("*/*-7b").admits("meta/llama-7b-hf"));
        assert!(only("org/mod?l").admits("org/model") && only("*").admits("datasets/org/d"));
        assert!(only("[").validate().unwrap_err().contains("not a glob"));
    }
}
