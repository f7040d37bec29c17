//! The custom resources: `Bottle` (what users write, and the status the operator reports)
//! and `AccessRequest` (a bottle asks for more egress, a person decides).
//!
//! These types are the CRD's schema (via schemars) and nothing else: meaning and validation
//! live in [`crate::contract::model`], which turns a spec into a domain value free of Kubernetes types.

mod access_request;
mod v1alpha1;

pub use access_request::*;
pub use v1alpha1::*;
