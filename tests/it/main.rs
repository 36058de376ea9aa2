//! Integration tests: they drive the real `respot` binary.

#[path = "../support/mod.rs"]
mod support;

mod access;
mod alb;
mod aws;
mod config;
mod history;
mod local;
mod progress;
mod render;
mod verify;
