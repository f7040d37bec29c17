//! The `Bottle` custom resource: what users write, and the status the operator reports.
//!
//! These types are the CRD's schema (via schemars) and nothing else: meaning and validation
//! live in [`crate::contract::model`], which turns a spec into a domain value free of Kubernetes types.

mod v1alpha1;

pub use v1alpha1::*;
