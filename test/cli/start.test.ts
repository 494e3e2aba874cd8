import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs/promises';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { test } from 'node:test';
import dbus from 'dbus-next';
import { SERVICE_NAME } from '../../src/contract/dbus.ts';
import { HostService } from '../../src/contract/host.ts';
import { waitFor } from '../helpers/wait.ts';

const vmedia = path.resolve('bin/vmedia.js');

/** Processes whose command line mentions `needle` (our children all carry the state dir). */
async function processesMentioning(needle: string): Promise<number[]> {
  const found: number[] = [];
  for (const entry of await fs.readdir('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    const cmdline = await fs.readFile(`/proc/${entry}/cmdline`, 'utf8').catch(() => '');
    if (cmdline.includes(needle)) found.push(Number(entry));
  }
  return found;
}

function getJson(url: URL): Promise<{ status: number; body: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    https
      .get(url, { rejectUnauthorized: false, headers: { accept: 'application/json' } }, (response) => {
        let text = '';
        response.setEncoding('utf8');
        response.on('data', (chunk: string) => {
          text += chunk;
        });
        response.on('end', () => resolve({ status: response.statusCode ?? 0, body: JSON.parse(text) }));
      })
      .on('error', reject);
  });
}

function readyUrl(child: ChildProcess): Promise<string> {
  return new Promise((resolve, reject) => {
    const lines = createInterface({ input: child.stdout! });
    lines.on('line', (line) => {
      const match = line.match(/^vmedia ready: (https:\/\/\S+)/);
      if (match) resolve(match[1]!);
    });
    child.once('exit', (code) => reject(new Error(`vmedia start exited with ${code}`)));
  });
}

type BusControl = ReturnType<dbus.ProxyObject['getInterface']>;

interface Launched {
  child: ChildProcess;
  stateDir: string;
  url: string;
  /** What the launcher wrote on stderr so far (also passed through). */
  stderr(): string;
  /** Runs `use` with org.freedesktop.DBus on the launcher's private bus. */
  onBus<T>(use: (control: BusControl) => Promise<T>): Promise<T>;
  /** SIGINT to the launcher (or to its whole process group), and its exit code. */
  interrupt(group?: boolean): Promise<number | null>;
}

/**
 * `vmedia start [args]` on its own state directory and an ephemeral port, ready; whatever happens,
 * nothing of it is left running or on disk afterwards. `detached` gives it its own process group, as a
 * shell gives a foreground job.
 */
async function withLauncher(
  args: string[],
  use: (launched: Launched) => Promise<void>,
  { detached = false } = {},
) {
  const stateDir = await fs.mkdtemp(path.join(os.tmpdir(), 'vmedia-start-'));
  const child = spawn(process.execPath, [vmedia, 'start', ...args], {
    env: {
      ...process.env,
      VMEDIA_STATE_DIR: stateDir,
      VMEDIA_PORT: '0',
      VMEDIA_ADMIN_PASSWORD: 'start-test-Passw0rd',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached,
  });
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
    stderr += chunk;
    process.stderr.write(chunk);
  });
  try {
    const url = await readyUrl(child);
    await use({
      child,
      stateDir,
      url,
      stderr: () => stderr,
      async onBus(useBus) {
        const address = (await fs.readFile(path.join(stateDir, 'dbus-address'), 'utf8')).trim();
        const bus = dbus.sessionBus({ busAddress: address });
        try {
          const daemon = await bus.getProxyObject('org.freedesktop.DBus', '/org/freedesktop/DBus');
          return await useBus(daemon.getInterface('org.freedesktop.DBus'));
        } finally {
          bus.disconnect();
        }
      },
      async interrupt(group = false) {
        process.kill(group ? -child.pid! : child.pid!, 'SIGINT');
        const [code] = await once(child, 'exit');
        return code as number | null;
      },
    });
  } finally {
    if (child.exitCode === null) child.kill('SIGKILL');
    for (const pid of await processesMentioning(stateDir)) process.kill(pid, 'SIGKILL');
    await fs.rm(stateDir, { recursive: true, force: true });
  }
}

const servicePid = async (control: BusControl) =>
  (await control.GetConnectionUnixProcessID(SERVICE_NAME)) as number;

/** The service's pid once it differs from `previous` (it was restarted). */
const nextServicePid = (control: BusControl, previous: number) =>
  waitFor(
    async () => {
      const pid = await servicePid(control).catch(() => 0);
      return pid !== previous && pid;
    },
    { what: 'the service to be (re)started', timeoutMs: 30_000, intervalMs: 50 },
  );

test('vmedia start runs bus, service and server, restarts a dead service and stops cleanly', async () => {
  await withLauncher([], async ({ url, stateDir, onBus, interrupt }) => {
    assert.match(url, /^https:\/\/127\.0\.0\.1:\d+/);
    // The launcher is under test here, not the certificate: the server's own tests check TLS trust.
    const root = await getJson(new URL('/redfish/v1/', url));
    assert.equal(root.status, 200);
    assert.match(String(root.body['@odata.id']), /^\/redfish\/v1\/?$/);

    await onBus(async (control) => {
      // QEMU is installed here, so `--machine auto` runs the emulated host beside the service.
      for (const name of Object.values(HostService))
        assert.equal(await control.NameHasOwner(name), true, name);
      const first = await servicePid(control);
      process.kill(first, 'SIGKILL');
      assert.notEqual(await nextServicePid(control, first), first);
    });

    assert.equal(await interrupt(), 0);
    assert.deepEqual(await processesMentioning(stateDir), []);
    await assert.rejects(fs.access(path.join(stateDir, 'dbus-address')));
    assert.deepEqual(await fs.readdir(path.join(stateDir, 'run')), []);
  });
});

test('vmedia start --machine none leaves the host services to someone else', async () => {
  await withLauncher(['--machine', 'none'], async ({ onBus, interrupt }) => {
    await onBus(async (control) => {
      assert.equal(await control.NameHasOwner(SERVICE_NAME), true);
      assert.equal(await control.NameHasOwner(HostService.host), false);
    });
    assert.equal(await interrupt(), 0);
  });
});

test('Ctrl-C in a terminal (SIGINT to the whole process group) is an orderly stop, reported as none', async () => {
  await withLauncher(
    [],
    async ({ stateDir, stderr, interrupt }) => {
      assert.equal(await interrupt(true), 0);
      assert.doesNotMatch(stderr(), /died|restarting/);
      await waitFor(async () => (await processesMentioning(stateDir)).length === 0, {
        what: 'every child to be gone',
        timeoutMs: 10_000,
      });
    },
    { detached: true },
  );
});

test('a child that keeps dying is restarted with a growing delay', async () => {
  await withLauncher(['--machine', 'none'], async ({ stderr, onBus, interrupt }) => {
    await onBus(async (control) => {
      let previous = 0;
      for (const expected of ['1', '2']) {
        const pid = await nextServicePid(control, previous);
        process.kill(pid, 'SIGKILL');
        previous = pid;
        await waitFor(() => stderr().includes(`service died (SIGKILL); restarting in ${expected} s`), {
          what: `a restart in ${expected} s`,
          timeoutMs: 10_000,
        });
      }
    });
    assert.equal(await interrupt(), 0);
  });
});

test('the state directory gives nothing to other users: 0700 folders, 0600 files and sockets', async () => {
  await withLauncher([], async ({ stateDir, interrupt }) => {
    // The server certificate is public by nature (0644); everything else is the stack's own.
    const publicFiles = new Set(['certs/server.crt']);
    const seen: string[] = [];
    const walk = async (dir: string): Promise<void> => {
      for (const entry of await fs.readdir(dir, { withFileTypes: true })) {
        const full = path.join(dir, entry.name);
        const relative = path.relative(stateDir, full);
        const mode = (await fs.lstat(full)).mode & 0o777;
        seen.push(relative);
        if (publicFiles.has(relative)) assert.equal(mode & 0o022, 0, `${relative} is writable by others`);
        else if (entry.isDirectory()) assert.equal(mode & 0o077, 0, `${relative}/ is ${mode.toString(8)}`);
        else if (!entry.isSocket() || !relative.startsWith('run/')) {
          assert.equal(mode & 0o077, 0, `${relative} is ${mode.toString(8)}`);
        }
        if (entry.isDirectory()) await walk(full);
      }
    };
    assert.equal((await fs.stat(stateDir)).mode & 0o077, 0, 'the state directory itself');
    await walk(stateDir);
    // dbus-daemon makes its socket 0777; it is reachable only through run/, which is 0700.
    assert.equal((await fs.stat(path.join(stateDir, 'run'))).mode & 0o777, 0o700);
    for (const expected of ['accounts.json', 'certs/server.key', 'run/bus.sock', 'machine']) {
      assert.ok(seen.includes(expected), `${expected} was looked at (${seen.join(', ')})`);
    }
    assert.equal(await interrupt(), 0);
  });
});
