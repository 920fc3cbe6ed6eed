//! The Python virtualenv of the test fixtures (`target/hf-venv`): the real
//! `huggingface_hub` client and the giftless LFS server (hf-mirror), and
//! Pillow (image-cache's Replicate stand-in and transform reference), pinned
//! in `tests/fixtures/hf/requirements.txt`. Reinstalled when that file changes.

use std::path::Path;
use std::process::Command;

use anyhow::Context;

use crate::run;

pub fn ensure_venv(root: &Path) -> anyhow::Result<()> {
    let venv = root.join("target/hf-venv");
    let requirements = root.join("tests/fixtures/hf/requirements.txt");
    let wanted = std::fs::read_to_string(&requirements).with_context(|| format!("read {}", requirements.display()))?;
    let stamp = venv.join("installed-requirements.txt");
    if std::fs::read_to_string(&stamp).is_ok_and(|installed| installed == wanted) {
        return Ok(());
    }
    eprintln!("xtask: installing the Python test clients into {}", venv.display());
    run(Command::new(python3()).args(["-m", "venv", "--clear"]).arg(&venv))?;
    run(Command::new(venv.join("bin/pip")).args(["install", "--quiet", "--disable-pip-version-check", "-r"]).arg(&requirements))?;
    std::fs::write(&stamp, wanted)?;
    Ok(())
}

fn python3() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".into())
}
