//! respot: EC2 spot fleets, the immutable way.
//!
//! The binary (`main.rs`) wires the CLI to these modules. Each owns one
//! concept: `config` the blueprint settings, `template` the user-data,
//! `guest` respot's own files on the instance, `scaffold` new blueprints,
//! `output` what reaches the terminal.

pub mod config;
pub mod engine;
pub mod error;
pub mod exit;
pub mod guest;
pub mod keys;
pub mod output;
pub mod provider;
pub mod scaffold;
pub mod template;
pub mod verify;
