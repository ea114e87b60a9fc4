//! Opening a data directory for a command: how many brokers it has, and the
//! plain message for a directory another process holds.

use std::path::Path;

use logbus::{Cluster, ClusterConfig, Error};

/// The number of brokers a cluster directory was written with: one more
/// than the highest `broker-N` directory in it (1 when there is none).
pub(crate) fn brokers_in(dir: &Path) -> u32 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 1;
    };
    entries
        .filter_map(|entry| {
            let name = entry.ok()?.file_name();
            name.to_str()?.strip_prefix("broker-")?.parse::<u32>().ok()
        })
        .max()
        .map_or(1, |last| last + 1)
}

/// The configuration to open `dir` with; refuses a path that is not a
/// directory (opening one would create a cluster there).
fn config_for(dir: &Path, brokers: Option<u32>) -> Result<ClusterConfig, String> {
    if !dir.is_dir() {
        return Err(format!("{} is not a logbus data directory", dir.display()));
    }
    ClusterConfig::builder()
        .brokers(brokers.unwrap_or_else(|| brokers_in(dir)))
        .build()
        .map_err(|e| format!("invalid cluster configuration: {e}"))
}

fn explain(dir: &Path, error: Error) -> String {
    match error {
        Error::DirectoryLocked { .. } => format!(
            "{} is open in another process; this command needs it to itself \
             (close that process first)",
            dir.display()
        ),
        other => format!("cannot open {}: {other}", dir.display()),
    }
}

/// Opens `dir` for a command that changes it (create a topic, produce,
/// reset offsets). `brokers` overrides the count read off the directory.
pub(crate) fn open_for_writing(dir: &Path, brokers: Option<u32>) -> Result<Cluster, String> {
    Cluster::open(dir, config_for(dir, brokers)?).map_err(|e| explain(dir, e))
}

/// Opens `dir` for a command that only reads it (list, describe): a
/// read-only view ([`Cluster::open_read_only`]) that takes no lock and
/// changes no byte, so it works while another process has the directory
/// open. A file that a live writer renamed or removed between the view's
/// listing and its open (a roll, a retention pass) fails the open: it is
/// tried once more.
pub(crate) fn open_for_reading(dir: &Path, brokers: Option<u32>) -> Result<Cluster, String> {
    let config = config_for(dir, brokers)?;
    match Cluster::open_read_only(dir, config.clone()) {
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            Cluster::open_read_only(dir, config).map_err(|e| explain(dir, e))
        }
        other => other.map_err(|e| explain(dir, e)),
    }
}
