//! The local provider: the identical user-data booted in QEMU virtual
//! machines on this computer.
//!
//! Each instance is a copy-on-write overlay on the cached Debian image, a
//! NoCloud seed holding the same packed user-data AWS would get, and a
//! daemonised `qemu-system-x86_64` whose guest reaches nothing but its
//! forwarded SSH port on 127.0.0.1 (`-netdev user,restrict=on`). Its state
//! lives in `$XDG_STATE_HOME/respot/local/<deployment>/<instance-id>/`: the
//! tags, the PID, the port, the overlay, the seed and the console log. A PID
//! is only ever signalled after its command line proves it is our qemu.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

mod fleet;
mod secrets;
mod tool;

use tool::run_tool;

use super::{
    DestroyReport, Instance, InstanceId, InstanceState, Inventory, LaunchRequest, Lifecycle, PlannedRegion,
    PoolKey, Provider, ProviderError, RegionCount, Result, SshEndpoint, tag,
};
use crate::config::{Accel, Config};
use crate::paths;
use crate::template::Digest;

const QEMU: &str = "qemu-system-x86_64";
/// How long a guest gets to power off through ACPI before it is killed.
const POWERDOWN_GRACE: Duration = Duration::from_secs(10);

/// What `instance.json` records: the same tag set as on AWS, plus where
/// the VM's process and port are.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    id: String,
    name: String,
    deployment: String,
    digest: String,
    version: String,
    generation: u64,
    created_at: String,
    ssh_port: u16,
    forwards: Vec<(u16, u16)>,
    accel: String,
    memory_mib: u32,
    cpus: u32,
    tags: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
pub struct LocalProvider {
    count: u32,
    memory_mib: u32,
    cpus: u32,
    accel: Accel,
    forward_ports: Vec<u16>,
    image_dir: PathBuf,
    state_root: PathBuf,
    /// `[[secrets]]`' local files, in order, for the seed: each resolved,
    /// and as respot.toml names it (for `list`).
    secrets: Vec<(PathBuf, String)>,
}

impl LocalProvider {
    /// Checks that QEMU and the image exist; touches nothing.
    /// `vms_root` holds every deployment's VMs; `default_image` is used
    /// unless `local.image` names another.
    pub fn new(
        config: &Config,
        vms_root: PathBuf,
        default_image: PathBuf,
        accel_override: Option<Accel>,
    ) -> Result<LocalProvider> {
        let image_dir = match &config.local.image {
            Some(image) => config.base_dir().join(image),
            None => default_image,
        };
        for file in ["disk.raw", "vmlinuz", "initrd.img"] {
            if !image_dir.join(file).is_file() {
                return Err(ProviderError::MissingImage {
                    path: image_dir.join(file),
                });
            }
        }
        for tool in [QEMU, "qemu-img", "genisoimage"] {
            if !on_path(tool) {
                return Err(ProviderError::MissingTool {
                    tool: tool.to_string(),
                    fix: "run `scripts/setup` (it installs qemu-system-x86, qemu-utils and genisoimage)"
                        .to_string(),
                });
            }
        }
        Ok(LocalProvider {
            count: config.local.count,
            memory_mib: config.local.memory_mib,
            cpus: config.local.cpus,
            accel: accel_override.unwrap_or(config.local.accel),
            forward_ports: forwarded_guest_ports(config),
            image_dir,
            state_root: vms_root,
            secrets: config
                .local_secret_files()
                .into_iter()
                .zip(config.secrets.iter().filter_map(|s| s.local_file.clone()))
                .collect(),
        })
    }

    fn deployment_dir(&self, deployment: &str) -> PathBuf {
        self.state_root.join(deployment)
    }

    /// The 127.0.0.1 port forwarded to `guest` on an instance, for the
    /// front door's backends.
    pub fn forwarded_port(&self, deployment: &str, id: &InstanceId, guest: u16) -> Option<u16> {
        let text = std::fs::read_to_string(self.deployment_dir(deployment).join(&id.0).join("instance.json"))
            .ok()?;
        let record: Record = serde_json::from_str(&text).ok()?;
        record
            .forwards
            .iter()
            .find(|(_, g)| *g == guest)
            .map(|(host, _)| *host)
    }

    /// The serial console log of an instance, for `debug`.
    pub fn console_log(&self, deployment: &str, id: &InstanceId) -> PathBuf {
        self.deployment_dir(deployment).join(&id.0).join("console.log")
    }

    fn records(&self, deployment: &str) -> Result<Vec<(PathBuf, Record)>> {
        let dir = self.deployment_dir(deployment);
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) => return Err(io_error(&dir, err)),
        };
        let mut records = Vec::new();
        for entry in entries {
            let path = entry.map_err(|e| io_error(&dir, e))?.path();
            let file = path.join("instance.json");
            let Ok(text) = std::fs::read_to_string(&file) else {
                // A directory without a record is a half-made instance:
                // destroy removes it, list does not show it.
                continue;
            };
            let record: Record = serde_json::from_str(&text).map_err(|source| ProviderError::BadRecord {
                path: file.clone(),
                source,
            })?;
            records.push((path, record));
        }
        records.sort_by(|a, b| a.1.name.cmp(&b.1.name));
        Ok(records)
    }

    fn to_instance(&self, dir: &Path, record: &Record) -> Instance {
        let alive = our_qemu_pid(dir).is_some();
        Instance {
            id: InstanceId(record.id.clone()),
            name: record.name.clone(),
            region: "local".to_string(),
            zone: None,
            instance_type: format!("qemu-{}cpu-{}m-{}", record.cpus, record.memory_mib, record.accel),
            lifecycle: Lifecycle::Vm,
            state: if alive {
                InstanceState::Running
            } else {
                InstanceState::Dead
            },
            state_reason: (!alive).then(|| "qemu process is not running".to_string()),
            public_ip: Some("127.0.0.1".to_string()),
            private_ip: None,
            ssh: Some(SshEndpoint {
                host: "127.0.0.1".to_string(),
                port: record.ssh_port,
            }),
            digest: Digest::parse(&record.digest),
            version: Some(record.version.clone()),
            generation: Some(record.generation),
            launched_at: humantime::parse_rfc3339(&record.created_at).ok(),
            secrets: record
                .tags
                .iter()
                .find(|(key, _)| key == tag::SECRETS)
                .map(|(_, value)| value.clone()),
        }
    }

    fn resolved_accel(&self) -> &'static str {
        match self.accel {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
            Accel::Auto => {
                if kvm_works() {
                    "kvm"
                } else {
                    "tcg"
                }
            }
        }
    }

    fn launch_one(&self, request: &LaunchRequest, index: u32, accel: &str) -> Result<()> {
        let id = new_instance_id()?;
        let name = format!("{}-g{}-{}", request.deployment, request.generation, index + 1);
        let dir = self.deployment_dir(&request.deployment).join(&id);
        private_dir(&dir)?;

        let overlay = dir.join("overlay.qcow2");
        let disk = self.image_dir.join("disk.raw");
        run_tool(
            Command::new("qemu-img")
                .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
                .arg(&disk)
                .arg(&overlay),
        )?;

        let bundle = request.bundle.as_ref().map(|b| b.archive.as_slice());
        let (seed, secret_versions) = write_seed(
            &dir,
            &Identity {
                id: &id,
                name: &name,
                index,
            },
            &request.user_data.packed,
            bundle,
            &self.secrets,
        )?;

        let ssh_port = free_port()?;
        let mut forwards = Vec::new();
        for guest in &self.forward_ports {
            forwards.push((free_port()?, *guest));
        }
        let created_at = SystemTime::now();
        let mut record = Record {
            id: id.clone(),
            name: name.clone(),
            deployment: request.deployment.clone(),
            digest: request.digest.to_string(),
            version: request.version.clone(),
            generation: request.generation,
            created_at: humantime::format_rfc3339_seconds(created_at).to_string(),
            ssh_port,
            forwards: forwards.clone(),
            accel: accel.to_string(),
            memory_mib: self.memory_mib,
            cpus: self.cpus,
            tags: request.tags(&name, created_at),
        };
        record
            .tags
            .extend(secrets::record_tag(&self.secrets, &secret_versions));
        // The record (our tags) exists before the VM does, so an interrupted
        // launch always leaves something `list` and `destroy` can find.
        let record_json = serde_json::to_string_pretty(&record).expect("records are plain data");
        write_file(&dir.join("instance.json"), record_json.as_bytes())?;

        let mut qemu = self.qemu_command(&id, &dir, &seed, accel, ssh_port, &forwards);
        run_tool(&mut qemu)?;
        // qemu sets its own umask (027) when it daemonizes, so what it
        // creates afterwards (the QMP socket) is made private here.
        for name in ["qmp.sock", "qemu.pid", "console.log"] {
            let path = dir.join(name);
            if path.exists() {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                    .map_err(|e| io_error(&path, e))?;
            }
        }
        if our_qemu_pid(&dir).is_none() {
            return Err(ProviderError::VmExited {
                name: name.to_string(),
                console: dir.join("console.log"),
            });
        }
        Ok(())
    }

    /// The qemu command line of one VM: TCG or KVM, the image's kernel, the
    /// overlay and the seed, user networking restricted to the forwarded
    /// ports on 127.0.0.1, and its console, QMP socket and PID in `dir`.
    fn qemu_command(
        &self,
        id: &str,
        dir: &Path,
        seed: &Path,
        accel: &str,
        ssh_port: u16,
        forwards: &[(u16, u16)],
    ) -> Command {
        let overlay = dir.join("overlay.qcow2");
        let mut netdev = format!("user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:{ssh_port}-:22");
        for (host, guest) in forwards {
            netdev.push_str(&format!(",hostfwd=tcp:127.0.0.1:{host}-:{guest}"));
        }
        let mut qemu = Command::new(QEMU);
        qemu.arg("-name")
            .arg(format!("respot-{id}"))
            .args(["-machine", "q35", "-accel", accel, "-m"])
            .arg(self.memory_mib.to_string())
            .arg("-smp")
            .arg(self.cpus.to_string())
            .args(["-display", "none", "-monitor", "none", "-nodefaults"])
            .arg("-kernel")
            .arg(self.image_dir.join("vmlinuz"))
            .arg("-initrd")
            .arg(self.image_dir.join("initrd.img"))
            .args(["-append", "root=/dev/vda rw console=ttyS0 ds=nocloud"])
            .arg("-drive")
            .arg(format!("file={},if=virtio,format=qcow2", overlay.display()))
            .arg("-drive")
            .arg(format!(
                "file={},if=virtio,format=raw,readonly=on",
                seed.display()
            ))
            .arg("-netdev")
            .arg(netdev)
            .args(["-device", "virtio-net-pci,netdev=n0"])
            .args(["-device", "virtio-rng-pci"])
            .arg("-serial")
            .arg(format!("file:{}", dir.join("console.log").display()))
            .arg("-qmp")
            .arg(format!(
                "unix:{},server=on,wait=off",
                dir.join("qmp.sock").display()
            ))
            .arg("-pidfile")
            .arg(dir.join("qemu.pid"))
            .arg("-daemonize");
        qemu
    }

    /// Stops one VM: ACPI power-off through QMP, then SIGKILL after a grace
    /// period. Only a PID whose command line names this instance's overlay
    /// is ever signalled.
    fn stop(&self, dir: &Path) -> std::result::Result<(), String> {
        let Some(pid) = our_qemu_pid(dir) else {
            return Ok(());
        };
        let powered_down = qmp_powerdown(&dir.join("qmp.sock")).is_ok();
        let deadline = Instant::now()
            + if powered_down {
                POWERDOWN_GRACE
            } else {
                Duration::ZERO
            };
        while Instant::now() < deadline {
            if our_qemu_pid(dir).is_none() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        if our_qemu_pid(dir) == Some(pid) {
            // SAFETY: kill(2) with a PID we just matched to our own qemu.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while our_qemu_pid(dir).is_some() {
            if Instant::now() > deadline {
                return Err(format!("qemu pid {pid} survived SIGKILL"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }
}

impl Provider for LocalProvider {
    async fn list(&self, deployment: &str) -> Result<Vec<Instance>> {
        Ok(self
            .records(deployment)?
            .iter()
            .map(|(dir, record)| self.to_instance(dir, record))
            .collect())
    }

    async fn launch(&self, request: &LaunchRequest) -> Result<Vec<Instance>> {
        let accel = self.resolved_accel();
        // A rolling batch adds to what the generation already has.
        let have = self
            .records(&request.deployment)?
            .iter()
            .filter(|(_, r)| r.generation == request.generation)
            .count() as u32;
        let until = request.upto.map_or(self.count, |upto| upto.min(self.count));
        for index in have.min(until)..until {
            let this = self.clone();
            let request = request.clone();
            tokio::task::spawn_blocking(move || this.launch_one(&request, index, accel))
                .await
                .map_err(|e| ProviderError::Task {
                    task: "launch",
                    detail: e.to_string(),
                })??;
        }
        let instances: Vec<Instance> = self
            .list(&request.deployment)
            .await?
            .into_iter()
            .filter(|i| i.generation == Some(request.generation))
            .collect();
        if let Some(dead) = instances.iter().find(|i| i.state != InstanceState::Running) {
            return Err(ProviderError::VmNotRunning {
                name: dead.name.clone(),
            });
        }
        Ok(instances)
    }

    async fn capacity_plan(&self) -> Result<Vec<PlannedRegion>> {
        Ok(vec![PlannedRegion {
            region: "local".to_string(),
            count: self.count,
            instance_type: format!(
                "qemu-{}cpu-{}m-{}",
                self.cpus,
                self.memory_mib,
                self.resolved_accel()
            ),
            lifecycle: Lifecycle::Vm,
            price_per_hour: Some(0.0),
            price_note: None,
        }])
    }

    async fn destroy(&self, deployment: &str, instances: &[Instance], _wait: bool) -> Result<DestroyReport> {
        let this = self.clone();
        let deployment = deployment.to_string();
        let wanted: Vec<String> = instances.iter().map(|i| i.id.0.clone()).collect();
        tokio::task::spawn_blocking(move || this.destroy_blocking(&deployment, &wanted))
            .await
            .map_err(|e| ProviderError::Task {
                task: "destroy",
                detail: e.to_string(),
            })?
    }

    fn wanted(&self) -> Vec<RegionCount> {
        self.wanted_counts()
    }

    async fn launch_more(
        &self,
        request: &LaunchRequest,
        counts: &[RegionCount],
        _avoid: &[PoolKey],
    ) -> Result<Vec<Instance>> {
        let count = counts
            .iter()
            .filter(|c| c.region == fleet::LOCAL)
            .map(|c| c.count)
            .sum();
        self.launch_counted(request, count).await
    }

    /// A local VM gets no notice before it goes.
    async fn interruption_notices(&self, _deployment: &str) -> Result<Vec<InstanceId>> {
        Ok(Vec::new())
    }

    /// One pool, this computer: it never runs out of capacity.
    fn take_pools_without_capacity(&self) -> Vec<PoolKey> {
        Vec::new()
    }

    async fn inventory(&self) -> Result<Inventory> {
        self.all_deployments()
    }
}

impl LocalProvider {
    fn destroy_blocking(&self, deployment: &str, wanted: &[String]) -> Result<DestroyReport> {
        let mut report = DestroyReport::default();
        let root = self.deployment_dir(deployment);
        let dirs: Vec<PathBuf> = match std::fs::read_dir(&root) {
            Ok(entries) => entries.filter_map(|e| e.ok().map(|e| e.path())).collect(),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(err) => return Err(io_error(&root, err)),
        };
        let records = self.records(deployment)?;
        let has_record = |dir: &Path| records.iter().any(|(d, _)| d == dir);
        // Stop the VMs in parallel: each may wait out its power-off grace.
        let targets: Vec<PathBuf> = dirs
            .into_iter()
            .filter(|dir| {
                let id = dir
                    .file_name()
                    .map(|n| n.to_string_lossy().to_string())
                    .unwrap_or_default();
                wanted.contains(&id) || !has_record(dir)
            })
            .collect();
        let results: Vec<(PathBuf, std::result::Result<(), String>)> = std::thread::scope(|scope| {
            let handles: Vec<_> = targets
                .iter()
                .map(|dir| (dir.clone(), scope.spawn(move || self.stop(dir))))
                .collect();
            handles
                .into_iter()
                .map(|(dir, h)| {
                    (
                        dir,
                        h.join()
                            .unwrap_or_else(|_| Err("stop thread panicked".to_string())),
                    )
                })
                .collect()
        });
        for (dir, stopped) in results {
            let id = dir
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default();
            match stopped.and_then(|()| std::fs::remove_dir_all(&dir).map_err(|e| e.to_string())) {
                Ok(()) if has_record(&dir) => report.terminated.push(InstanceId(id)),
                Ok(()) => report.cleaned.push(format!("half-made instance dir {id}")),
                Err(err) => report.left_behind.push(format!("{id}: {err}")),
            }
        }
        // The deployment directory goes once nothing is left in it.
        if std::fs::read_dir(&root).is_ok_and(|mut d| d.next().is_none()) {
            // Best effort: a racing create may have just added an instance.
            let _ = std::fs::remove_dir(&root);
        }
        Ok(report)
    }
}

/// Who a VM is, for its meta-data.
struct Identity<'a> {
    id: &'a str,
    name: &'a str,
    /// Its place in the launch, 0-based, as EC2's `ami-launch-index`.
    index: u32,
}

/// The NoCloud seed of one VM (`seed.iso`, volume `cidata`): the same
/// packed user-data AWS would get; meta-data with the values cloud-init's
/// Jinja gives a template on EC2 (`v1.instance_id`, `v1.region`,
/// `v1.availability_zone`, `ds.meta_data.ami_launch_index`); the bundle, if any, unlimited;
/// and secret N as `secret-N`, 0600, never in the user-data (`respot.place` installs it).
/// Returns the seed and the version of each secret it holds.
fn write_seed(
    dir: &Path,
    who: &Identity,
    user_data: &[u8],
    bundle: Option<&[u8]>,
    secrets: &[(PathBuf, String)],
) -> Result<(PathBuf, Vec<String>)> {
    let seed_dir = dir.join("seed");
    private_dir(&seed_dir)?;
    write_file(&seed_dir.join("user-data"), user_data)?;
    write_file(
        &seed_dir.join("meta-data"),
        format!(
            "instance-id: {}\nlocal-hostname: {}\nregion: local\navailability-zone: local\nami-launch-index: {}\n",
            who.id, who.name, who.index
        )
        .as_bytes(),
    )?;
    let mut files = vec![seed_dir.join("user-data"), seed_dir.join("meta-data")];
    if let Some(archive) = bundle {
        let path = seed_dir.join(crate::guest::SEED_BUNDLE_NAME);
        write_file(&path, archive)?;
        files.push(path);
    }
    let mut versions = Vec::new();
    for (i, (source, _)) in secrets.iter().enumerate() {
        let path = seed_dir.join(crate::template::seed_name(i));
        let content = std::fs::read(source).map_err(|e| io_error(source, e))?;
        write_file(&path, &content)?;
        versions.push(secrets::version(&content));
        files.push(path);
    }
    let seed = dir.join("seed.iso");
    run_tool(
        Command::new("genisoimage")
            .args(["-quiet", "-output"])
            .arg(&seed)
            .args(["-volid", "cidata", "-joliet", "-rock"])
            .args(&files),
    )?;
    Ok((seed, versions))
}

/// The PID in `qemu.pid`, if that process is alive and its command line is
/// our qemu for this instance directory.
fn our_qemu_pid(dir: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(dir.join("qemu.pid")).ok()?;
    let pid: i32 = text.trim().parse().ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    let overlay = dir.join("overlay.qcow2");
    (cmdline.contains(QEMU) && cmdline.contains(&overlay.display().to_string())).then_some(pid)
}

fn qmp_powerdown(socket: &Path) -> std::io::Result<()> {
    let mut stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut greeting = [0u8; 4096];
    let _greeting_len = stream.read(&mut greeting)?;
    stream.write_all(b"{\"execute\":\"qmp_capabilities\"}\n")?;
    let _caps_len = stream.read(&mut greeting)?;
    stream.write_all(b"{\"execute\":\"system_powerdown\"}\n")?;
    let _ack_len = stream.read(&mut greeting)?;
    Ok(())
}

/// KVM only where it really works: the device must be usable and the CPU
/// must expose vmx or svm (nested virtualisation without them hangs).
fn kvm_works() -> bool {
    let device_ok = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    let flags_ok = std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|info| {
        info.lines()
            .any(|l| l.starts_with("flags") && (l.contains(" vmx") || l.contains(" svm")))
    });
    device_ok && flags_ok
}

/// `local.forward_ports`, plus the front door's `traffic.guest_port`.
fn forwarded_guest_ports(config: &Config) -> Vec<u16> {
    let mut ports = config.local.forward_ports.clone();
    if let Some(traffic) = &config.traffic
        && !ports.contains(&traffic.guest_port)
    {
        ports.push(traffic.guest_port);
    }
    ports
}

pub(crate) fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
}

fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|source| ProviderError::Host {
        what: "find a free port on 127.0.0.1",
        source,
    })?;
    let port = listener
        .local_addr()
        .map_err(|source| ProviderError::Host {
            what: "read a bound port",
            source,
        })?
        .port();
    Ok(port)
}

fn new_instance_id() -> Result<String> {
    let mut bytes = [0u8; 8];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|source| ProviderError::Host {
            what: "read /dev/urandom",
            source,
        })?;
    Ok(format!("i-{}", hex::encode(bytes)))
}

/// Writes a state file readable by this user only: the seed holds the
/// generation's host private key.
fn write_file(path: &Path, content: &[u8]) -> Result<()> {
    paths::write_private(path, content).map_err(|e| io_error(path, e))
}

/// The VM's directories are this user's alone (0700).
fn private_dir(dir: &Path) -> Result<()> {
    paths::private_dir(dir).map_err(|e| io_error(dir, e))
}

fn io_error(path: &Path, source: std::io::Error) -> ProviderError {
    ProviderError::Io {
        path: path.to_path_buf(),
        source,
    }
}
