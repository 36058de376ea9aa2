#!/usr/bin/env python3
"""Fault-injecting HTTP proxy for respot's integration tests (stdlib only).

Sits on 127.0.0.1 between an AWS SDK client (AWS_ENDPOINT_URL=http://127.0.0.1:PORT)
and a moto server on loopback. It counts requests per action and per (region, action),
adds a configurable network latency, and can answer matching requests with real EC2
error XML instead of forwarding them.

    python3 fault_proxy.py --listen-port 0 --upstream http://127.0.0.1:5000 \
        [--latency-ms 0] [--port-file F] [--log]

Control API (same port, never counted, no latency):
    GET  /__proxy/health                      -> {"ok": true}
    GET  /__proxy/stats                       -> counters (see README.md)
    GET  /__proxy/faults                      -> {"rules": [... with "remaining"]}
    POST /__proxy/faults   {"rules": [...]}   -> replaces the rules
    POST /__proxy/latency  {"ms": 80}
    POST /__proxy/reset                       -> clears counters, rules, request log
    POST /__proxy/log      {"enabled": true}  -> request log on stderr
    GET  /__proxy/requests                    -> recent requests (ring buffer)
    GET  /__proxy/ec2                         -> the EC2 behaviours below
    POST /__proxy/ec2      {"filter_limit": 200, "group_not_found_ms": 0,
                            "describe_lag_ms": 0, "group_in_use": true}

EC2 behaviours moto lacks (kept across /__proxy/reset):
  filter_limit        a request with more values than this in one filter gets
                      FilterLimitExceeded (EC2's limit, 200; 0 turns it off)
  group_not_found_ms  for this long after CreateSecurityGroup, RunInstances,
                      CreateFleet, AuthorizeSecurityGroupIngress and CreateTags
                      naming the new group get InvalidGroup.NotFound
  describe_lag_ms     DescribeInstances leaves out instances launched (by
                      RunInstances or CreateFleet) less than this long ago
  group_in_use        DeleteSecurityGroup of a group a live instance is in
                      gets DependencyViolation (moto deletes it)
Always, as on EC2: RunInstances naming a group deleted through the proxy gets
InvalidGroup.NotFound (moto launches into it), and a RunInstances and a
DeleteSecurityGroup of the same group never overlap (moto lets a delete pass
while a launch into the group is still being made, and orphans its instances).
A rule with "capacity": N instead of a code gives matching RunInstances only N
instances in all: MaxCount is lowered to what is left (InsufficientInstanceCapacity
once nothing is, or when MinCount is more than what is left).
A CreateFleet rule with "pool": {"InstanceType": ..., "SubnetId": ...} and a code is
an empty pool: the overrides with those values leave the request moto sees, and the
answer gets one <errorSet> item per override dropped, with that code (moto reports
no per-pool errors). With no override left, the proxy answers for moto: no instances.
/moto-api/... is passed through to moto unmodified, uncounted, without latency.
See tests/support/README.md for the rule format.
"""

import argparse
import collections
import fnmatch
import http.client
import http.server
import ipaddress
import json
import os
import re
import signal
import socket
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid

CONTROL_PREFIX = "/__proxy/"
MOTO_API_PREFIX = "/moto-api/"
REQUEST_LOG_SIZE = 2000
UPSTREAM_TIMEOUT_S = 120

# Hop-by-hop headers (RFC 7230 6.1) plus the ones this proxy recomputes.
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "expect",
    "content-length",
}

# HTTP status that real EC2 sends with each error code. EC2 documents "client errors"
# as 4xx and "server errors" as 5xx; observed wire values: RequestLimitExceeded 503,
# InsufficientInstanceCapacity 500, UnauthorizedOperation 403, AuthFailure 401.
DEFAULT_STATUS = {
    "RequestLimitExceeded": 503,
    "Unavailable": 503,
    "ServiceUnavailable": 503,
    "InsufficientInstanceCapacity": 500,
    "InsufficientCapacity": 500,
    "InsufficientHostCapacity": 500,
    "InsufficientAddressCapacity": 500,
    "InsufficientReservedInstanceCapacity": 500,
    "InternalError": 500,
    "InternalFailure": 500,
    "UnauthorizedOperation": 403,
    "AuthFailure": 401,
}

DEFAULT_MESSAGES = {
    "RequestLimitExceeded": "Request limit exceeded.",
    "MaxSpotInstanceCountExceeded": "Max spot instance count exceeded",
    "VcpuLimitExceeded": (
        "You have requested more vCPU capacity than your current vCPU limit of 32 allows "
        "for the instance bucket that the specified instance type belongs to. Please visit "
        "http://aws.amazon.com/contact-us/ec2-request to request an adjustment to this limit."
    ),
    "SpotMaxPriceTooLow": (
        "Your Spot request price of 0.001 is lower than the minimum required Spot request "
        "fulfillment price of 0.0035."
    ),
    "UnauthorizedOperation": "You are not authorized to perform this operation.",
    "AuthFailure": "AWS was not able to validate the provided access credentials",
    "InternalError": "An internal error has occurred",
    "Unavailable": "The server is overloaded and can't handle the request.",
}

EC2_DEFAULTS = {"filter_limit": 200, "group_not_found_ms": 0, "describe_lag_ms": 0, "group_in_use": True}
FILTER_VALUE_RE = re.compile(r"^Filter\.(\d+)\.Value\.(\d+)$")
# Actions whose requests name a group respot just created.
GROUP_USERS = {"RunInstances", "CreateFleet", "AuthorizeSecurityGroupIngress", "CreateTags"}
LIVE_STATES = {"pending", "running", "stopping", "stopped", "shutting-down"}

CREDENTIAL_RE = re.compile(
    r"Credential=([^/,\s]+)/(\d{8})/([^/,\s]+)/([^/,\s]+)/aws4_request"
)


def default_message(code, params, region):
    if code == "InsufficientInstanceCapacity":
        itype = params.get("InstanceType") or "the requested instance type"
        az = params.get("Placement.AvailabilityZone") or ((region or "us-east-1") + "a")
        return (
            "We currently do not have sufficient %s capacity in the Availability Zone you "
            "requested (%s). Our system will be working on provisioning additional capacity. "
            "You can currently get %s capacity by not specifying an Availability Zone in "
            "your request or choosing other Availability Zones." % (itype, az, itype)
        )
    return DEFAULT_MESSAGES.get(code, code)


def xml_escape(text):
    return (
        str(text)
        .replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&quot;")
    )


def ec2_error_xml(code, message, request_id):
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        "<Response><Errors><Error><Code>%s</Code><Message>%s</Message></Error></Errors>"
        "<RequestID>%s</RequestID></Response>"
        % (xml_escape(code), xml_escape(message), xml_escape(request_id))
    ).encode("utf-8")


def ec2_error(status, code, message):
    """A proxied response carrying EC2's error XML."""
    payload = ec2_error_xml(code, message, str(uuid.uuid4()))
    return (status, None, [("Content-Type", "text/xml;charset=UTF-8"), ("Server", "AmazonEC2")], payload)


def filter_overflow(params, limit):
    """(filter name, value count) of the first filter with more than `limit` values."""
    counts = collections.Counter()
    for key in params:
        m = FILTER_VALUE_RE.match(key)
        if m:
            counts[m.group(1)] += 1
    for index, n in sorted(counts.items()):
        if n > limit:
            return params.get("Filter.%s.Name" % index, "?"), n
    return None


def launch_max_count(body):
    """moto launches MinCount instances; EC2 launches up to MaxCount when it has the
    capacity. The request moto sees asks for MaxCount as its minimum too."""
    pairs = urllib.parse.parse_qsl(body.decode("utf-8"), keep_blank_values=True)
    most = dict(pairs).get("MaxCount")
    if most is None:
        return body
    pairs = [(k, most if k == "MinCount" else v) for k, v in pairs]
    return urllib.parse.urlencode(pairs).encode("utf-8")


OVERRIDE_RE = re.compile(r"^LaunchTemplateConfigs\.(\d+)\.Overrides\.(\d+)\.(.+)$")


def fleet_overrides(params):
    """{(config, override): {field: value}} of a CreateFleet's overrides."""
    found = collections.defaultdict(dict)
    for key, value in params.items():
        m = OVERRIDE_RE.match(key)
        if m:
            found[(m.group(1), int(m.group(2)))][m.group(3)] = value
    return found


def pool_matches(fields, pool):
    return all(fields.get(k) == v for k, v in pool.items())


def drop_fleet_pools(body, pool):
    """(body without the overrides matching `pool`, renumbered; the dropped overrides'
    fields; how many overrides are left)."""
    pairs = urllib.parse.parse_qsl(body.decode("utf-8"), keep_blank_values=True)
    overrides = fleet_overrides(dict(pairs))
    dropped = sorted(k for k, fields in overrides.items() if pool_matches(fields, pool))
    renumber = {}
    for config in {c for c, _ in overrides}:
        kept = sorted(n for c, n in overrides if c == config and (c, n) not in dropped)
        for new, old in enumerate(kept, 1):
            renumber[(config, old)] = new
    out = []
    for key, value in pairs:
        m = OVERRIDE_RE.match(key)
        if m:
            where = (m.group(1), int(m.group(2)))
            if where in dropped:
                continue
            key = "LaunchTemplateConfigs.%s.Overrides.%d.%s" % (where[0], renumber[where], m.group(3))
        out.append((key, value))
    left = len(overrides) - len(dropped)
    return urllib.parse.urlencode(out).encode("utf-8"), [overrides[k] for k in dropped], left


def fleet_error_items(params, dropped, code, message):
    """EC2's <errorSet> items of a CreateFleet answer, one per dropped override."""
    template = params.get("LaunchTemplateConfigs.1.LaunchTemplateSpecification.LaunchTemplateId", "")
    lifecycle = "spot" if params.get(
        "TargetCapacitySpecification.DefaultTargetCapacityType") == "spot" else "on-demand"
    items = []
    for fields in dropped:
        overrides = "".join(
            "<%s>%s</%s>" % (tag, xml_escape(fields[name]), tag)
            for name, tag in (("InstanceType", "instanceType"), ("SubnetId", "subnetId"),
                              ("AvailabilityZone", "availabilityZone"))
            if name in fields
        )
        items.append(
            "<item><launchTemplateAndOverrides><launchTemplateSpecification>"
            "<launchTemplateId>%s</launchTemplateId><version>$Latest</version>"
            "</launchTemplateSpecification><overrides>%s</overrides></launchTemplateAndOverrides>"
            "<lifecycle>%s</lifecycle><errorCode>%s</errorCode><errorMessage>%s</errorMessage></item>"
            % (xml_escape(template), overrides, lifecycle, xml_escape(code), xml_escape(message))
        )
    return "".join(items).encode("utf-8")


def with_fleet_errors(payload, items):
    """moto's CreateFleet answer with `items` in its <errorSet>."""
    end = payload.rfind(b"</CreateFleetResponse>")
    if end < 0:
        return payload
    return payload[:end] + b"<errorSet>" + items + b"</errorSet>" + payload[end:]


def empty_fleet_answer(items):
    """The answer of an instant fleet none of whose pools had capacity."""
    return (
        b'<?xml version="1.0" encoding="UTF-8"?>\n'
        b'<CreateFleetResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">'
        b"<requestId>" + str(uuid.uuid4()).encode() + b"</requestId>"
        b"<fleetId>fleet-" + str(uuid.uuid4()).encode() + b"</fleetId>"
        b"<errorSet>" + items + b"</errorSet><fleetInstanceSet/></CreateFleetResponse>"
    )


def xml_texts(payload, tag):
    """Every text of <tag>...</tag> in an XML payload (namespace-agnostic)."""
    return re.findall(rb"<%s>([^<]+)</%s>" % (tag.encode(), tag.encode()), payload)


def drop_instances(payload, hidden):
    """DescribeInstances XML without the instances in `hidden` (empty reservations go too)."""
    import xml.etree.ElementTree as ET

    root = ET.fromstring(payload)
    if root.tag.startswith("{"):
        # Keep EC2's (or moto's) namespace as the default one, unprefixed.
        ET.register_namespace("", root.tag[1:].split("}", 1)[0])
    reservations = root.find("{*}reservationSet")
    if reservations is None:
        return payload
    for reservation in list(reservations):
        instances = reservation.find("{*}instancesSet")
        if instances is None:
            continue
        for item in list(instances):
            if item.findtext("{*}instanceId", default="") in hidden:
                instances.remove(item)
        if len(instances) == 0:
            reservations.remove(reservation)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root)


class RuleError(ValueError):
    pass


class Rule:
    """One fault rule. See README.md for the JSON form."""

    FIELDS = {"action", "region", "match", "code", "status", "message", "times", "delay_ms", "capacity",
              "pool"}

    def __init__(self, obj, index):
        if not isinstance(obj, dict):
            raise RuleError("rule %d: must be an object" % index)
        unknown = set(obj) - self.FIELDS
        if unknown:
            raise RuleError("rule %d: unknown field(s) %s" % (index, sorted(unknown)))
        action = obj.get("action")
        if not isinstance(action, str) or not action:
            raise RuleError("rule %d: 'action' (string) is required" % index)
        self.action = action
        region = obj.get("region")
        if region is not None and not isinstance(region, str):
            raise RuleError("rule %d: 'region' must be a string" % index)
        self.region = region
        match = obj.get("match") or {}
        if not isinstance(match, dict):
            raise RuleError("rule %d: 'match' must be an object" % index)
        self.match = {}
        for key, value in match.items():
            if isinstance(value, bool):
                value = "true" if value else "false"
            if not isinstance(value, (str, int, float)):
                raise RuleError("rule %d: match[%r] must be a string" % (index, key))
            self.match[str(key)] = str(value)
        code = obj.get("code")
        delay = obj.get("delay_ms")
        if delay is not None and (not isinstance(delay, (int, float)) or delay < 0):
            raise RuleError("rule %d: 'delay_ms' must be a number >= 0" % index)
        self.delay_ms = delay or 0
        if code is not None and (not isinstance(code, str) or not code):
            raise RuleError("rule %d: 'code' must be a non-empty string" % index)
        capacity = obj.get("capacity")
        if capacity is not None and (
            not isinstance(capacity, int) or isinstance(capacity, bool) or capacity < 0
        ):
            raise RuleError("rule %d: 'capacity' must be an integer >= 0" % index)
        if capacity is not None and code is not None:
            raise RuleError("rule %d: 'capacity' and 'code' exclude each other" % index)
        self.capacity = capacity
        if code is None and delay is None and capacity is None:
            raise RuleError(
                "rule %d: 'code' is required (or 'delay_ms' for a slow rule, 'capacity' for a small pool)"
                % index
            )
        self.code = code
        pool = obj.get("pool")
        if pool is not None:
            if action != "CreateFleet" or code is None:
                raise RuleError("rule %d: 'pool' is for CreateFleet, with the pool's 'code'" % index)
            if not isinstance(pool, dict) or not pool or not all(
                isinstance(v, str) for v in pool.values()
            ):
                raise RuleError("rule %d: 'pool' maps override fields to strings" % index)
        self.pool = pool
        status = obj.get("status")
        if status is None and code is not None:
            status = DEFAULT_STATUS.get(code, 400)
        if status is not None and (
            not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 599
        ):
            raise RuleError("rule %d: 'status' must be an HTTP status code" % index)
        self.status = status
        message = obj.get("message")
        if message is not None and not isinstance(message, str):
            raise RuleError("rule %d: 'message' must be a string" % index)
        self.message = message
        times = obj.get("times")
        if times is not None and (
            not isinstance(times, int) or isinstance(times, bool) or times < 0
        ):
            raise RuleError("rule %d: 'times' must be an integer >= 0 or null" % index)
        self.remaining = times  # None = forever
        self.times = times
        self.hits = 0

    def matches(self, action, region, params):
        if self.remaining is not None and self.remaining <= 0:
            return False
        if self.action != "*" and self.action != action:
            return False
        if self.region is not None and self.region != region:
            return False
        if self.pool is not None and not any(
            pool_matches(fields, self.pool) for fields in fleet_overrides(params).values()
        ):
            return False
        for key, want in self.match.items():
            if any(c in key for c in "*?["):
                if not any(
                    fnmatch.fnmatchcase(k, key) and v == want for k, v in params.items()
                ):
                    return False
            elif params.get(key) != want:
                return False
        return True

    def to_json(self):
        out = {
            "action": self.action,
            "region": self.region,
            "match": self.match,
            "code": self.code,
            "status": self.status,
            "message": self.message,
            "times": self.times,
            "remaining": self.remaining,
            "hits": self.hits,
        }
        if self.delay_ms:
            out["delay_ms"] = self.delay_ms
        if self.capacity is not None:
            out["capacity"] = self.capacity
        if self.pool is not None:
            out["pool"] = self.pool
        return out


class GroupGate:
    """Holds a sorted list of per-group locks for the length of a with-block."""

    def __init__(self, locks):
        self.locks = locks

    def __enter__(self):
        for lock in self.locks:
            lock.acquire()
        return self

    def __exit__(self, *exc):
        for lock in reversed(self.locks):
            lock.release()
        return False


class State:
    """All mutable proxy state, guarded by one lock (held only for bookkeeping)."""

    def __init__(self, latency_ms, log_enabled):
        self.lock = threading.Lock()
        self.latency_ms = latency_ms
        self.log_enabled = log_enabled
        self.rules = []
        self.ec2 = dict(EC2_DEFAULTS)
        self.new_groups = {}  # group id -> monotonic time created
        self.launched = {}  # instance id -> monotonic time launched
        self.deleted_groups = set()  # group ids deleted through the proxy
        self._group_locks = collections.defaultdict(threading.Lock)
        self._clear_counters()

    def group_gate(self, action, params):
        """Makes RunInstances and DeleteSecurityGroup atomic per group, as on EC2.

        moto launches into a group that a concurrent (or earlier) delete removed; EC2
        either refuses the launch (InvalidGroup.NotFound) or the delete
        (DependencyViolation). Holding the named groups' locks across the check and
        the upstream call gives the same two outcomes."""
        if action == "RunInstances":
            groups = sorted({v for k, v in params.items() if "SecurityGroupId" in k and v})
        elif action == "DeleteSecurityGroup" and params.get("GroupId"):
            groups = [params["GroupId"]]
        else:
            groups = []
        with self.lock:
            locks = [self._group_locks[g] for g in groups]
        return GroupGate(locks)

    def _clear_counters(self):
        self.total = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.by_action = collections.Counter()
        self.by_region_action = collections.defaultdict(collections.Counter)
        self.faults_injected = collections.Counter()
        self.by_status = collections.Counter()
        self.seq = 0
        self.requests = collections.deque(maxlen=REQUEST_LOG_SIZE)

    def reset(self):
        with self.lock:
            self._clear_counters()
            self.rules = []

    def begin(self, action, region, service, params):
        """Count a request, pick a fault rule. Returns (seq, rule or None, latency_ms)."""
        with self.lock:
            self.total += 1
            self.seq += 1
            self.in_flight += 1
            if self.in_flight > self.max_in_flight:
                self.max_in_flight = self.in_flight
            self.by_action[action] += 1
            self.by_region_action[region or "unknown"][action] += 1
            chosen = None
            for rule in self.rules:
                if rule.matches(action, region, params):
                    chosen = rule
                    break
            if chosen is not None:
                chosen.hits += 1
                if chosen.remaining is not None:
                    chosen.remaining -= 1
                if chosen.code is not None:
                    self.faults_injected["%s:%s" % (action, chosen.code)] += 1
            return self.seq, chosen, self.latency_ms

    def other_pool_rules(self, chosen, action, region, params):
        """The CreateFleet pool rules besides `chosen` that match this request;
        each counts as hit."""
        with self.lock:
            found = [r for r in self.rules
                     if r is not chosen and r.pool is not None and r.matches(action, region, params)]
            for r in found:
                r.hits += 1
                if r.remaining is not None:
                    r.remaining -= 1
                self.faults_injected["%s:%s" % (action, r.code)] += 1
            return found

    def count_fault(self, action, code):
        with self.lock:
            self.faults_injected["%s:%s" % (action, code)] += 1

    def end(self, record):
        with self.lock:
            self.in_flight -= 1
            status = record.get("status")
            self.by_status[str(status) if status is not None else "no_response"] += 1
            self.requests.append(record)

    def stats(self):
        with self.lock:
            return {
                "total": self.total,
                "in_flight": self.in_flight,
                "max_in_flight": self.max_in_flight,
                "by_action": dict(self.by_action),
                "by_region_action": {r: dict(c) for r, c in self.by_region_action.items()},
                "faults_injected": dict(self.faults_injected),
                "by_status": dict(self.by_status),
                "latency_ms": _num(self.latency_ms),
                "rules_active": sum(
                    1 for r in self.rules if r.remaining is None or r.remaining > 0
                ),
            }


def _num(x):
    """80.0 -> 80 in JSON output."""
    return int(x) if isinstance(x, float) and x.is_integer() else x


def parse_params(query, body, content_type):
    """Flatten query-string and form parameters (first value wins)."""
    params = {}
    for key, values in urllib.parse.parse_qs(query, keep_blank_values=True).items():
        params[key] = values[0]
    if body and "x-www-form-urlencoded" in (content_type or "").lower():
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            text = body.decode("latin-1")
        for key, values in urllib.parse.parse_qs(text, keep_blank_values=True).items():
            params[key] = values[0]
    return params


def parse_scope(headers, params):
    """Return (region, service) from the SigV4 credential scope, or (None, None)."""
    auth = headers.get("Authorization") or ""
    m = CREDENTIAL_RE.search(auth)
    if m:
        return m.group(3), m.group(4)
    cred = params.get("X-Amz-Credential")
    if cred:
        parts = cred.split("/")
        if len(parts) >= 5:
            return parts[2], parts[3]
    return None, None


class ProxyServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, addr, upstream, state):
        self.upstream_host, self.upstream_port = upstream
        self.state = state
        super().__init__(addr, ProxyHandler)

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, socket.timeout, TimeoutError)):
            return  # client went away: not our problem
        sys.stderr.write("fault_proxy: error handling request from %s: %r\n" % (client_address, exc))


class ProxyHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "respot-fault-proxy/1"
    # Headers and body go out in separate writes; without TCP_NODELAY, Nagle plus the
    # client's delayed ACK would add ~40 ms to every response on loopback.
    disable_nagle_algorithm = True
    timeout = 300  # idle keep-alive connections are closed after this

    def setup(self):
        super().setup()
        self._upstream = None

    def finish(self):
        try:
            super().finish()
        finally:
            self._close_upstream()

    def log_message(self, fmt, *args):  # silence the default access log
        pass

    # --- every method goes through one dispatcher -------------------------------
    def do_GET(self):
        self._dispatch()

    do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = do_GET

    def _dispatch(self):
        try:
            body = self._read_body()
        except ValueError as exc:
            self.close_connection = True  # the stream position is unknown now
            self._send_simple(400, "text/plain", ("bad request body: %s\n" % exc).encode())
            return
        path = urllib.parse.urlsplit(self.path).path
        try:
            if path.startswith(CONTROL_PREFIX):
                self._control(path[len(CONTROL_PREFIX):].strip("/"), body)
            elif path.startswith(MOTO_API_PREFIX):
                self._forward(body)
            else:
                self._proxied(body)
        except (ConnectionError, socket.timeout, TimeoutError):
            raise  # the client went away; ProxyServer.handle_error stays quiet
        except Exception as exc:  # a bug here must not look like a dropped connection
            sys.stderr.write("fault_proxy: internal error on %s %s: %r\n" % (self.command, self.path, exc))
            self.close_connection = True
            try:
                self._send_simple(500, "text/plain; charset=utf-8",
                                  ("fault_proxy internal error: %r\n" % exc).encode("utf-8"))
            except OSError:
                pass

    # --- body handling -----------------------------------------------------------
    def _read_body(self):
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            return self._read_chunked()
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        try:
            n = int(length)
        except ValueError:
            raise ValueError("invalid Content-Length %r" % length)
        if n < 0:
            raise ValueError("negative Content-Length")
        data = self.rfile.read(n)
        if len(data) != n:
            raise ConnectionResetError("client closed mid-body")
        return data

    def _read_chunked(self):
        chunks = []
        while True:
            line = self.rfile.readline(65537)
            if not line:
                raise ConnectionResetError("client closed mid-chunk")
            size_text = line.split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise ValueError("bad chunk size %r" % size_text)
            if size == 0:
                break
            data = self.rfile.read(size)
            if len(data) != size:
                raise ConnectionResetError("client closed mid-chunk")
            chunks.append(data)
            self.rfile.readline(65537)  # CRLF after the chunk
        while True:  # trailers, up to the blank line
            line = self.rfile.readline(65537)
            if not line or line in (b"\r\n", b"\n"):
                break
        return b"".join(chunks)

    # --- responses -----------------------------------------------------------------
    def _send_simple(self, status, content_type, payload):
        self._write_response(status, None, [("Content-Type", content_type)], payload)

    def _send_json(self, status, obj):
        payload = (json.dumps(obj, sort_keys=True) + "\n").encode("utf-8")
        self._send_simple(status, "application/json", payload)

    # --- control API -----------------------------------------------------------------
    def _control(self, name, body):
        state = self.server.state
        method = self.command
        try:
            data = json.loads(body.decode("utf-8")) if body.strip() else {}
        except (ValueError, UnicodeDecodeError) as exc:
            return self._send_json(400, {"error": "invalid JSON: %s" % exc})
        if method == "GET" and name == "health":
            return self._send_json(200, {"ok": True})
        if method == "GET" and name == "stats":
            return self._send_json(200, state.stats())
        if method == "GET" and name == "faults":
            with state.lock:
                rules = [r.to_json() for r in state.rules]
            return self._send_json(200, {"rules": rules})
        if method == "GET" and name == "requests":
            with state.lock:
                reqs = list(state.requests)
            return self._send_json(200, {"requests": reqs})
        if method == "POST" and name == "faults":
            raw = data.get("rules") if isinstance(data, dict) else None
            if not isinstance(raw, list):
                return self._send_json(400, {"error": "expected {\"rules\": [...]}"})
            try:
                rules = [Rule(obj, i) for i, obj in enumerate(raw)]
            except RuleError as exc:
                return self._send_json(400, {"error": str(exc)})
            with state.lock:
                state.rules = rules
                out = [r.to_json() for r in rules]
            return self._send_json(200, {"rules": out})
        if method == "POST" and name == "latency":
            ms = data.get("ms") if isinstance(data, dict) else None
            if not isinstance(ms, (int, float)) or isinstance(ms, bool) or ms < 0:
                return self._send_json(400, {"error": "expected {\"ms\": number >= 0}"})
            with state.lock:
                state.latency_ms = ms
            return self._send_json(200, {"latency_ms": _num(ms)})
        if method == "GET" and name == "ec2":
            with state.lock:
                return self._send_json(200, dict(state.ec2))
        if method == "POST" and name == "ec2":
            if not isinstance(data, dict) or set(data) - set(EC2_DEFAULTS):
                return self._send_json(400, {"error": "expected keys among %s" % sorted(EC2_DEFAULTS)})
            for key, value in data.items():
                kind = bool if key == "group_in_use" else (int, float)
                if not isinstance(value, kind) or (kind is not bool and (isinstance(value, bool) or value < 0)):
                    return self._send_json(400, {"error": "%s: bad value %r" % (key, value)})
            with state.lock:
                state.ec2.update(data)
                return self._send_json(200, dict(state.ec2))
        if method == "POST" and name == "reset":
            state.reset()
            return self._send_json(200, {"reset": True})
        if method == "POST" and name == "log":
            enabled = data.get("enabled") if isinstance(data, dict) else None
            if not isinstance(enabled, bool):
                return self._send_json(400, {"error": "expected {\"enabled\": bool}"})
            with state.lock:
                state.log_enabled = enabled
            return self._send_json(200, {"enabled": enabled})
        return self._send_json(404, {"error": "unknown control endpoint %s %s" % (method, name)})

    # --- the proxied path: count, delay, fault or forward ---------------------------
    def _proxied(self, body):
        state = self.server.state
        started = time.monotonic()
        split = urllib.parse.urlsplit(self.path)
        params = parse_params(split.query, body, self.headers.get("Content-Type"))
        action = params.get("Action")
        if not action:
            target = self.headers.get("X-Amz-Target")
            action = target.rsplit(".", 1)[-1] if target else "unknown"
        region, service = parse_scope(self.headers, params)
        seq, rule, latency_ms = state.begin(action, region, service, params)
        record = {
            "seq": seq,
            "action": action,
            "region": region,
            "service": service,
            "params": params,
            "status": None,
            "fault": None,
        }
        response = None
        try:
            delay = (latency_ms or 0) + (rule.delay_ms if rule is not None else 0)
            if delay > 0:
                time.sleep(delay / 1000.0)
            with state.group_gate(action, params):
                response = self._answer(action, region, params, rule, body, record)
            record["status"] = response[0]
        finally:
            # Book-keeping is finished before the response leaves, so a test that reads
            # /__proxy/stats right after its own response sees settled counters.
            record["ms"] = round((time.monotonic() - started) * 1000.0, 1)
            # When it arrived (monotonic, ms): which calls overlapped.
            record["start_ms"] = round(started * 1000.0, 1)
            state.end(record)
            if state.log_enabled:
                sys.stderr.write(
                    "fault_proxy: #%d %s %s %s -> %s%s (%.0f ms)\n"
                    % (
                        seq,
                        region or "-",
                        service or "-",
                        action,
                        record["status"],
                        " [injected %s]" % record["fault"] if record["fault"] else "",
                        record["ms"],
                    )
                )
                sys.stderr.flush()
        # A client that went away raises here; the server swallows it (the request may
        # still have reached moto, as on a real network).
        self._write_response(*response)

    def _answer(self, action, region, params, rule, body, record):
        """The injected fault, EC2's own refusal, or moto's answer."""
        state = self.server.state
        ec2_fault = self._ec2_fault(action, region, params)
        if ec2_fault is None and rule is not None and rule.capacity is not None:
            ec2_fault, body = self._take_capacity(rule, action, body, params, region)
        if ec2_fault is None and action == "RunInstances":
            body = launch_max_count(body)
        pool_items, pools_left = None, None
        if ec2_fault is None and rule is not None and rule.pool is not None:
            pool_items, dropped = b"", 0
            # Every pool rule that matches empties its pool, not only the first.
            for pool_rule in [rule] + state.other_pool_rules(rule, action, region, params):
                body, gone, pools_left = drop_fleet_pools(body, pool_rule.pool)
                message = pool_rule.message or "There is no Spot capacity available that matches your request."
                pool_items += fleet_error_items(params, gone, pool_rule.code, message)
                dropped += len(gone)
            record["fault"] = "%s (%d pools)" % (rule.code, dropped)
        if ec2_fault is not None:
            code, status, message = ec2_fault
            state.count_fault(action, code)
            record["fault"] = code
            return ec2_error(status, code, message)
        if pool_items is not None and pools_left == 0:
            return (200, "OK", [("Content-Type", "text/xml;charset=UTF-8")],
                    empty_fleet_answer(pool_items))
        if pool_items is not None:
            status, reason, headers, data = self._after_upstream(action, self._fetch_upstream(body))
            if status == 200:
                data = with_fleet_errors(data, pool_items)
            return (status, reason, headers, data)
        if rule is not None and rule.code is not None:
            message = rule.message or default_message(rule.code, params, region)
            record["fault"] = rule.code
            return ec2_error(rule.status, rule.code, message)
        response = self._fetch_upstream(body)
        if action == "DeleteSecurityGroup" and response[0] == 200:
            with state.lock:
                state.deleted_groups.add(params.get("GroupId"))
        return self._after_upstream(action, response)

    # --- EC2 behaviours moto lacks -------------------------------------------------
    def _ec2_fault(self, action, region, params):
        """(code, status, message) when EC2 would refuse this request, else None."""
        state = self.server.state
        with state.lock:
            ec2 = dict(state.ec2)
            now = time.monotonic()
            fresh = {g for g, t in state.new_groups.items() if (now - t) * 1000 < ec2["group_not_found_ms"]}
        limit = ec2["filter_limit"]
        if limit:
            over = filter_overflow(params, limit)
            if over is not None:
                return ("FilterLimitExceeded", 400,
                        "The maximum number of filter values specified on a single call is %d "
                        "(filter %s has %d)" % (limit, over[0], over[1]))
        if action == "RunInstances":
            with state.lock:
                gone = [v for k, v in params.items() if "SecurityGroupId" in k and v in state.deleted_groups]
            if gone:
                # moto launches into a deleted group; EC2 does not.
                return ("InvalidGroup.NotFound", 400,
                        "The security group '%s' does not exist" % gone[0])
        if action in GROUP_USERS and fresh:
            named = [v for v in params.values() if v in fresh]
            if named:
                return ("InvalidGroup.NotFound", 400,
                        "The security group '%s' does not exist" % named[0])
        if action == "DeleteSecurityGroup" and ec2["group_in_use"] and params.get("GroupId"):
            holders = self._group_holders(region, params["GroupId"])
            if holders:
                return ("DependencyViolation", 400,
                        "resource %s has a dependent object" % params["GroupId"])
        return None

    def _group_holders(self, region, group_id):
        """Live instances (any owner) that moto says are in `group_id`: what EC2 checks."""
        body = b"Action=DescribeInstances&Version=2016-11-15"
        headers = {
            "Content-Type": "application/x-www-form-urlencoded; charset=utf-8",
            "Authorization": "AWS4-HMAC-SHA256 Credential=testing/20250101/%s/ec2/aws4_request, "
                             "SignedHeaders=host, Signature=0" % (region or "us-east-1"),
        }
        conn = http.client.HTTPConnection(self.server.upstream_host, self.server.upstream_port,
                                          timeout=UPSTREAM_TIMEOUT_S)
        try:
            conn.request("POST", "/", body, headers)
            payload = conn.getresponse().read()
        finally:
            conn.close()
        import xml.etree.ElementTree as ET

        holders = []
        for item in ET.fromstring(payload).iterfind(".//{*}instancesSet/{*}item"):
            state = item.findtext("{*}instanceState/{*}name", default="")
            groups = {g.text for g in item.iterfind(".//{*}groupId")}
            if state in LIVE_STATES and group_id in groups:
                holders.append(item.findtext("{*}instanceId", default=""))
        return holders

    def _take_capacity(self, rule, action, body, params, region):
        """Gives a RunInstances only what the rule's pool still holds: (fault, body)."""
        if action != "RunInstances":
            return None, body
        state = self.server.state
        want_max = int(params.get("MaxCount", "1"))
        want_min = int(params.get("MinCount", "1"))
        with state.lock:
            left = rule.capacity
            given = min(want_max, left)
            if given == 0 or want_min > left:
                given = 0
            rule.capacity = left - given
        if given == 0:
            return ("InsufficientInstanceCapacity", 500,
                    default_message("InsufficientInstanceCapacity", params, region)), body
        pairs = urllib.parse.parse_qsl(body.decode("utf-8"), keep_blank_values=True)
        pairs = [(k, str(given) if k == "MaxCount" else v) for k, v in pairs]
        return None, urllib.parse.urlencode(pairs).encode("utf-8")

    def _after_upstream(self, action, response):
        """Records what EC2 just created; lets DescribeInstances lag behind it."""
        status, reason, headers, data = response
        if status != 200:
            return response
        state = self.server.state
        now = time.monotonic()
        if action == "CreateSecurityGroup":
            with state.lock:
                for group in xml_texts(data, "groupId"):
                    state.new_groups[group.decode()] = now
        elif action in ("RunInstances", "CreateFleet"):
            with state.lock:
                for instance in xml_texts(data, "instanceId"):
                    state.launched[instance.decode()] = now
        elif action == "DescribeInstances":
            with state.lock:
                lag = state.ec2["describe_lag_ms"]
                hidden = {i for i, t in state.launched.items() if (now - t) * 1000 < lag}
            if hidden:
                data = drop_instances(data, hidden)
                return status, reason, headers, data
        return response

    def _forward(self, body):
        """Pass a request through unmodified and uncounted (used for /moto-api/)."""
        self._write_response(*self._fetch_upstream(body))

    # --- upstream ---------------------------------------------------------------------
    def _close_upstream(self):
        conn = getattr(self, "_upstream", None)
        self._upstream = None
        if conn is not None:
            try:
                conn.close()
            except OSError:
                pass

    def _upstream_request(self, body, headers):
        """Send one request upstream, retrying once if a reused connection was stale."""
        for attempt in (0, 1):
            reused = self._upstream is not None
            if self._upstream is None:
                self._upstream = http.client.HTTPConnection(
                    self.server.upstream_host, self.server.upstream_port, timeout=UPSTREAM_TIMEOUT_S
                )
            conn = self._upstream
            try:
                conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                for key, value in headers:
                    conn.putheader(key, value)
                conn.endheaders(body if body else None)
                resp = conn.getresponse()
                data = resp.read()
                if resp.will_close:
                    self._close_upstream()
                return resp, data
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError,
                    ConnectionAbortedError, http.client.BadStatusLine):
                self._close_upstream()
                if reused and attempt == 0:
                    continue  # keep-alive connection went stale: reconnect once
                raise
            except BaseException:
                self._close_upstream()
                raise
        raise RuntimeError("unreachable")

    def _fetch_upstream(self, body):
        """Send the request upstream verbatim. Returns (status, reason, headers, data);
        an unreachable upstream becomes a 502 with a plain-text message."""
        headers = []
        have_host = False
        for key, value in self.headers.items():
            lk = key.lower()
            if lk in HOP_BY_HOP:
                continue
            if lk == "host":
                have_host = True  # keep the signed Host value as the client sent it
            headers.append((key, value))
        if not have_host:
            headers.append(("Host", "%s:%d" % (self.server.upstream_host, self.server.upstream_port)))
        if body or self.command in ("POST", "PUT", "PATCH"):
            headers.append(("Content-Length", str(len(body))))
        try:
            resp, data = self._upstream_request(body, headers)
        except (OSError, http.client.HTTPException) as exc:
            msg = "fault_proxy: upstream %s:%d failed: %r\n" % (
                self.server.upstream_host, self.server.upstream_port, exc)
            return 502, None, [("Content-Type", "text/plain; charset=utf-8")], msg.encode("utf-8")
        out = [(k, v) for k, v in resp.getheaders() if k.lower() not in HOP_BY_HOP]
        if self.command == "HEAD":
            length = resp.getheader("Content-Length")
            if length is not None:
                out.append(("Content-Length", length))
        return resp.status, resp.reason, out, data

    def _write_response(self, status, reason, headers, data):
        self.send_response_only(status, reason)
        have_date = False
        for key, value in headers:
            if key.lower() == "date":
                have_date = True
            self.send_header(key, value)
        if not have_date:
            self.send_header("Date", self.date_time_string())
        if self.command != "HEAD":
            if status in (204, 304):
                data = b""
            else:
                self.send_header("Content-Length", str(len(data)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD" and data:
            self.wfile.write(data)
        self.wfile.flush()


def parse_upstream(url):
    split = urllib.parse.urlsplit(url)
    if split.scheme != "http":
        raise SystemExit("fault_proxy: --upstream must be an http:// URL, got %r" % url)
    host = split.hostname or ""
    if host != "localhost":
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise SystemExit(
                "fault_proxy: refusing upstream host %r: only 127.0.0.1/localhost allowed" % host
            )
    if split.path not in ("", "/") or split.query:
        raise SystemExit("fault_proxy: --upstream must not carry a path or query")
    port = split.port or 80
    return ("127.0.0.1" if host == "localhost" else host), port


def write_port_file(path, port):
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".fault_proxy.", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            f.write("%d\n" % port)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def main(argv=None):
    ap = argparse.ArgumentParser(description="Fault-injecting loopback proxy in front of moto.")
    ap.add_argument("--listen-port", type=int, required=True, help="0 = pick a free port")
    ap.add_argument("--upstream", required=True, help="http://127.0.0.1:PORT of moto")
    ap.add_argument("--latency-ms", type=float, default=0.0)
    ap.add_argument("--port-file", help="write the bound port here (atomically)")
    ap.add_argument("--log", action="store_true", help="log every proxied request to stderr")
    args = ap.parse_args(argv)
    if args.latency_ms < 0:
        ap.error("--latency-ms must be >= 0")
    upstream = parse_upstream(args.upstream)

    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()

    # Install the handlers before announcing the port, so a signal sent right after
    # "listening on" is seen is always a clean exit.
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    state = State(args.latency_ms, args.log)
    server = ProxyServer(("127.0.0.1", args.listen_port), upstream, state)
    port = server.server_address[1]
    if args.port_file:
        write_port_file(args.port_file, port)
    sys.stdout.write("listening on 127.0.0.1:%d\n" % port)
    sys.stdout.flush()

    worker = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                              name="serve", daemon=True)
    worker.start()
    while not stop.wait(0.5):
        if not worker.is_alive():
            break
    server.shutdown()
    server.server_close()
    if args.port_file:
        try:
            with open(args.port_file) as f:
                if f.read().strip() == str(port):
                    os.unlink(args.port_file)
        except OSError:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
