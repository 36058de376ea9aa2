import hashlib, io, os, subprocess, sys, tarfile, tempfile, time, urllib.request
# respot's bundle step, run by cloud-init's bootcmd (python3 -I -c, argv:
# sha256, source) before write_files and runcmd. It fetches the blueprint's
# archive (an https URL, or seed:NAME on the NoCloud seed), checks its
# sha256 BEFORE writing anything, and fails closed with a line in the
# deployment log. Once written, later boots skip it (bootcmd runs each boot).
# A third argument roots every path it writes elsewhere (tests only).
WANT, SOURCE = sys.argv[1], sys.argv[2]
ROOT = sys.argv[3] if len(sys.argv) > 3 else ""
LOG = ROOT + "/var/log/respot/deploy.log"
DONE = ROOT + "/var/lib/respot/bundle.sha256"
def log(message):
    os.makedirs(os.path.dirname(LOG), exist_ok=True)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    with open(LOG, "a") as f:
        f.write("%s bootcmd: bundle %s: %s\n" % (stamp, WANT[:12], message))
def fail(message):
    log("FAILED: %s; nothing written" % message)
    sys.exit(1)
def seed_device():
    for label in ("cidata", "CIDATA"):
        if os.path.exists("/dev/disk/by-label/" + label):
            return "/dev/disk/by-label/" + label
        found = subprocess.run(["blkid", "-t", "LABEL=" + label, "-o", "device"],
                               capture_output=True, text=True).stdout.split()
        if found:
            return found[0]
    raise OSError("no cidata seed")
def from_seed(name):
    device = seed_device()
    mountpoint = tempfile.mkdtemp()
    subprocess.run(["mount", "-o", "ro", device, mountpoint], check=True, capture_output=True)
    try:
        with open(os.path.join(mountpoint, name), "rb") as f:
            return f.read()
    finally:
        subprocess.run(["umount", mountpoint], capture_output=True)
        os.rmdir(mountpoint)
def from_url(url):
    error = None
    for attempt in range(6):
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                return response.read()
        except Exception as e:
            error = e
            time.sleep(2 ** attempt)
    raise error
try:
    with open(DONE) as f:
        if f.read().strip() == WANT:
            sys.exit(0)
except OSError:
    pass
try:
    data = from_seed(SOURCE[5:]) if SOURCE.startswith("seed:") else from_url(SOURCE)
except Exception as e:
    fail("not fetched (%s)" % type(e).__name__)
got = hashlib.sha256(data).hexdigest()
if got != WANT:
    fail("sha256 is %s, want %s" % (got, WANT))
try:
    tar = tarfile.open(fileobj=io.BytesIO(data), mode="r:gz")
    members = tar.getmembers()
except Exception as e:
    fail("not a tar.gz (%s)" % type(e).__name__)
for m in members:
    parts = m.name.split("/")
    if not m.isfile() or m.name.startswith("/") or ".." in parts or "" in parts:
        fail("unexpected entry %r" % m.name)
for m in members:
    path = ROOT + "/" + m.name
    os.makedirs(os.path.dirname(path), exist_ok=True)
    temporary = path + ".respot-new"
    with open(temporary, "wb") as f:
        f.write(tar.extractfile(m).read())
    os.chown(temporary, 0, 0)
    os.chmod(temporary, m.mode & 0o7777)
    os.replace(temporary, path)
os.makedirs(os.path.dirname(DONE), exist_ok=True)
with open(DONE, "w") as f:
    f.write(WANT + "\n")
log("%d files written" % len(members))
