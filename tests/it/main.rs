//! Integration tests: they drive the real `respot` binary.

#[path = "../support/mod.rs"]
mod support;

mod access;
mod aws;
mod config;
mod local;
mod render;
mod verify;
