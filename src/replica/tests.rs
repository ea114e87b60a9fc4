//! Replication tests: several replica managers in one process.
