//! The `git-gate` sidecar: serves the declared remotes to the agent over git smart HTTP on
//! loopback (real `git http-backend` behind a small front), each backed by a local mirror of
//! the upstream. A pre-receive hook ([`hook`]) scans every object a push adds with gitleaks
//! and forwards clean pushes upstream over SSH with the pinned host key; the agent holds no
//! git credential and never reaches a git host itself.

pub mod broker;
pub mod hook;
pub mod mirror;
pub mod objects;
pub mod scan;
pub mod server;
pub mod ssh;
pub mod unpack;

pub use server::run;
