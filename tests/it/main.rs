//! Integration tests: they drive the real `respot` binary.

#[path = "../support/mod.rs"]
mod support;

mod aws;
mod config;
mod local;
mod progress;
mod render;
mod verify;
