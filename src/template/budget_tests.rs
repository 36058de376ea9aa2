//! respot's share of EC2's 16 KB, measured on the sample as `respot render`
//! measures it: the sample as `respot init` writes it, committed to git,
//! with launch material of the real size (a fresh host key pair and
//! verification key).

use std::path::Path;
use std::process::Command;

use super::{Blueprint, LaunchMaterial};
use crate::config::Config;
use crate::keys::KeyStore;

/// The most respot's own material (inspector, deploy-log, sshd drop-in,
/// probes, manifest, verification account step, keys) may cost of the
/// sample's packed user-data: issue 11's 4 KB. See BENCHMARKS.md
/// ("User-data size") for where it goes. A change that grows respot's
/// share past it fails here.
const RESPOT_SHARE_LIMIT: usize = 4_096;

fn git(dir: &Path, args: &[&str]) {
    let status = Command::new("git")
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@example.com",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .current_dir(dir)
        .status()
        .expect("git runs");
    assert!(status.success(), "git {args:?}");
}

#[test]
fn respots_share_of_the_sample_stays_within_its_limit() {
    let dir = tempfile::tempdir().unwrap();
    let sample = dir.path().join("hello");
    crate::scaffold::init(&sample, "hello").expect("init");
    git(&sample, &["init", "-q"]);
    git(&sample, &["add", "."]);
    git(&sample, &["commit", "-q", "-m", "sample"]);
    let config = Config::load(&sample.join("respot.toml")).expect("the sample loads");
    let blueprint = Blueprint::render(&config).expect("the sample renders");
    let keys = KeyStore::at(&dir.path().join("keys"), "hello");
    let launch = LaunchMaterial {
        generation: 1,
        host_key: Some(keys.host_key(1).unwrap()),
        verify_key: Some(keys.verify_public_key().unwrap()),
        bundle_source: None,
    };
    let user_data = blueprint.user_data(&launch).unwrap();
    let budget = blueprint.budget(&user_data);
    eprintln!("sample budget: {budget:?}");
    assert!(user_data.gzipped);
    assert_eq!(budget.user_bytes + budget.respot_bytes, user_data.packed.len());
    assert!(
        budget.respot_bytes <= RESPOT_SHARE_LIMIT,
        "respot's share of the sample is {} bytes packed, over its {RESPOT_SHARE_LIMIT}",
        budget.respot_bytes
    );
}
