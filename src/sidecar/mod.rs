//! Programs that run inside the bottle Pod, behind the `bottle-sidecar` multi-call binary.

pub mod atomic_file;
pub mod ca_bundle;
pub mod config_status;
pub mod config_sync;
