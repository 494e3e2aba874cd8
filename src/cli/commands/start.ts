import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs/promises';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { onPath, readEnvironment, statePaths } from '../../config/environment.ts';
import { type PrivateBus, startPrivateBus } from '../../dbus/private-bus.ts';

// The children run the same program this process was started as: bin/vmedia.js, or dist/vmedia.mjs.
const vmediaBin = process.argv[1]!;
/** A child that dies is restarted after 1 s, then 2, 4 … up to 30 s while it keeps dying. */
const RESTART_DELAY_MS = 1000;
const MAX_RESTART_DELAY_MS = 30_000;
/** Up this long, a child counts as healthy again: its next death is restarted after 1 s. */
const HEALTHY_AFTER_MS = 60_000;

/** The wait before restarting a child that died `deaths` times in a row (1, 2, …). */
function restartDelay(deaths: number): number {
  return Math.min(MAX_RESTART_DELAY_MS, RESTART_DELAY_MS * 2 ** Math.max(0, deaths - 1));
}
const QEMU = 'qemu-system-x86_64';
/**
 * V8 flags of every daemon. A young generation of 1 MiB semi-spaces instead of V8's default of up to
 * 16 MiB: the server allocated its startup garbage there and kept ~10 MiB of it committed for good, the
 * service ~1.5 MiB (`npm run bench`, idle RSS); a request's objects and the NBD path's Buffer objects
 * (their bytes are off-heap) fit in 1 MiB, and no throughput change was measurable on the Proxy path.
 * The systemd units (deploy/systemd) pass the same flags; a test holds them to this list.
 */
export const DAEMON_NODE_FLAGS = ['--max-semi-space-size=1'];

/**
 * `vmedia start`: the embedded stack of docs/contract.md §1 in the foreground — a private dbus-daemon (unless
 * `--bus system`), the VirtualMedia service (restarted if it dies), the emulated host machine when QEMU is
 * there (`--machine auto|qemu|none`) and the HTTPS server.
 */
export async function run(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      bus: { type: 'string', default: 'private' },
      'host-mode': { type: 'string' },
      machine: { type: 'string', default: 'auto' },
    },
  });
  if (values.bus !== 'private' && values.bus !== 'system')
    throw new Error('--bus takes "private" or "system"');
  if (!['auto', 'qemu', 'none'].includes(values.machine))
    throw new Error('--machine takes "auto", "qemu" or "none"');
  const environment = readEnvironment();
  const paths = statePaths(environment.stateDir);
  await fs.mkdir(paths.runtime, { recursive: true, mode: 0o700 });
  await fs.chmod(paths.runtime, 0o700);

  // A file left by a killed launcher would point `--bus system` daemons at a dead private bus.
  await fs.rm(paths.dbusAddress, { force: true });
  let bus: PrivateBus | undefined;
  const busArgs: string[] = [];
  if (values.bus === 'private') {
    bus = await startPrivateBus(paths.runtime);
    await fs.writeFile(paths.dbusAddress, `${bus.address}\n`, { mode: 0o600 });
    busArgs.push('--bus-address', bus.address);
  }

  const hostMode = values['host-mode'] ? ['--host-mode', values['host-mode']] : [];
  const service = new Supervised('service', [...busArgs, '--state-dir', environment.stateDir, ...hostMode]);
  // The emulated host owns the host state and settings names: never on a system bus, where a BMC's own
  // services (phosphor-state-manager, settings) have them.
  const withMachine =
    values.machine === 'qemu' || (values.machine === 'auto' && values.bus === 'private' && onPath(QEMU));
  const machine = withMachine
    ? new Supervised('machine', [...busArgs, '--state-dir', environment.stateDir])
    : undefined;
  const server = new Supervised('server', busArgs);
  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    // Ctrl-C in a terminal signals the whole process group: the children may exit before their turn
    // below, and that is no death to report or restart.
    for (const child of [server, machine, service]) child?.expectExit();
    await server.stop();
    await machine?.stop();
    await service.stop();
    await bus?.stop();
    await fs.rm(paths.dbusAddress, { force: true });
  };
  process.once('SIGINT', () => void stop());
  process.once('SIGTERM', () => void stop());

  try {
    await service.start();
    await machine?.start();
    const readyLine = await server.start();
    const url = readyLine.match(/https:\/\/\S+/)?.[0] ?? '';
    process.stdout.write(`vmedia ready: ${url}\n`);
  } catch (error) {
    await stop();
    throw error;
  }
  await Promise.all([service.stopped, server.stopped, machine?.stopped]);
}

/** A child `vmedia <command>` whose output is passed through; restarted when it dies unexpectedly. */
class Supervised {
  private child: ChildProcess | undefined;
  private stopRequested = false;
  /** Deaths in a row, each within HEALTHY_AFTER_MS of its start. */
  private deaths = 0;
  private resolveStopped!: () => void;
  readonly stopped = new Promise<void>((resolve) => {
    this.resolveStopped = resolve;
  });

  constructor(
    private readonly command: string,
    private readonly args: string[],
  ) {}

  /** Spawns the child and resolves with its readiness line (`vmedia <command> ready: …`). */
  start(): Promise<string> {
    const child = spawn(process.execPath, [...DAEMON_NODE_FLAGS, vmediaBin, this.command, ...this.args], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    this.child = child;
    const startedAt = Date.now();
    const ready = new Promise<string>((resolve, reject) => {
      const lines = createInterface({ input: child.stdout! });
      lines.on('line', (line) => {
        process.stdout.write(`${line}\n`);
        if (line.startsWith(`vmedia ${this.command} ready`)) resolve(line);
      });
      child.once('exit', (code, signal) => reject(new Error(`${this.command} exited (${signal ?? code})`)));
    });
    child.once('exit', (code, signal) => {
      if (this.stopRequested) return this.resolveStopped();
      this.deaths = Date.now() - startedAt >= HEALTHY_AFTER_MS ? 1 : this.deaths + 1;
      const delay = restartDelay(this.deaths);
      process.stderr.write(
        `vmedia: ${this.command} died (${signal ?? code}); restarting in ${delay / 1000} s\n`,
      );
      setTimeout(() => {
        if (!this.stopRequested) this.start().catch(() => undefined);
      }, delay);
    });
    return ready;
  }

  /** From now on an exit is the end asked for: not reported, not restarted. */
  expectExit(): void {
    this.stopRequested = true;
  }

  async stop(): Promise<void> {
    this.stopRequested = true;
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return this.resolveStopped();
    child.kill('SIGTERM');
    const killTimer = setTimeout(() => child.kill('SIGKILL'), 5000);
    await once(child, 'exit');
    clearTimeout(killTimer);
  }
}
