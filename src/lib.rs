//! respot: EC2 spot fleets, the immutable way.
//!
//! The binary (`main.rs`) parses the command line (`cli`), resolves it into
//! options (`settings`) and hands them to one command (`commands`). Each
//! other module owns one concept: `config` the blueprint settings,
//! `template` the user-data, `engine` the lifecycle against any provider,
//! `provider` where instances run, `verify` read-only checks over SSH,
//! `keys` the operator's SSH material, `paths` where respot keeps things,
//! `output` what reaches the terminal, `progress` the phases of a launch
//! and the summary a run ends with, `exit` the exit-status contract,
//! `guest` the files respot itself puts on every instance.

pub mod cli;
pub mod commands;
pub mod config;
pub mod engine;
pub mod error;
pub mod exit;
pub mod guest;
pub mod history;
pub mod keys;
pub mod lock;
pub mod output;
pub mod paths;
pub mod progress;
pub mod provenance;
pub mod provider;
pub mod scaffold;
pub mod settings;
pub mod template;
pub mod traffic;
pub mod verify;
