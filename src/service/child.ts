import { type ChildProcess, type SpawnOptions, spawn } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import path from 'node:path';
import type { Logger } from '../log.ts';
import type { CleanupStack } from './cleanup.ts';
import type { SlotConfig } from './config.ts';

const STDERR_KEPT = 16 * 1024;
const KILL_GRACE_MS = 3000;
/** `O_CLOEXEC` as `/proc/<pid>/fdinfo/<fd>` prints `flags` (octal, Linux on every architecture we run on). */
const O_CLOEXEC = 0o2000000;

/** A helper process (nbdkit, nbd-client) owned by one mount. */
export interface Child {
  process: ChildProcess;
  /** Resolves when the process has exited, with a description such as `exit 1` or `SIGKILL`. */
  exited: Promise<string>;
  /** The end of its stderr (bounded), for explaining failures. */
  stderr(): string;
}

export interface SpawnChildOptions {
  cleanup: CleanupStack;
  log: Logger;
  stdio?: SpawnOptions['stdio'];
  /** Written with the child's pid while it runs, so a service started after a crash can find it. */
  pidFile?: string;
}

/**
 * Spawns `command` with stderr captured (its tail is kept and logged) and registers its termination
 * (SIGTERM, SIGKILL after a grace period) on `cleanup`, so it can never outlive the mount.
 *
 * Nor can it outlive the service, even one killed with SIGKILL, whose cleanup never runs:
 * - it is started through `setpriv --pdeathsig KILL --` (util-linux) when it is installed, so the
 *   kernel kills it when the service dies. PR_SET_PDEATHSIG fires when the *thread* that forked the
 *   child exits; Node forks in uv_spawn on the main (event loop) thread, which lives exactly as long
 *   as the process. It survives exec (setpriv execs the command, so the pid is the command's), and
 *   an nbdkit started with `--exit-with-parent` replaces it with its own SIGTERM, which it handles.
 * - it inherits no descriptor but its stdio: see {@link stdioWithoutLeaks}. A leaked bus socket kept
 *   the dead service's D-Bus connection, and so the bus name, alive for as long as the child ran.
 */
export function spawnChild(command: string, args: string[], options: SpawnChildOptions): Child {
  const [file, argv] = withParentDeathSignal(command, args, options.log);
  const devNull = fs.openSync('/dev/null', 'r'); // CLOEXEC, as libuv opens everything
  let child: ChildProcess;
  try {
    child = spawn(file, argv, {
      stdio: stdioWithoutLeaks(options.stdio ?? ['ignore', 'ignore', 'pipe'], devNull),
    });
  } finally {
    fs.closeSync(devNull);
  }
  const { pidFile } = options;
  if (pidFile && child.pid !== undefined) writePidFile(pidFile, child.pid, options.log);
  let stderr = '';
  child.stderr?.setEncoding('utf8');
  child.stderr?.on('data', (chunk: string) => {
    stderr = (stderr + chunk).slice(-STDERR_KEPT);
    for (const line of chunk.split('\n')) if (line.trim()) options.log.debug({ command }, line.trim());
  });
  const exited = new Promise<string>((resolve) => {
    child.once('exit', (code, signal) => resolve(signal ?? `exit ${code}`));
    // spawn failures (ENOENT) emit 'error' and no 'exit'.
    child.once('error', (error) => resolve(`spawn failed: ${error.message}`));
  });
  options.cleanup.defer(`stop ${command}`, async () => {
    await stopChild(child, exited);
    if (pidFile) fs.rmSync(pidFile, { force: true });
  });
  return { process: child, exited, stderr: () => stderr };
}

async function stopChild(child: ChildProcess, exited: Promise<string>): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), KILL_GRACE_MS);
  await Promise.race([exited, once(child, 'exit')]);
  clearTimeout(timer);
}

/**
 * Where a slot's helper keeps its pid while it runs: next to the slot's socket, so a service started
 * after a crash finds (and kills) what a dead one left (src/service/recovery.ts).
 */
export function helperPidFile(config: SlotConfig, helper: 'nbdkit' | 'nbd-client'): string {
  return path.join(path.dirname(config.unixSocket), `${config.slotId}.${helper}.pid`);
}

function writePidFile(pidFile: string, pid: number, log: Logger): void {
  try {
    fs.writeFileSync(pidFile, `${pid}\n`, { mode: 0o600 });
  } catch (error) {
    log.warn({ err: error, pidFile }, 'cannot write the pid file');
  }
}

let setpriv: { path: string | null } | undefined;
let warnedNoSetpriv = false;

/** `setpriv --pdeathsig KILL -- command args…` when setpriv exists, else the command as is (warned once). */
function withParentDeathSignal(command: string, args: string[], log: Logger): [string, string[]] {
  setpriv ??= { path: findSetpriv() };
  if (setpriv.path) return [setpriv.path, ['--pdeathsig', 'KILL', '--', command, ...args]];
  if (!warnedNoSetpriv) {
    warnedNoSetpriv = true;
    log.warn('setpriv (util-linux) not found: helper processes may outlive a killed service');
  }
  return [command, args];
}

/** util-linux's setpriv where distributions and OpenBMC install it (looked up once). */
function findSetpriv(): string | null {
  for (const candidate of ['/usr/bin/setpriv', '/bin/setpriv']) {
    try {
      fs.accessSync(candidate, fs.constants.X_OK);
      return candidate;
    } catch {}
  }
  return null;
}

/**
 * libuv marks its own descriptors close-on-exec, but not every descriptor in the service is libuv's:
 * the usocket addon dbus-next uses for Unix fd passing creates the bus socket with a plain
 * `socket(AF_LOCAL, SOCK_STREAM, 0)` and receives passed fds (credentials pipes) without
 * MSG_CMSG_CLOEXEC, and a launcher may hand the service fds of its own. Node cannot set FD_CLOEXEC
 * on them, and libuv leaves every fd above the stdio array alone in the child, so every such fd
 * found in `/proc/self/fdinfo` gets a stdio entry of its own: /dev/null, dup2'ed over it in the
 * child before exec. The child then holds nothing of the service's but the stdio it was given.
 */
export function stdioWithoutLeaks(stdio: SpawnOptions['stdio'], devNull: number): SpawnOptions['stdio'] {
  const base = typeof stdio === 'string' ? [stdio, stdio, stdio] : [...(stdio ?? [])];
  // An 'ignore' above stderr leaves the service's fd of that number to the child, too.
  const leaked = inheritableFds().filter(
    (fd) => fd >= 3 && [undefined, null, 'ignore'].includes(base[fd] as string),
  );
  if (leaked.length === 0) return base;
  const extended: NonNullable<SpawnOptions['stdio']> = [...base];
  for (let fd = base.length; fd <= Math.max(...leaked); fd++) extended.push('ignore');
  for (const fd of leaked) extended[fd] = devNull;
  return extended;
}

/** The service's descriptors above stderr that an exec would keep (no FD_CLOEXEC). */
export function inheritableFds(): number[] {
  let entries: string[];
  try {
    entries = fs.readdirSync('/proc/self/fd');
  } catch {
    return [];
  }
  const fds: number[] = [];
  for (const entry of entries) {
    const fd = Number(entry);
    if (!Number.isInteger(fd) || fd <= 2) continue;
    let info: string;
    try {
      info = fs.readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8');
    } catch {
      continue; // the directory's own fd, gone by now
    }
    const flags = /^flags:\s*([0-7]+)/m.exec(info)?.[1];
    if (flags !== undefined && (Number.parseInt(flags, 8) & O_CLOEXEC) === 0) fds.push(fd);
  }
  return fds;
}

/** Running: /proc has it and it is not a zombie (a dead service's child is a zombie until init reaps it). */
export function processAlive(pid: number): boolean {
  let stat: string;
  try {
    stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return false;
  }
  // The state follows the parenthesised command name, which may itself contain ") ".
  return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
}
