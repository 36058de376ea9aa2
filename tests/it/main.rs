//! Integration tests: they drive the real `respot` binary.

#[path = "../support/mod.rs"]
mod support;

mod aws;
mod config;
mod local;
mod realistic;
mod render;
mod verify;
