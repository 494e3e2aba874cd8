import { type ChildProcess, execFile, execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { RedfishClient, type RedfishResponse } from '../../src/cli/redfish-client.ts';
import { processAlive } from '../../src/service/child.ts';
import { waitFor } from './wait.ts';

/**
 * The VM test bed (scripts/vm/): Debian's kernel under QEMU (software emulation: `-accel tcg`, never
 * KVM), the test machine's own root shared read-only over 9p, tmpfs where the guest writes, and a
 * guest agent on a virtio serial port that runs shell commands. The guest therefore has the same node,
 * nbd-client, nbdkit, dbus-daemon and nginx as this machine, and the same paths: the repository is at
 * the same place inside. It has QEMU user networking with `restrict=on` (it reaches nothing), and one
 * forwarded port: 127.0.0.1:<forwardedPort> here → 10.0.2.15:8443 in the guest.
 */

const execFileAsync = promisify(execFile);
export const repoRoot = fileURLToPath(new URL('../../', import.meta.url)).replace(/\/$/, '');
const buildScript = path.join(repoRoot, 'scripts/vm/build.sh');
const agentScript = path.join(repoRoot, 'scripts/vm/agent.mjs');
export const vmCacheDir = process.env.VMEDIA_VM_CACHE ?? '/var/tmp/vmedia-vm';
const GUEST_PORT = 8443;
const BOOT_TIMEOUT_MS = 180_000;

/** Where the guest has tmpfs instead of this machine's files (scripts/vm/build.sh's init). */
const GUEST_TMPFS = ['/tmp', '/run', '/var/log', '/var/lib/nginx', '/var/cache', '/root'];

function hiddenInGuest(file: string): boolean {
  return GUEST_TMPFS.some((dir) => file === dir || file.startsWith(`${dir}/`));
}

let guestShare: Promise<string> | undefined;

/**
 * A folder of this test process under the cache, which the guest sees at the same path even when the
 * checkout is somewhere it does not (a clone under /tmp): the guest agent and the dist/ bundle go
 * there. Removed when the process exits; folders of test processes that are gone are removed first.
 */
function sharedWithGuest(): Promise<string> {
  guestShare ??= (async () => {
    if (hiddenInGuest(vmCacheDir)) {
      throw new Error(`VMEDIA_VM_CACHE=${vmCacheDir} is under a folder the guest replaces with tmpfs`);
    }
    await fsp.mkdir(vmCacheDir, { recursive: true });
    for (const entry of await fsp.readdir(vmCacheDir)) {
      const pid = /^run-(\d+)$/.exec(entry)?.[1];
      if (pid && !processAlive(Number(pid))) await fsp.rm(path.join(vmCacheDir, entry), { recursive: true });
    }
    const dir = path.join(vmCacheDir, `run-${process.pid}`);
    await fsp.rm(dir, { recursive: true, force: true });
    process.once('exit', () => fs.rmSync(dir, { recursive: true, force: true }));
    await fsp.mkdir(dir);
    await fsp.copyFile(agentScript, path.join(dir, 'agent.mjs'));
    return dir;
  })();
  return guestShare;
}

let distBuild: Promise<string> | undefined;

/**
 * How the guest runs vmedia: from a fresh `npm run build` of this checkout (as on a BMC), built once
 * per test process; with VMEDIA_VM_FROM_SOURCE set, from the repository's sources (the checkout must
 * then be where the guest sees it); VMEDIA_VM_COMMAND overrides both.
 */
export async function guestVmediaCommand(): Promise<string> {
  if (process.env.VMEDIA_VM_COMMAND) return process.env.VMEDIA_VM_COMMAND;
  if (process.env.VMEDIA_VM_FROM_SOURCE) {
    if (hiddenInGuest(repoRoot)) throw new Error(`the guest cannot see the checkout at ${repoRoot}`);
    return `node ${repoRoot}/bin/vmedia.js`;
  }
  distBuild ??= (async () => {
    const outDir = path.join(await sharedWithGuest(), 'dist');
    await execFileAsync(process.execPath, ['--import', 'tsx', 'scripts/build.ts', '--outdir', outDir], {
      cwd: repoRoot,
      timeout: 300_000,
    });
    return `node ${outDir}/vmedia.mjs`;
  })();
  return distBuild;
}

/** Why the VM tests cannot run here (no usable QEMU, no /dev), or undefined when they can. */
export function vmUnavailable(): string | undefined {
  if (process.env.VMEDIA_VM_SKIP) return `VMEDIA_VM_SKIP is set`;
  if (process.platform !== 'linux' || process.arch !== 'x64') return `needs x86-64 Linux (${process.arch})`;
  for (const device of ['/dev/null', '/dev/urandom']) {
    try {
      if (!fs.statSync(device).isCharacterDevice()) return `${device} is not a character device`;
    } catch {
      return `${device} is missing`;
    }
  }
  // Synchronous: describe() needs the answer before any hook runs.
  try {
    const version = execFileSync('qemu-system-x86_64', ['--version'], { encoding: 'utf8', timeout: 10_000 });
    if (!/QEMU emulator version/.test(version)) return 'qemu-system-x86_64 does not run';
  } catch {
    return 'qemu-system-x86_64 is not installed or does not run';
  }
  return undefined;
}

export interface RunResult {
  code: number | null;
  signal: string | null;
  stdout: string;
  stderr: string;
}

export interface Vm {
  /** Host-side temporary folder: console log, control socket. */
  dir: string;
  /** 127.0.0.1:<forwardedPort> here reaches 10.0.2.15:8443 in the guest. */
  forwardedPort: number;
  /** Seconds from QEMU's start to the agent's first answer. */
  bootSeconds: number;
  /** Runs `bash -c cmd` in the guest (as root, cwd /). */
  run(cmd: string, options?: { timeoutMs?: number }): Promise<RunResult>;
  /** Like run, but rejects unless the command exits 0; answers its stdout. */
  sh(cmd: string, options?: { timeoutMs?: number }): Promise<string>;
  writeFile(guestPath: string, data: string | Uint8Array, mode?: number): Promise<void>;
  readFile(guestPath: string): Promise<Buffer>;
  /** The guest's serial console so far (kernel messages, init and agent lines). */
  console(): string;
  stop(): Promise<void>;
}

interface Pending {
  resolve: (message: AgentMessage) => void;
  reject: (error: Error) => void;
}

interface AgentMessage {
  id?: number;
  event?: string;
  code?: number | null;
  signal?: string | null;
  error?: string;
  stdout?: string;
  stderr?: string;
  uptime?: number;
}

/** The kernel and initramfs paths, built (or found in the cache) by scripts/vm/build.sh. */
export async function buildVmImage(): Promise<{ kernel: string; initrd: string }> {
  const { stdout } = await execFileAsync('bash', [buildScript], {
    env: { ...process.env, VMEDIA_VM_CACHE: vmCacheDir },
    timeout: 600_000,
    maxBuffer: 1 << 20,
  });
  const kernel = /^kernel (.+)$/m.exec(stdout)?.[1];
  const initrd = /^initrd (.+)$/m.exec(stdout)?.[1];
  if (!kernel || !initrd) throw new Error(`scripts/vm/build.sh printed no kernel/initrd:\n${stdout}`);
  return { kernel, initrd };
}

async function freePort(): Promise<number> {
  const server = net.createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as net.AddressInfo;
  server.close();
  await once(server, 'close');
  return port;
}

export async function startVm(options: { memoryMb?: number; cpus?: number } = {}): Promise<Vm> {
  const { kernel, initrd } = await buildVmImage();
  const agent = path.join(await sharedWithGuest(), 'agent.mjs');
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'vmedia-vm-'));
  const socketPath = path.join(dir, 'ctl.sock');
  const consoleLog = path.join(dir, 'console.log');
  const forwardedPort = await freePort();
  const args = [
    ...['-accel', 'tcg,thread=multi', '-cpu', 'max'],
    ...[
      '-m',
      String(options.memoryMb ?? 2048),
      '-smp',
      String(options.cpus ?? Math.min(2, os.cpus().length)),
    ],
    ...['-nodefaults', '-display', 'none', '-no-reboot', '-serial', `file:${consoleLog}`],
    ...['-kernel', kernel, '-initrd', initrd],
    ...['-append', `console=ttyS0 quiet panic=-1 vmedia.agent=${agent}`],
    ...['-virtfs', 'local,path=/,mount_tag=root,security_model=none,readonly=on,multidevs=remap'],
    ...['-device', 'virtio-serial-pci', '-chardev', `socket,path=${socketPath},server=on,wait=off,id=ctl`],
    ...['-device', 'virtserialport,chardev=ctl,name=ctl'],
    ...[
      '-nic',
      `user,model=virtio-net-pci,restrict=on,hostfwd=tcp:127.0.0.1:${forwardedPort}-:${GUEST_PORT}`,
    ],
    ...['-device', 'virtio-rng-pci'],
  ];
  const started = Date.now();
  const qemu: ChildProcess = spawn('qemu-system-x86_64', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let qemuErr = '';
  qemu.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
    qemuErr += chunk;
  });
  const killOnExit = () => qemu.kill('SIGKILL');
  process.once('exit', killOnExit);
  const exited = new Promise<void>((resolve) => qemu.once('exit', () => resolve()));
  const readConsole = () => {
    try {
      return fs.readFileSync(consoleLog, 'utf8');
    } catch {
      return '';
    }
  };
  const describe = () =>
    `qemu: ${qemuErr.trim() || '(no stderr)'}\nconsole (last lines):\n${readConsole().split('\n').slice(-40).join('\n')}`;

  const pending = new Map<number, Pending>();
  let nextId = 1;
  let ready: (() => void) | undefined;
  let socket: net.Socket | undefined;
  const failAll = (error: Error) => {
    for (const p of pending.values()) p.reject(error);
    pending.clear();
  };
  void exited.then(() =>
    failAll(new Error(`the VM exited (${qemu.exitCode ?? qemu.signalCode})\n${describe()}`)),
  );

  const stop = async () => {
    process.off('exit', killOnExit);
    socket?.destroy();
    if (qemu.exitCode === null && qemu.signalCode === null) {
      qemu.kill('SIGTERM');
      const timer = setTimeout(() => qemu.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    }
    await fsp.rm(dir, { recursive: true, force: true });
  };

  try {
    socket = await waitFor(
      () =>
        new Promise<net.Socket | false>((resolve) => {
          const s = net.connect(socketPath);
          s.once('connect', () => resolve(s));
          s.once('error', () => resolve(false));
        }),
      { what: 'the VM control socket', timeoutMs: 30_000, intervalMs: 50 },
    );
    createInterface({ input: socket }).on('line', (line) => {
      let message: AgentMessage;
      try {
        message = JSON.parse(line);
      } catch {
        return;
      }
      if (message.event === 'ready') ready?.();
      if (message.id !== undefined) {
        const p = pending.get(message.id);
        pending.delete(message.id);
        p?.resolve(message);
      }
    });
    socket.on('error', (error) => failAll(error));
    // Ping until the agent answers; the ping and the deadline end whichever way the boot ends.
    let ping: NodeJS.Timeout | undefined;
    let deadline: NodeJS.Timeout | undefined;
    try {
      await new Promise<void>((resolve, reject) => {
        ready = () => resolve();
        ping = setInterval(() => socket!.write(`${JSON.stringify({ id: 0, op: 'ping' })}\n`), 1000);
        deadline = setTimeout(
          () => reject(new Error(`the VM agent did not answer within ${BOOT_TIMEOUT_MS} ms\n${describe()}`)),
          BOOT_TIMEOUT_MS,
        );
        void exited.then(() => reject(new Error(`the VM exited during boot\n${describe()}`)));
      });
    } finally {
      ready = undefined;
      clearInterval(ping);
      clearTimeout(deadline);
    }
  } catch (error) {
    await stop();
    throw error;
  }

  const request = (message: Record<string, unknown>): Promise<AgentMessage> => {
    const id = nextId++;
    return new Promise((resolve, reject) => {
      if (qemu.exitCode !== null || qemu.signalCode !== null) {
        reject(new Error(`the VM is not running\n${describe()}`));
        return;
      }
      pending.set(id, { resolve, reject });
      socket!.write(`${JSON.stringify({ id, ...message })}\n`);
    });
  };
  const vm: Vm = {
    dir,
    forwardedPort,
    bootSeconds: (Date.now() - started) / 1000,
    async run(cmd, { timeoutMs = 120_000 } = {}) {
      const answer = await request({ op: 'run', cmd, timeoutMs });
      return {
        code: answer.code ?? null,
        signal: answer.signal ?? null,
        stdout: Buffer.from(answer.stdout ?? '', 'base64').toString('utf8'),
        stderr: Buffer.from(answer.stderr ?? '', 'base64').toString('utf8') + (answer.error ?? ''),
      };
    },
    async sh(cmd, options) {
      const result = await vm.run(cmd, options);
      if (result.code !== 0) {
        throw new Error(
          `guest command failed (${result.code ?? result.signal}): ${cmd}\n${result.stdout}${result.stderr}`,
        );
      }
      return result.stdout;
    },
    async writeFile(guestPath, data, mode) {
      const answer = await request({
        op: 'write',
        path: guestPath,
        data: Buffer.from(data).toString('base64'),
        ...(mode === undefined ? {} : { mode }),
      });
      if (answer.code !== 0) throw new Error(`cannot write ${guestPath} in the guest: ${answer.error}`);
    },
    async readFile(guestPath) {
      return Buffer.from(await vm.sh(`base64 -w0 ${shellQuote(guestPath)}`), 'base64');
    },
    console: readConsole,
    stop,
  };
  return vm;
}

export function shellQuote(value: string): string {
  return `'${value.replaceAll("'", `'\\''`)}'`;
}

// ---------------------------------------------------------------------------------------------------
// vmedia inside the guest

export interface GuestStack {
  /** https://127.0.0.1:<forwardedPort>, as this machine reaches the guest's server. */
  url: string;
  stateDir: string;
  password: string;
  /** Here: the guest server's certificate (it names 127.0.0.1), and a file with the admin password. */
  caFile: string;
  passwordFile: string;
  /** The guest's `vmedia start` output so far. */
  log(): Promise<string>;
  request(method: string, uri: string, body?: unknown): Promise<RedfishResponse>;
  stop(): Promise<void>;
}

/**
 * `vmedia start --host-mode auto` in the guest (private bus, service, server on 0.0.0.0:8443), with
 * its state on tmpfs; `env` adds variables (VMEDIA_CA_BUNDLE, VMEDIA_CONFIG…).
 */
export async function startGuestStack(
  vm: Vm,
  options: { name?: string; env?: Record<string, string>; readyTimeoutMs?: number } = {},
): Promise<GuestStack> {
  const name = options.name ?? 'stack';
  const stateDir = `/run/vmedia-${name}`;
  const logFile = `/tmp/vmedia-${name}.log`;
  const password = `vm-${Math.random().toString(36).slice(2)}-Passw0rd`;
  const env = {
    VMEDIA_STATE_DIR: stateDir,
    VMEDIA_HOST: '0.0.0.0',
    VMEDIA_PORT: String(GUEST_PORT),
    VMEDIA_ADMIN_PASSWORD: password,
    VMEDIA_LOG_LEVEL: 'debug',
    TMPDIR: '/tmp',
    ...options.env,
  };
  const assignments = Object.entries(env)
    .map(([key, value]) => `${key}=${shellQuote(value)}`)
    .join(' ');
  const command = await guestVmediaCommand();
  // `setsid` forks when it is a process group leader, so `$!` is not vmedia's pid: the shell it runs
  // writes its own pid and execs vmedia, which therefore leads a session of its own (sid = pid).
  const start = `echo $$ > ${stateDir}.pid; exec ${command} start --host-mode auto`;
  await vm.sh(
    `mkdir -p ${stateDir} && cd /tmp && ${assignments} setsid sh -c ${shellQuote(start)} ` +
      `</dev/null >${logFile} 2>&1 &`,
  );
  await waitFor(async () => (await vm.run(`test -s ${stateDir}.pid`)).code === 0, {
    what: `${stateDir}.pid`,
    timeoutMs: 10_000,
    intervalMs: 100,
  });
  const log = () => vm.sh(`cat ${logFile}`);
  const hostDir = await fsp.mkdtemp(path.join(vm.dir, `${name}-`));
  const caFile = path.join(hostDir, 'server.crt');
  const passwordFile = path.join(hostDir, 'password');
  await fsp.writeFile(passwordFile, password, { mode: 0o600 });
  try {
    await waitFor(
      async () => {
        const { stdout } = await vm.run(`cat ${logFile}; kill -0 $(cat ${stateDir}.pid) || echo VMEDIA-GONE`);
        if (stdout.includes('VMEDIA-GONE')) throw new Error(`vmedia start exited:\n${stdout}`);
        return /^vmedia ready: /m.test(stdout);
      },
      { what: `vmedia start in the guest`, timeoutMs: options.readyTimeoutMs ?? 180_000, intervalMs: 500 },
    );
  } catch (error) {
    throw new Error(`${(error as Error).message}\n${await log().catch(() => '')}`, { cause: error });
  }
  await fsp.writeFile(caFile, await vm.readFile(`${stateDir}/certs/server.crt`));
  const url = `https://127.0.0.1:${vm.forwardedPort}`;
  // The CLI's own client (a Redfish session), as an integrator's script would talk to the BMC.
  const client = await RedfishClient.connect(
    { url, user: 'admin', 'password-file': passwordFile, ca: caFile },
    {},
  );
  return {
    url,
    stateDir,
    password,
    caFile,
    passwordFile,
    log,
    request: (method, uri, body) => client.request(method, uri, body),
    async stop() {
      await client.close().catch(() => undefined);
      // SIGTERM to `vmedia start`: server, then service (releases every slot), then the bus. Stopped
      // means no process of its session is left; what is left after 30 s is killed and reported.
      const { code, stdout } = await vm.run(
        `p=$(cat ${stateDir}.pid); left() { ps -eo sid=,pid=,args= | awk -v s=$p '$1 == s'; }; ` +
          `kill -TERM $p; for i in $(seq 1 150); do [ -z "$(left)" ] && exit 0; sleep 0.2; done; ` +
          `left; kill -KILL -- -$p; exit 1`,
        { timeoutMs: 60_000 },
      );
      if (code !== 0) throw new Error(`vmedia start did not stop within 30 s on SIGTERM; left:\n${stdout}`);
    },
  };
}
