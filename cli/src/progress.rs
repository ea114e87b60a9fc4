//! Progress bars on stderr for long scans, shown only when stderr is a
//! terminal (so pipes, files and tests get none of it).

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

/// A bar over `total` bytes labelled `what`; hidden unless stderr is a
/// terminal.
pub(crate) fn bytes(total: u64, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_string());
    bar
}

/// The bytes of the files under `dir` (to `depth` levels) whose extension
/// is `extension`: the total a scan of them will go through.
pub(crate) fn total_bytes(dir: &std::path::Path, extension: &str, depth: usize) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|entry| {
            let path = entry.path();
            match std::fs::symlink_metadata(&path) {
                Ok(meta) if meta.is_dir() && depth > 0 => total_bytes(&path, extension, depth - 1),
                Ok(meta) if meta.is_file() && path.extension().is_some_and(|e| e == extension) => {
                    meta.len()
                }
                _ => 0,
            }
        })
        .sum()
}
