//! The SSH key exchange respot's verification offers, from
//! `verify.key_exchange` and what the local `ssh -Q kex` lists.
//!
//! OpenSSH 9.x prefers `sntrup761x25519`, a post-quantum hybrid whose key
//! generation is slow in OpenSSH's portable code: measured here, ~40 ms of
//! the operator's CPU per connection, two thirds of respot's whole cost per
//! verified instance (BENCHMARKS.md). Verification carries hashes and unit
//! states, not secrets, and logs in with a pinned ed25519 host key and
//! identity either way, so `fast` (the default) offers ML-KEM's hybrid
//! where both ends have it (OpenSSH 9.9+; fast and post-quantum) and
//! X25519 otherwise; `post-quantum` offers only the hybrids.

use std::sync::OnceLock;

use super::VerifyError;
use crate::config::KeyExchange;

const MLKEM: &str = "mlkem768x25519-sha256";

/// In order of preference.
const FAST: &[&str] = &[MLKEM, "curve25519-sha256", "curve25519-sha256@libssh.org"];
const POST_QUANTUM: &[&str] = &[
    MLKEM,
    "sntrup761x25519-sha512",
    "sntrup761x25519-sha512@openssh.com",
];

/// The key exchanges the local ssh implements (`ssh -Q kex`), read once;
/// empty when it cannot be asked (connecting then says why).
fn local_kex() -> &'static [String] {
    static KEX: OnceLock<Vec<String>> = OnceLock::new();
    KEX.get_or_init(|| {
        std::process::Command::new("ssh")
            .args(["-Q", "kex"])
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| {
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    })
}

/// The `KexAlgorithms` value for `choice`; `None` leaves ssh's default.
pub fn algorithms(choice: KeyExchange) -> Result<Option<String>, VerifyError> {
    choose(choice, local_kex())
}

fn choose(choice: KeyExchange, local: &[String]) -> Result<Option<String>, VerifyError> {
    let wanted = match choice {
        KeyExchange::Fast => FAST,
        KeyExchange::PostQuantum => POST_QUANTUM,
    };
    let offered: Vec<&str> = wanted
        .iter()
        .copied()
        .filter(|k| local.iter().any(|l| l == k))
        .collect();
    match (offered.is_empty(), choice) {
        (false, _) => Ok(Some(offered.join(","))),
        (true, KeyExchange::Fast) => Ok(None),
        (true, KeyExchange::PostQuantum) => Err(VerifyError::NoPostQuantumKex {
            wanted: wanted.join(", "),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn fast_skips_sntrup_and_takes_mlkem_where_ssh_has_it() {
        let debian12 = list(&[
            "curve25519-sha256",
            "curve25519-sha256@libssh.org",
            "sntrup761x25519-sha512@openssh.com",
        ]);
        assert_eq!(
            choose(KeyExchange::Fast, &debian12).unwrap().as_deref(),
            Some("curve25519-sha256,curve25519-sha256@libssh.org")
        );
        let recent = list(&[MLKEM, "curve25519-sha256", "sntrup761x25519-sha512"]);
        assert_eq!(
            choose(KeyExchange::Fast, &recent).unwrap().as_deref(),
            Some("mlkem768x25519-sha256,curve25519-sha256")
        );
        assert_eq!(choose(KeyExchange::Fast, &[]).unwrap(), None, "ssh's default");
    }

    #[test]
    fn post_quantum_offers_only_hybrids_or_refuses() {
        let debian12 = list(&["curve25519-sha256", "sntrup761x25519-sha512@openssh.com"]);
        assert_eq!(
            choose(KeyExchange::PostQuantum, &debian12).unwrap().as_deref(),
            Some("sntrup761x25519-sha512@openssh.com")
        );
        let old = list(&["curve25519-sha256"]);
        let err = choose(KeyExchange::PostQuantum, &old).unwrap_err();
        assert!(err.to_string().contains("OpenSSH 8.5"), "{err}");
        assert_eq!(err.exit_status(), crate::exit::ExitStatus::Usage);
    }
}
