//! The Python fixtures' common start: run a script from `tests/fixtures/`
//! in the test virtualenv with a piped stdin (it exits when the pipe
//! closes, so it never outlives the test) and read its one JSON ready line.

use std::process::Stdio;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::hf::venv_python;
use crate::workspace_root;

/// Starts `tests/fixtures/<script>` with `args`; returns it and its ready line.
pub async fn spawn(script: &str, args: &[&str]) -> (Child, Value) {
    let path = workspace_root().join("tests/fixtures").join(script);
    let mut child = Command::new(venv_python())
        .arg(&path)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("start {script}: {e}"));
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = stdout.next_line().await.unwrap().unwrap_or_else(|| panic!("{script} exited before it was ready (see its stderr)"));
    let ready = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{script}'s ready line is not JSON ({e}): {line}"));
    (child, ready)
}

/// The string field `name` of a ready line.
pub fn url(ready: &Value, name: &str) -> String {
    ready[name].as_str().unwrap_or_else(|| panic!("no {name:?} in the ready line {ready}")).to_owned()
}
