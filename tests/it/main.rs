//! Integration tests: they drive the real `respot` binary.

#[path = "../support/mod.rs"]
mod support;

mod aws;
mod config;
mod front_door;
mod local;
mod render;
mod verify;
