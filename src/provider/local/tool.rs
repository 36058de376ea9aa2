//! Running the tools that make and start a VM (qemu-img, genisoimage,
//! qemu itself).

use std::os::unix::process::CommandExt;
use std::process::Command;

use super::{ProviderError, Result};

/// Runs a tool that writes into an instance's directory with umask 077, so
/// what it creates (overlay, seed image, console log, QMP socket, PID file)
/// is private to this user like the rest of the state.
pub(super) fn run_tool(command: &mut Command) -> Result<()> {
    // SAFETY: umask(2) is async-signal-safe and touches only the child.
    unsafe {
        command.pre_exec(|| {
            libc::umask(0o077);
            Ok(())
        });
    }
    // qemu daemonizes and outlives respot: nothing inherited stays open.
    crate::process::close_inherited_fds(command);
    let program = command.get_program().to_string_lossy().to_string();
    let output = command.output().map_err(|source| ProviderError::ToolStart {
        tool: program.clone(),
        source,
    })?;
    if output.status.success() {
        Ok(())
    } else {
        Err(ProviderError::ToolFailed {
            tool: program,
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        })
    }
}
