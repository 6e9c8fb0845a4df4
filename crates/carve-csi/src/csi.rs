//! Code generated from proto/csi.proto, kept in its own module so nothing else
//! in the crate is subject to the generator's lint exceptions.
#![allow(clippy::all, missing_docs, rustdoc::all)]
tonic::include_proto!("csi.v1");
