//! Children that outlive respot (qemu with `-daemonize`, HAProxy in
//! master-worker mode) must not keep what respot inherited open: a `flock`
//! held on a descriptor of the caller's shell would be held for as long as
//! the daemon runs.

use std::os::unix::process::CommandExt;
use std::process::Command;

/// Closes every descriptor above stderr in the child, before it execs.
pub fn close_inherited_fds(command: &mut Command) {
    // SAFETY: close_range(2) and close(2) are async-signal-safe and touch
    // only the child.
    unsafe {
        command.pre_exec(|| {
            if libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) != 0 {
                for fd in 3..1024 {
                    libc::close(fd);
                }
            }
            Ok(())
        });
    }
}
