//! Bad `respot.toml` files: every error names the file, line, column and key.

use crate::support::Test;

const HEAD: &str = "[deployment]\nname = \"hello\"\n";

/// (name, respot.toml text, expected stderr fragments)
const CASES: &[(&str, &str, &[&str])] = &[
    (
        "aws without regions",
        "[deployment]\nname = \"hello\"\nprovider = \"aws\"\n\n[aws]\nregions = []\n",
        &["respot.toml:6:11: aws.regions: `deployment.provider` is \"aws\" but no region is listed"],
    ),
    (
        "aws without an [aws] section",
        "[deployment]\nname = \"hello\"\nprovider = \"aws\"\n",
        &["respot.toml: aws.regions: `deployment.provider` is \"aws\" but no region is listed"],
    ),
    (
        "count zero",
        "[deployment]\nname = \"hello\"\n\n[[aws.regions]]\nname = \"eu-west-1\"\ncount = 2\n\n[[aws.regions]]\nname = \"us-east-1\"\ncount = 0\n",
        &["respot.toml:10:9: aws.regions[1].count: expected an integer >= 1, got 0"],
    ),
    (
        "unknown key suggests the nearest",
        "[deployment]\nname = \"hello\"\n\n[[aws.regions]]\nname = \"eu-west-1\"\ncont = 2\n",
        &["respot.toml:6:1: aws.regions[0].cont: unknown key `cont`; did you mean `count`?"],
    ),
    (
        "unknown key exchange",
        "[deployment]\nname = \"hello\"\n\n[verify]\nkey_exchange = \"quantum\"\n",
        &[
            "respot.toml:5:16: verify.key_exchange",
            "`fast`",
            "`post-quantum`",
        ],
    ),
    (
        "unknown section",
        "[deployment]\nname = \"hello\"\n\n[verfy]\ntimeout_secs = 5\n",
        &["respot.toml:4:", "unknown key `verfy`; did you mean `verify`?"],
    ),
    (
        "bad deployment name",
        "[deployment]\nname = \"Hello_World\"\n",
        &[
            "respot.toml:2:8: deployment.name: expected 1 to 40 characters of [a-z0-9-]",
            "got `Hello_World`",
        ],
    ),
    (
        "wrong type",
        "[deployment]\nname = \"hello\"\n\n[local]\ncount = \"two\"\n",
        &["respot.toml:5:9: local.count: invalid type: string \"two\", expected an integer >= 0"],
    ),
    (
        "missing name",
        "[deployment]\nprovider = \"local\"\n",
        &["respot.toml", "deployment: missing field `name`"],
    ),
    (
        "unknown provider",
        "[deployment]\nname = \"hello\"\nprovider = \"gcp\"\n",
        &["respot.toml:3:12: deployment.provider: unknown variant `gcp`, expected `local` or `aws`"],
    ),
    (
        "syntax error",
        "[deployment]\nname = \"hello\nx = 1\n",
        &["respot.toml:2:"],
    ),
    (
        "missing login key gets the ssh-keygen command",
        "[deployment]\nname = \"hello\"\n\n[ssh]\nauthorized_key = \"keys/me.pub\"\n",
        &[
            "respot.toml:5:18: ssh.authorized_key: public key",
            "keys/me.pub` does not exist; create it with `ssh-keygen -t ed25519 -f",
            "keys/me`",
        ],
    ),
    (
        "bad cidr",
        "[deployment]\nname = \"hello\"\n\n[ssh]\nallow_cidr = \"10.0.0.0/40\"\n",
        &["respot.toml:5:14: ssh.allow_cidr: expected an IPv4 CIDR"],
    ),
    (
        "bad probe path",
        "[deployment]\nname = \"hello\"\n\n[[verify.http]]\nport = 8080\npath = \"health; rm -rf /\"\n",
        &["respot.toml:6:8: verify.http[0].path: expected an absolute URL path"],
    ),
    (
        "missing template",
        "[deployment]\nname = \"hello\"\ntemplate = \"nope.yaml\"\n",
        &[
            "respot.toml:3:12: deployment.template: template file",
            "nope.yaml` does not exist",
        ],
    ),
    (
        "bad image alias",
        "[deployment]\nname = \"hello\"\n\n[aws]\nimage = \"ubuntu-99.04\"\n",
        &["respot.toml:5:9: aws.image: expected a literal `ami-...` id or one of `ubuntu-24.04`"],
    ),
    (
        "duplicate region",
        "[deployment]\nname = \"hello\"\n\n[[aws.regions]]\nname = \"eu-west-1\"\ncount = 1\n\n[[aws.regions]]\nname = \"eu-west-1\"\ncount = 1\n",
        &["respot.toml:9:8: aws.regions[1].name: region `eu-west-1` is listed twice"],
    ),
    (
        "price must be positive",
        "[deployment]\nname = \"hello\"\n\n[aws]\nmax_price = -1.0\n",
        &["respot.toml:5:13: aws.max_price: expected a price in USD per hour > 0, got -1"],
    ),
    (
        "local memory too small",
        "[deployment]\nname = \"hello\"\n\n[local]\nmemory_mib = 64\n",
        &["respot.toml:5:14: local.memory_mib: expected an integer from 256 to 65536, got 64"],
    ),
    (
        "files glob matches nothing",
        "[deployment]\nname = \"hello\"\n\n[[files]]\npath = \"files/opt/nope/*.sh\"\nowner = \"app\"\n",
        &["respot.toml:5:8: files[0].path: `files/opt/nope/*.sh` matches no file in `instance`"],
    ),
    (
        "files literal path is not a file",
        "[deployment]\nname = \"hello\"\n\n[[files]]\npath = \"files/opt/hello\"\nmode = \"0600\"\n",
        &["respot.toml:5:8: files[0].path: `files/opt/hello` is not a file in `instance`"],
    ),
    (
        "files path outside files/",
        "[deployment]\nname = \"hello\"\n\n[[files]]\npath = \"/opt/hello/health.py\"\n",
        &["respot.toml:5:8: files[0].path: expected a path or glob under `files/`"],
    ),
    (
        "mode not octal",
        "[deployment]\nname = \"hello\"\n\n[[files]]\npath = \"files/opt/hello/*\"\nmode = \"0800\"\n",
        &[
            "respot.toml:6:8: files[0].mode: expected an octal mode of 3 or 4 digits 0-7 such as \"0640\", got `0800`",
        ],
    ),
    (
        "mode as a number",
        "[deployment]\nname = \"hello\"\n\n[[directories]]\npath = \"/var/lib/hello\"\nmode = 750\n",
        &["respot.toml:6:8: directories[0].mode: write the mode as a quoted octal string"],
    ),
    (
        "owner not user[:group]",
        "[deployment]\nname = \"hello\"\n\n[[files]]\npath = \"files/opt/hello/health.py\"\nowner = \"Hello World\"\n",
        &[
            "respot.toml:6:9: files[0].owner: expected `user` or `user:group` of [a-z_][a-z0-9_-]*, got `Hello World`",
        ],
    ),
    (
        "group given twice",
        "[deployment]\nname = \"hello\"\n\n[[directories]]\npath = \"/var/lib/hello\"\nowner = \"hello:hello\"\ngroup = \"adm\"\n",
        &["respot.toml:7:9: directories[0].group: the group is given twice"],
    ),
    (
        "owned by the verification account",
        "[deployment]\nname = \"hello\"\n\n[[directories]]\npath = \"/var/lib/hello\"\nowner = \"respot-verify\"\n",
        &["respot.toml:6:9: directories[0].owner: `respot-verify` is respot's verification account"],
    ),
    (
        "directory at respot's own path",
        "[deployment]\nname = \"hello\"\n\n[[directories]]\npath = \"/etc/respot/x\"\n",
        &["respot.toml:5:8: directories[0].path: `/etc/respot/x` is respot's own"],
    ),
    (
        "secret without a source for local",
        "[deployment]\nname = \"hello\"\n\n[[secrets]]\npath = \"/etc/hello/token\"\nssm = \"/hello/token\"\n",
        &[
            "respot.toml",
            "secrets[0]: secret `/etc/hello/token` has no source for provider \"local\"; add `local_file",
        ],
    ),
    (
        "secret without a source for aws",
        "[deployment]\nname = \"hello\"\nprovider = \"aws\"\n\n[[aws.regions]]\nname = \"eu-west-1\"\ncount = 1\n\n[[secrets]]\npath = \"/etc/hello/token\"\nlocal_file = \"token\"\n",
        &[
            "respot.toml",
            "secrets[0]: secret `/etc/hello/token` has no source for provider \"aws\"; add `ssm",
        ],
    ),
    (
        "secret local file missing",
        "[deployment]\nname = \"hello\"\n\n[[secrets]]\npath = \"/etc/hello/token\"\nlocal_file = \"secrets/token\"\n",
        &[
            "respot.toml:6:14: secrets[0].local_file: `",
            "secrets/token` does not exist",
        ],
    ),
    (
        "secret in sudoers.d",
        "[deployment]\nname = \"hello\"\n\n[[secrets]]\npath = \"/etc/sudoers.d/hello\"\nlocal_file = \"respot.toml\"\n",
        &["respot.toml:5:8: secrets[0].path: a secret may not be placed at `/etc/sudoers.d/hello`"],
    ),
    (
        "bad package",
        "[deployment]\nname = \"hello\"\n\n[packages]\napt = [\"jq\", \"curl;rm\"]\n",
        &["respot.toml:5:14: packages.apt[1]: expected `name` or `name=version`"],
    ),
    (
        "unit list names a missing unit",
        "[deployment]\nname = \"hello\"\nunits = [\"hello-health.service\", \"nope.service\"]\n",
        &["respot.toml:3:34: deployment.units[1]: `nope.service` is not a unit in `instance/units/`"],
    ),
    (
        "unit list omits a unit",
        "[deployment]\nname = \"hello\"\nunits = [\"hello-health.service\"]\n",
        &["respot.toml:3:9: deployment.units: the start order omits `hello-reporter.service`"],
    ),
    (
        "unit listed twice in a group",
        "[deployment]\nname = \"hello\"\nunits = [\"hello-health.service\", [\"hello-reporter.service\", \"hello-health.service\"]]\n",
        &[
            "respot.toml:3:",
            "deployment.units[1][1]: `hello-health.service` is listed twice",
        ],
    ),
];

#[test]
fn bad_config_files_name_line_and_key() {
    let mut failures = Vec::new();
    for (name, text, want) in CASES {
        let test = Test::sample().write("respot.toml", text);
        let out = test
            .context()
            .command()
            .arg("render")
            .output()
            .expect("run respot");
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.code() != Some(2) {
            failures.push(format!(
                "{name}: want exit 2, got {:?}; stderr: {stderr}",
                out.status.code()
            ));
        }
        for fragment in *want {
            if !stderr.contains(fragment) {
                failures.push(format!("{name}: stderr lacks {fragment:?}; stderr: {stderr}"));
            }
        }
        if stderr.contains("panicked") {
            failures.push(format!("{name}: panicked: {stderr}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn missing_config_says_how_to_start() {
    Test::new()
        .args(["render"])
        .status(2)
        .stderr_contains("no `respot.toml` in")
        .stderr_contains("run `respot init`")
        .run();
}

#[test]
fn minimal_config_uses_defaults() {
    Test::sample()
        .write("respot.toml", HEAD)
        .args(["render"])
        .status(0)
        .stdout_contains("#cloud-config")
        .run();
}

#[test]
fn tilde_expands_in_key_paths() {
    let test = Test::sample();
    let home = test.context().home();
    std::fs::create_dir_all(home.join(".ssh")).unwrap();
    std::fs::write(
        home.join(".ssh/id_ed25519.pub"),
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKey person@laptop\n",
    )
    .unwrap();
    let (out, _test) = test
        .write(
            "respot.toml",
            &format!("{HEAD}\n[ssh]\nauthorized_key = \"~/.ssh/id_ed25519.pub\"\n"),
        )
        .args(["render"])
        .status(0)
        .run();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("- \"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKey person@laptop\""),
        "{stdout}"
    );
}

/// Bad `[traffic]` sections: each exits 2 naming file:line:col and key.
#[test]
fn bad_traffic_sections_name_line_and_key() {
    const ARN: &str = "arn:aws:elasticloadbalancing:us-east-1:123456789012:listener/app/web/50dc6c495c0c9188/f2f7dc8efc522ab2";
    let aws = "[deployment]\nname = \"hello\"\nprovider = \"aws\"\n\n[[aws.regions]]\nname = \"eu-west-1\"\ncount = 1\n\n";
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "aws part with the local provider",
            format!("{HEAD}\n[traffic]\nport = 8000\n\n[traffic.aws]\nlisteners = []\n"),
            "respot.toml:7:1: traffic.aws: `[traffic.aws]` is for the aws provider, but `deployment.provider` is \"local\"",
        ),
        (
            "listener in another region",
            format!(
                "{aws}[traffic]\n\n[[traffic.aws.listeners]]\nregion = \"eu-west-1\"\nlistener_arn = \"{ARN}\"\n"
            ),
            "respot.toml:13:16: traffic.aws.listeners[0].listener_arn: this listener is in `us-east-1`, not `eu-west-1`",
        ),
        (
            "health path without a leading slash",
            format!("{HEAD}\n[traffic]\nport = 8000\nhealth_path = \"health\"\n"),
            "respot.toml:6:15: traffic.health_path: expected an absolute URL path starting with `/`",
        ),
        (
            "steps not ending at 100",
            format!("{HEAD}\n[traffic]\nport = 8000\nsteps = [10, 50]\n"),
            "respot.toml:6:9: traffic.steps: the last step must be 100",
        ),
        (
            "steps falling",
            format!("{HEAD}\n[traffic]\nport = 8000\nsteps = [50, 10, 100]\n"),
            "respot.toml:6:14: traffic.steps[1]: expected rising percentages from 1 to 100, got 10",
        ),
        (
            "local door without a port",
            format!("{HEAD}\n[traffic]\nguest_port = 8080\n"),
            "respot.toml:4:1: traffic: the local front door needs `port`",
        ),
        (
            "error rate above 1",
            format!("{HEAD}\n[traffic]\nport = 8000\nmax_error_rate = 5\n"),
            "respot.toml:6:18: traffic.max_error_rate: expected a share from 0 to 1",
        ),
        (
            "probe url over https",
            format!(
                "{aws}[traffic]\n\n[[traffic.aws.listeners]]\nregion = \"eu-west-1\"\n\
                 listener_arn = \"{}\"\nprobe_url = \"https://web.example.com/health\"\n",
                ARN.replace("us-east-1", "eu-west-1")
            ),
            "respot.toml:14:13: traffic.aws.listeners[0].probe_url: expected a plain-HTTP URL",
        ),
        (
            "batch neither a count nor a share",
            format!("{HEAD}\n[traffic]\nport = 8000\nbatch = \"half\"\n"),
            "respot.toml:6:9: traffic.batch: expected a count such as 2 or a share such as \"25%\", got `half`",
        ),
    ];
    let mut failures = Vec::new();
    for (name, text, want) in &cases {
        let test = Test::sample().write("respot.toml", text);
        let out = test
            .context()
            .command()
            .arg("render")
            .output()
            .expect("run respot");
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.code() != Some(2) || !stderr.contains(want) || stderr.contains("panicked") {
            failures.push(format!(
                "{name}: want exit 2 and {want:?}, got {:?}: {stderr}",
                out.status.code()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn files_directories_secrets_packages_and_units_parse() {
    let text = format!(
        "{HEAD}units = [\"hello-reporter.service\", [\"hello-health.service\"]]\n\n\
         [[files]]\npath = \"files/opt/hello/*\"\nowner = \"hello:hello\"\nmode = \"0640\"\n\n\
         [[files]]\npath = \"files/opt/**/reporter.sh\"\nmode = \"0750\"\ntemplate = true\n\n\
         [[directories]]\npath = \"/var/lib/hello\"\nowner = \"hello\"\n\n\
         [[secrets]]\npath = \"/etc/hello/token\"\nowner = \"hello\"\nlocal_file = \"token.txt\"\nssm = \"/hello/token\"\n\n\
         [packages]\napt = [\"jq=1.7*\", \"curl\"]\n"
    );
    Test::sample()
        .write("respot.toml", &text)
        .write("token.txt", "s3cret\n")
        .args(["render"])
        .status(0)
        .run();
}
