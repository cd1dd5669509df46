/**
 * Test harness: a throw-away single-node Ceph cluster (one mon, one memstore OSD, one radosgw)
 * serving S3 on 127.0.0.1, started from Debian's ceph packages and torn down without a trace.
 *
 * Everything (config, keyring, mon/osd data, logs, pid files, admin sockets, TLS files) lives
 * under one temporary directory. Daemons run in the foreground (`-f`) as children of this
 * process, each in its own session so a terminal's Ctrl-C does not reach them before we do;
 * they are killed by stop(), by process 'exit'/SIGINT/SIGTERM/SIGHUP handlers, and, should
 * this process die without running handlers (SIGKILL, OOM), by a small watchdog shell that
 * polls for this process and then kills the daemons and removes the directory.
 *
 * startGateway() adds one more radosgw to a running cluster, for a test that stops and restarts
 * its S3 server (the objects live in the OSD and survive that).
 *
 * See test/servers/README.md (## radosgw) and the comments of cephConf() for the settings.
 */
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { randomUUID, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as https from 'node:https';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { S3Client, ListBucketsCommand } from '@aws-sdk/client-s3';

export interface Radosgw {
  /** http://127.0.0.1:PORT */
  endpoint: string;
  /** https://127.0.0.1:PORT2, when started with tls: true */
  httpsEndpoint?: string;
  /** PEM file of the self-signed certificate (its own CA), when started with tls: true */
  caFile?: string;
  accessKey: string;
  secretKey: string;
  /** RGW does not check the SigV4 region against its zonegroup; 'us-east-1' is what clients send. */
  region: string;
  /** SSE-KMS key ids RGW's testing KMS backend knows (rgw_crypt_s3_kms_encryption_keys); any other is refused. */
  kmsKeyIds: readonly string[];
  /** The temporary directory holding everything; removed by stop(). */
  dir: string;
  /** ceph.conf of this cluster, for running radosgw-admin/ceph by hand (`-c confFile`). */
  confFile: string;
  /** Milliseconds startRadosgw took. */
  startMs: number;
  /** Run RGW's garbage collector now (memstore keeps deleted objects in RAM until it runs). */
  gc(): Promise<void>;
  /** Kill every daemon and remove dir. Idempotent; safe to call concurrently. */
  stop(): Promise<void>;
}

export interface RadosgwOptions {
  /** Also serve HTTPS with a fresh self-signed certificate. */
  tls?: boolean;
  /** Bound of the memstore OSD (bytes of object data kept in RAM). Default 2 GiB. */
  memstoreBytes?: number;
  /**
   * Directory to hold everything. Must not exist or be empty; it is removed by stop().
   * Default: a fresh mkdtemp under os.tmpdir(). Keep it short: admin sockets live there
   * and Unix socket paths are limited to 107 bytes.
   */
  dir?: string;
  /** Progress lines (steps and their timings). */
  log?: (line: string) => void;
  /** Overall start timeout in ms. Default 90 000. */
  timeoutMs?: number;
}

const ACCESS_KEY = 'WALBRIDGETESTACCESS0';
const REGION = 'us-east-1';
const RGW_NAME = 'client.rgw.a';
const MON_ID = 'a';
/** SSE-KMS key ids the testing backend knows (an ARN-shaped one, as AWS reports keys, and a bare one). */
const KMS_KEY_IDS = ['arn:aws:kms:us-east-1:123456789012:key/walbridge-test-1', 'walbridge-test-2'];

// ---------------------------------------------------------------------------------------------
// Process-wide cleanup: every live cluster is killed synchronously on exit or a fatal signal.

const live = new Set<Instance>();
let handlersInstalled = false;
const SIGNALS: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];

function installHandlers(): void {
  if (handlersInstalled) return;
  handlersInstalled = true;
  process.on('exit', () => {
    for (const inst of [...live]) inst.stopSync();
  });
  for (const sig of SIGNALS) {
    const onSignal = (): void => {
      for (const inst of [...live]) inst.stopSync();
      process.removeListener(sig, onSignal);
      // If nobody else handles this signal, get the default behaviour (termination) back.
      if (process.listenerCount(sig) === 0) process.kill(process.pid, sig);
    };
    process.on(sig, onSignal);
  }
}

// ---------------------------------------------------------------------------------------------
// Small helpers.

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/** Free TCP ports on 127.0.0.1, chosen by the OS; all held open together so they differ. */
async function freePorts(n: number): Promise<number[]> {
  const servers: net.Server[] = [];
  try {
    for (let i = 0; i < n; i++) {
      const srv = net.createServer();
      servers.push(srv);
      await new Promise<void>((resolve, reject) => {
        srv.once('error', reject);
        srv.listen(0, '127.0.0.1', () => resolve());
      });
    }
    return servers.map((s) => (s.address() as net.AddressInfo).port);
  } finally {
    await Promise.all(servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
  }
}

function tailFile(file: string, lines = 25): string {
  try {
    const text = fs.readFileSync(file, 'utf8');
    const all = text.split('\n').filter((l) => l.length > 0);
    return all.slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

function pidAlive(pid: number): boolean {
  // A killed child stays a zombie until reaped; count that as dead.
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X';
  } catch {
    return false;
  }
}

// The watchdog: waits for this process to go away, then kills the daemons listed in
// DIR/daemons.pids (only if their command line still contains MARK, e.g. DIR/ceph.conf, so a
// reused pid is never hit) and removes DIR. It runs in its own session/process group; stop()
// kills the group.
const WATCHDOG_SCRIPT = `
parent=$1; dir=$2; mark=$3
while kill -0 "$parent" 2>/dev/null; do sleep 1; done
[ -d "$dir" ] || exit 0
if [ -f "$dir/daemons.pids" ]; then
  for p in $(cat "$dir/daemons.pids"); do
    if [ -r "/proc/$p/cmdline" ] && tr '\\0' ' ' < "/proc/$p/cmdline" | grep -qF "$mark"; then
      kill -9 "$p" 2>/dev/null
    fi
  done
  sleep 1
fi
rm -rf "$dir"
`;

// ---------------------------------------------------------------------------------------------

interface Daemon {
  name: string;
  child: ChildProcess;
  logFile: string;
  outFile: string;
  exited: Promise<string>; // resolves with a description when the process exits
  exitInfo?: string;
}

class Instance {
  readonly daemons: Daemon[] = [];
  watchdog?: ChildProcess;
  private stopping?: Promise<void>;
  stopped = false;

  /**
   * @param dir holds everything of these daemons (logs, pids); removed by stop()
   * @param cmdlineMark a string in every daemon's command line (the watchdog checks it before a kill)
   */
  constructor(
    readonly dir: string,
    readonly cmdlineMark: string,
  ) {}

  spawnDaemon(name: string, cmd: string, args: string[]): Daemon {
    const outFile = path.join(this.dir, 'log', `${name}.out`);
    const fd = fs.openSync(outFile, 'a');
    let child: ChildProcess;
    try {
      child = spawn(cmd, args, { stdio: ['ignore', fd, fd], detached: true });
    } finally {
      fs.closeSync(fd);
    }
    const d: Daemon = {
      name,
      child,
      outFile,
      logFile: path.join(this.dir, 'log', `${name}.log`),
      exited: new Promise<string>((resolve) => {
        child.once('error', (err) => {
          d.exitInfo = `${cmd} failed to start: ${err.message}`;
          resolve(d.exitInfo);
        });
        child.once('exit', (code, signal) => {
          d.exitInfo = `${name} exited (${signal ?? `code ${code}`})`;
          resolve(d.exitInfo);
        });
      }),
    };
    child.unref(); // never keep the event loop alive; exit handlers and the watchdog clean up
    this.daemons.push(d);
    if (child.pid !== undefined) fs.appendFileSync(path.join(this.dir, 'daemons.pids'), `${child.pid}\n`);
    return d;
  }

  startWatchdog(): void {
    const wd = spawn('sh', ['-c', WATCHDOG_SCRIPT, 'radosgw-watchdog', String(process.pid), this.dir, this.cmdlineMark], {
      stdio: 'ignore',
      detached: true,
    });
    wd.on('error', () => undefined);
    wd.unref();
    this.watchdog = wd;
  }

  private killAll(): number[] {
    const pids: number[] = [];
    for (const d of this.daemons) {
      const pid = d.child.pid;
      if (pid === undefined || d.exitInfo !== undefined) continue;
      pids.push(pid);
      try {
        // SIGKILL: nothing is worth keeping, and a memstore OSD given SIGTERM would first
        // write all its objects to disk.
        process.kill(pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
    }
    return pids;
  }

  private killWatchdog(): void {
    const pid = this.watchdog?.pid;
    if (pid === undefined) return;
    try {
      process.kill(-pid, 'SIGKILL'); // its process group: the shell and its `sleep`
    } catch {
      /* gone */
    }
  }

  /** Synchronous teardown for exit/signal handlers. */
  stopSync(): void {
    if (this.stopped) return;
    this.stopped = true;
    live.delete(this);
    const pids = this.killAll();
    const deadline = Date.now() + 5000;
    while (pids.some(pidAlive) && Date.now() < deadline) sleepSync(20);
    this.killWatchdog();
    try {
      fs.rmSync(this.dir, { recursive: true, force: true, maxRetries: 5, retryDelay: 50 });
    } catch {
      /* nothing more we can do in an exit handler */
    }
  }

  stop(): Promise<void> {
    if (this.stopping) return this.stopping;
    this.stopping = (async () => {
      if (this.stopped) return;
      this.stopped = true;
      live.delete(this);
      this.killAll();
      await Promise.race([Promise.all(this.daemons.map((d) => d.exited)), sleep(10_000)]);
      const stragglers = this.daemons.filter((d) => d.child.pid !== undefined && pidAlive(d.child.pid));
      if (stragglers.length > 0) {
        throw new Error(`radosgw harness: daemons still alive after SIGKILL: ${stragglers.map((d) => d.name).join(', ')}`);
      }
      this.killWatchdog();
      await fsp.rm(this.dir, { recursive: true, force: true, maxRetries: 5, retryDelay: 50 });
    })();
    return this.stopping;
  }
}

function runTool(cmd: string, args: string[], timeoutMs: number, logHint?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { timeout: timeoutMs, killSignal: 'SIGKILL', maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      if (err) {
        const why = err.killed ? `timed out after ${timeoutMs} ms` : `failed (${err.code ?? err.signal})`;
        let msg = `radosgw harness: \`${cmd} ${args.join(' ')}\` ${why}\n--- stderr ---\n${stderr.trim()}`;
        if (logHint) msg += `\n--- tail of ${logHint} ---\n${tailFile(logHint)}`;
        reject(new Error(msg));
      } else {
        resolve(stdout);
      }
    });
  });
}

function cephConf(o: {
  dir: string;
  fsid: string;
  monPort: number;
  httpPort: number;
  httpsPort?: number;
  certFile?: string;
  keyFile?: string;
  memstoreBytes: number;
  kmsKeys: readonly { id: string; material: string }[];
}): string {
  const d = o.dir;
  let frontends = `beast endpoint=127.0.0.1:${o.httpPort}`;
  if (o.httpsPort !== undefined) {
    frontends += ` ssl_endpoint=127.0.0.1:${o.httpsPort} ssl_certificate=${o.certFile} ssl_private_key=${o.keyFile}`;
  }
  return `# generated by test/servers/radosgw.ts; removed with its directory
[global]
fsid = ${o.fsid}
mon_host = v2:127.0.0.1:${o.monPort}
# loopback only (without these the OSD binds 0.0.0.0); msgr v2 only
public_addr = 127.0.0.1
cluster_addr = 127.0.0.1
public_network = 127.0.0.0/8
cluster_network = 127.0.0.0/8
ms_bind_msgr1 = false
ms_bind_ipv6 = false
# no cephx; crc mode or clients loop on "get_initial_auth_request returned -13"
auth_cluster_required = none
auth_service_required = none
auth_client_required = none
ms_mon_client_mode = crc
ms_client_mode = crc
ms_cluster_mode = crc
ms_service_mode = crc
# every path under ${d}
run_dir = ${d}/run
admin_socket = ${d}/run/$name.asok
pid_file = ${d}/run/$name.pid
log_file = ${d}/log/$name.log
mon_cluster_log_file = ${d}/log/cluster.log
keyring = ${d}/keyring
crash_dir = ${d}/crash
log_to_stderr = false
err_to_stderr = true
# one OSD: size-1 pools, few PGs, no host-level failure domain
osd_pool_default_size = 1
osd_pool_default_min_size = 1
mon_allow_pool_size_one = true
mon_warn_on_pool_no_redundancy = false
# ceph-mon refuses to start (exit 28, ENOSPC) when its disk has under 5% free: on a large, shared
# disk that is still gigabytes, and the cluster keeps its objects in memory (memstore).
mon_data_avail_crit = 0
osd_pool_default_pg_num = 8
osd_pool_default_pgp_num = 8
osd_pool_default_pg_autoscale_mode = off
mon_max_pg_per_osd = 1000
osd_crush_chooseleaf_type = 0
# speed: commit map changes at once instead of once a second (start ~1 s instead of ~12 s)
paxos_propose_interval = 0.01
paxos_min_wait = 0.001
objecter_tick_interval = 0.5

[mon]
mon_data = ${d}/mon/$id

[osd]
osd_data = ${d}/osd/$id
osd_objectstore = memstore
memstore_device_bytes = ${o.memstoreBytes}

[client]
# Every gateway of the cluster, not only ${RGW_NAME}:
# SSE-KMS without a KMS: the "testing" backend takes its keys from this list (id=base64 of 32 bytes)
rgw_crypt_s3_kms_backend = testing
rgw_crypt_s3_kms_encryption_keys = ${o.kmsKeys.map((k) => `${k.id}=${k.material}`).join(' ')}
# RGW refuses SSE requests over plain http unless told otherwise; the suite uses both endpoints
rgw_crypt_require_ssl = false
# No lifecycle threads: inside rgw_lifecycle_work_time (00:00-06:00) they keep a gateway from
# stopping on SIGTERM (a 5 s lock-retry loop), and nothing here relies on RGW expiring objects
rgw_enable_lc_threads = false

[${RGW_NAME}]
rgw_data = ${d}/rgw
rgw_frontends = ${frontends}
# beast worker threads (default 512): plenty for tests, less memory and faster start
rgw_thread_pool_size = 64

[client.admin]
# CLI tools (ceph, radosgw-admin) may run concurrently: no shared admin socket for them
admin_socket =
`;
}

async function makeCert(dir: string, timeoutMs: number): Promise<{ cert: string; key: string }> {
  const cert = path.join(dir, 'tls', 'cert.pem');
  const key = path.join(dir, 'tls', 'key.pem');
  await fsp.mkdir(path.dirname(cert), { recursive: true });
  await runTool(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-sha256',
      '-days',
      '3650',
      '-keyout',
      key,
      '-out',
      cert,
      '-subj',
      '/CN=127.0.0.1',
      '-addext',
      'subjectAltName=IP:127.0.0.1,DNS:127.0.0.1,DNS:localhost',
      '-addext',
      'basicConstraints=critical,CA:TRUE',
      '-addext',
      'keyUsage=critical,digitalSignature,keyEncipherment,keyCertSign',
      '-addext',
      'extendedKeyUsage=serverAuth',
    ],
    timeoutMs,
  );
  return { cert, key };
}

/** Resolve when `probe` resolves true; reject on deadline or when a daemon dies. */
async function waitFor(what: string, probe: () => Promise<boolean>, deadline: number, daemons: Daemon[], logFiles: string[]): Promise<void> {
  let lastErr = '';
  for (;;) {
    const dead = daemons.find((d) => d.exitInfo !== undefined);
    if (dead) {
      throw new Error(
        `radosgw harness: ${dead.exitInfo} while waiting for ${what}\n` +
          `--- tail of ${dead.logFile} ---\n${tailFile(dead.logFile)}\n--- tail of ${dead.outFile} ---\n${tailFile(dead.outFile)}`,
      );
    }
    try {
      if (await probe()) return;
    } catch (err) {
      lastErr = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
    }
    if (Date.now() > deadline) {
      const tails = logFiles.map((f) => `--- tail of ${f} ---\n${tailFile(f)}`).join('\n');
      throw new Error(`radosgw harness: timed out waiting for ${what}${lastErr ? ` (last error: ${lastErr})` : ''}\n${tails}`);
    }
    await sleep(100);
  }
}

function httpAnswers(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = net.connect({ host: '127.0.0.1', port });
    sock.setTimeout(2000);
    sock.once('connect', () => {
      sock.write('GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n');
    });
    sock.once('data', (buf) => {
      sock.destroy();
      resolve(buf.toString('latin1').startsWith('HTTP/1.1 '));
    });
    sock.once('timeout', () => {
      sock.destroy();
      resolve(false);
    });
    sock.once('error', () => resolve(false));
  });
}

/** Resolve once a signed ListBuckets succeeds on `endpoint` (over https trusting only `ca`). */
async function waitForSignedRequest(
  endpoint: string,
  credentials: { accessKeyId: string; secretAccessKey: string },
  ca: Buffer | undefined,
  deadline: number,
  daemons: Daemon[],
  logFiles: string[],
): Promise<void> {
  const client = new S3Client({
    endpoint,
    region: REGION,
    forcePathStyle: true,
    credentials,
    maxAttempts: 1,
    ...(ca ? { requestHandler: { httpsAgent: new https.Agent({ ca, keepAlive: false }) } } : {}),
  });
  try {
    await waitFor(
      `a signed ListBuckets to succeed on ${endpoint}`,
      async () => {
        await client.send(new ListBucketsCommand({}));
        return true;
      },
      deadline,
      daemons,
      logFiles,
    );
  } finally {
    client.destroy();
  }
}

export async function startRadosgw(opts: RadosgwOptions = {}): Promise<Radosgw> {
  const t0 = Date.now();
  const timeoutMs = opts.timeoutMs ?? 90_000;
  const deadline = t0 + timeoutMs;
  const log = opts.log ?? ((): void => undefined);
  const step = (what: string): void => log(`radosgw: ${what} (+${Date.now() - t0} ms)`);
  const memstoreBytes = opts.memstoreBytes ?? 2 * 1024 ** 3;
  const remaining = (): number => Math.max(1000, deadline - Date.now());

  let dir: string;
  if (opts.dir !== undefined) {
    dir = path.resolve(opts.dir);
    await fsp.mkdir(dir, { recursive: true });
    if ((await fsp.readdir(dir)).length > 0) {
      throw new Error(`radosgw harness: ${dir} is not empty (it would be removed by stop())`);
    }
  } else {
    dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'walbridge-rgw-'));
  }
  if (Buffer.byteLength(path.join(dir, 'run', `${RGW_NAME}.asok`)) > 100) {
    await fsp.rm(dir, { recursive: true, force: true });
    throw new Error(`radosgw harness: directory path too long for admin sockets: ${dir}`);
  }

  const conf = path.join(dir, 'ceph.conf');
  const inst = new Instance(dir, conf);
  installHandlers();
  live.add(inst);

  try {
    for (const sub of ['run', 'log', `mon/${MON_ID}`, 'osd', 'rgw', 'crash']) {
      await fsp.mkdir(path.join(dir, sub), { recursive: true });
    }
    await fsp.writeFile(path.join(dir, 'keyring'), '');
    await fsp.writeFile(path.join(dir, 'daemons.pids'), '');
    inst.startWatchdog();

    const [monPort, httpPort, httpsPort] = (await freePorts(opts.tls ? 3 : 2)) as [number, number, number?];
    let tls: { cert: string; key: string } | undefined;
    if (opts.tls) {
      tls = await makeCert(dir, remaining());
      step('certificate made');
    }
    const fsid = randomUUID();
    await fsp.writeFile(
      conf,
      cephConf({
        dir,
        fsid,
        monPort,
        httpPort,
        httpsPort: tls ? httpsPort : undefined,
        certFile: tls?.cert,
        keyFile: tls?.key,
        memstoreBytes,
        kmsKeys: KMS_KEY_IDS.map((id) => ({ id, material: randomBytes(32).toString('base64') })),
      }),
    );
    const logOf = (name: string): string => path.join(dir, 'log', `${name}.log`);

    // --- monitor
    const monmap = path.join(dir, 'monmap');
    await runTool('monmaptool', ['--create', '--fsid', fsid, '--addv', MON_ID, `[v2:127.0.0.1:${monPort}]`, monmap], remaining());
    await runTool('ceph-mon', ['-c', conf, '-i', MON_ID, '--mkfs', '--monmap', monmap], remaining(), logOf(`mon.${MON_ID}`));
    const mon = inst.spawnDaemon(`mon.${MON_ID}`, 'ceph-mon', ['-c', conf, '-i', MON_ID, '-f']);
    step('mon started');

    // --- OSD (the `ceph` CLI waits for the mon to form quorum, within its connect timeout)
    const osdUuid = randomUUID();
    const cephCli = (args: string[]): Promise<string> =>
      runTool('ceph', ['-c', conf, '--connect-timeout', String(Math.ceil(remaining() / 1000)), ...args], remaining(), logOf(`mon.${MON_ID}`));
    const osdId = (
      await Promise.race([cephCli(['osd', 'new', osdUuid]), mon.exited.then((why) => Promise.reject(new Error(`${why}\n${tailFile(mon.logFile)}`)))])
    ).trim();
    if (!/^\d+$/.test(osdId)) throw new Error(`radosgw harness: unexpected output of \`ceph osd new\`: ${osdId}`);
    await fsp.mkdir(path.join(dir, 'osd', osdId), { recursive: true });
    await runTool('ceph-osd', ['-c', conf, '-i', osdId, '--mkfs', '--osd-uuid', osdUuid], remaining(), logOf(`osd.${osdId}`));
    const osd = inst.spawnDaemon(`osd.${osdId}`, 'ceph-osd', ['-c', conf, '-i', osdId, '-f']);
    step('osd started');

    // --- radosgw: it creates its pools once the OSD is up, then opens its frontends.
    const rgw = inst.spawnDaemon(RGW_NAME, 'radosgw', ['-c', conf, '-n', RGW_NAME, '-f']);
    const daemons = [mon, osd, rgw];
    const allLogs = [rgw.logFile, rgw.outFile, osd.logFile, mon.logFile];
    await waitFor(`radosgw to answer HTTP on 127.0.0.1:${httpPort}`, () => httpAnswers(httpPort), deadline, daemons, allLogs);
    step('radosgw answers HTTP');

    // --- S3 user
    const secretKey = randomBytes(20).toString('hex');
    await runTool(
      'radosgw-admin',
      ['-c', conf, 'user', 'create', '--uid=walbridge-test', '--display-name=walbridge test', `--access-key=${ACCESS_KEY}`, `--secret-key=${secretKey}`],
      remaining(),
      logOf('client.admin'),
    );
    step('user created');

    // --- real readiness: signed requests succeed (over https too, trusting only our cert)
    const endpoint = `http://127.0.0.1:${httpPort}`;
    const httpsEndpoint = tls ? `https://127.0.0.1:${httpsPort}` : undefined;
    const credentials = { accessKeyId: ACCESS_KEY, secretAccessKey: secretKey };
    await waitForSignedRequest(endpoint, credentials, undefined, deadline, daemons, allLogs);
    if (tls && httpsEndpoint) {
      await waitForSignedRequest(httpsEndpoint, credentials, await fsp.readFile(tls.cert), deadline, daemons, allLogs);
    }
    const startMs = Date.now() - t0;
    step('ready');

    const result: Radosgw = {
      endpoint,
      accessKey: ACCESS_KEY,
      secretKey,
      region: REGION,
      kmsKeyIds: KMS_KEY_IDS,
      dir,
      confFile: conf,
      startMs,
      gc: async () => {
        if (inst.stopped) throw new Error('radosgw harness: gc() after stop()');
        await runTool('radosgw-admin', ['-c', conf, 'gc', 'process', '--include-all'], 120_000, logOf('client.admin'));
      },
      stop: () => inst.stop(),
    };
    if (tls && httpsEndpoint) {
      result.httpsEndpoint = httpsEndpoint;
      result.caFile = tls.cert;
    }
    return result;
  } catch (err) {
    // Keep the logs for the error message, then clean up everything.
    await inst.stop().catch(() => undefined);
    throw err;
  }
}

// ---------------------------------------------------------------------------------------------
// Extra gateways: another radosgw process on a running cluster, to stop and start at will.
// The objects live in the cluster's OSD, so they survive any number of gateway restarts
// (restarting the memstore OSD would lose them all).

/** What startGateway needs of a running cluster: a Radosgw, or the S3Endpoint of inject('s3'). */
export type GatewayCluster = Pick<Radosgw, 'confFile' | 'dir' | 'accessKey' | 'secretKey'>;

export interface Gateway {
  /** Its Ceph name, client.rgw.<id>. */
  readonly name: string;
  /** http://127.0.0.1:PORT, the same after every start(). */
  readonly endpoint: string;
  /** Its own files (log, admin socket, pid file) under the cluster's directory; removed by stop(). */
  readonly dir: string;
  /** True while its radosgw process runs. */
  running(): boolean;
  /**
   * Ends the radosgw process with `signal` (SIGKILL: a crash; SIGTERM: radosgw's orderly
   * shutdown) and resolves once it has exited. Throws if it is still running 15 s later.
   */
  kill(signal: 'SIGKILL' | 'SIGTERM'): Promise<void>;
  /** Starts it again on the same port; resolves once a signed request succeeds. No-op if running. */
  start(): Promise<void>;
  /** Kills it for good and removes dir. Idempotent. */
  stop(): Promise<void>;
}

export interface GatewayOptions {
  /** The <id> of client.rgw.<id>. Default: unique per process and call. */
  id?: string;
  /** Bound of each start (first and later ones) in ms. Default 60 000. */
  timeoutMs?: number;
}

const GATEWAY_EXIT_WAIT_MS = 15_000;
let gatewaysStarted = 0;

/**
 * Starts one more radosgw gateway on a running cluster, on its own port on 127.0.0.1, so a test
 * can kill and restart an S3 server without disturbing the other tests (they use the cluster's
 * own gateway). No keyring is needed: the cluster runs without cephx. Cleaned up like the
 * cluster's daemons: stop(), the exit/signal handlers, and a watchdog if this process dies.
 */
export async function startGateway(cluster: GatewayCluster, opts: GatewayOptions = {}): Promise<Gateway> {
  if (!fs.existsSync(cluster.confFile)) throw new Error(`radosgw harness: no cluster at ${cluster.confFile}`);
  const id = opts.id ?? `restartable-${process.pid}-${++gatewaysStarted}`;
  const name = `client.rgw.${id}`;
  const timeoutMs = opts.timeoutMs ?? 60_000;
  const dir = path.join(cluster.dir, 'gateways', id);
  const asok = path.join(dir, 'run', `${name}.asok`);
  if (Buffer.byteLength(asok) > 100) throw new Error(`radosgw harness: path too long for an admin socket: ${asok}`);
  for (const sub of ['run', 'log', 'data']) await fsp.mkdir(path.join(dir, sub), { recursive: true });
  await fsp.writeFile(path.join(dir, 'daemons.pids'), '');
  // Every start's command line names dir, which is what the watchdog checks before a kill.
  const inst = new Instance(dir, dir);
  installHandlers();
  live.add(inst);
  inst.startWatchdog();

  const [port] = (await freePorts(1)) as [number];
  const endpoint = `http://127.0.0.1:${port}`;
  const credentials = { accessKeyId: cluster.accessKey, secretAccessKey: cluster.secretKey };
  // ceph.conf has no section for this name: the cluster gateway's settings, with paths of its own.
  // Without rgw_frontends it would listen on 0.0.0.0:7480.
  const args = [
    '-c',
    cluster.confFile,
    '-n',
    name,
    '-f',
    `--rgw_frontends=beast endpoint=127.0.0.1:${port}`,
    '--rgw_thread_pool_size=64',
    `--rgw_data=${dir}/data`,
    `--admin_socket=${asok}`,
    `--pid_file=${dir}/run/${name}.pid`,
    `--log_file=${dir}/log/${name}.log`,
  ];
  let daemon: Daemon | undefined;
  const running = (): boolean => daemon !== undefined && daemon.exitInfo === undefined;

  const start = async (): Promise<void> => {
    if (inst.stopped) throw new Error(`radosgw harness: ${name} start() after stop()`);
    if (running()) return;
    const deadline = Date.now() + timeoutMs;
    const d = inst.spawnDaemon(name, 'radosgw', args);
    daemon = d;
    const logs = [d.logFile, d.outFile];
    await waitFor(`${name} to answer HTTP on 127.0.0.1:${port}`, () => httpAnswers(port), deadline, [d], logs);
    await waitForSignedRequest(endpoint, credentials, undefined, deadline, [d], logs);
  };

  const kill = async (signal: 'SIGKILL' | 'SIGTERM'): Promise<void> => {
    const d = daemon;
    if (d === undefined || d.exitInfo !== undefined || d.child.pid === undefined) return;
    process.kill(d.child.pid, signal);
    const exited = await Promise.race([d.exited.then(() => true), sleep(GATEWAY_EXIT_WAIT_MS).then(() => false)]);
    if (!exited) {
      throw new Error(
        `radosgw harness: ${name} still running ${GATEWAY_EXIT_WAIT_MS} ms after ${signal}\n--- tail of ${d.logFile} ---\n${tailFile(d.logFile)}`,
      );
    }
  };

  try {
    await start();
  } catch (err) {
    await inst.stop().catch(() => undefined);
    throw err;
  }
  return { name, endpoint, dir, running, kill, start, stop: () => inst.stop() };
}
