import assert from 'node:assert/strict';
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { redfishtool as redfishToolFor, runSushy } from '../clients/field-clients.ts';
import { makeBootIso } from '../helpers/boot-iso.ts';
import { assertValidRedfish } from '../helpers/redfish-schema.ts';
import { adminPassword } from '../helpers/server.ts';
import { startVmStack, type VmStack } from '../helpers/virtual-media-stack.ts';
import { waitFor } from '../helpers/wait.ts';

const run = promisify(execFile);
const vmediaBin = fileURLToPath(new URL('../../bin/vmedia.js', import.meta.url));
const MARKER = 'VMEDIA-OS-BOOT-MARKER';
const systemUri = '/redfish/v1/Systems/system';

/**
 * Booting an OS from the medium, end to end: the emulated host (`vmedia machine`: QEMU under TCG with
 * SeaBIOS) on the stack's private bus, driven through Redfish Systems/system by the clients people use.
 * The medium is a GRUB ISO made here that prints a marker on the serial console; the machine's own disk
 * is blank, so the marker shows only if the boot override sent the firmware to the virtual medium.
 */
describe('an OS boots from virtual media on the emulated host', () => {
  let stack: VmStack;
  let dir: string;
  let iso: Buffer;
  const children = new Set<ChildProcess>();

  before(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vmedia-boot-'));
    iso = await fs.readFile(await makeBootIso(dir, MARKER));
    stack = await startVmStack({ images: { '/ironic/boot.iso': iso }, machine: true });
  });

  after(async () => {
    for (const child of children) child.kill('SIGKILL');
    await stack?.stop();
    if (stack) assert.deepEqual(await qemuProcessesIn(stack.machineDir), [], 'no QEMU is left running');
    if (dir) await fs.rm(dir, { recursive: true, force: true });
  });

  const consoleLog = () => fs.readFile(path.join(stack.machineDir, 'console.log'), 'utf8').catch(() => '');

  /** Waits for the marker to appear in the console after `offset` characters; answers seconds taken. */
  async function markerAfter(offset: number, since: number): Promise<number> {
    try {
      await waitFor(async () => (await consoleLog()).slice(offset).includes(MARKER), {
        what: `${MARKER} on the emulated host's serial console`,
        timeoutMs: 60_000,
        intervalMs: 50,
      });
    } catch (error) {
      // What the firmware tried is what tells a wrong boot order from a medium that cannot be read.
      const firmware = await fs.readFile(path.join(stack.machineDir, 'firmware.log'), 'utf8').catch(() => '');
      throw new Error(`${(error as Error).message}; firmware log ends:\n${firmware.slice(-3000)}`, {
        cause: error,
      });
    }
    return (Date.now() - since) / 1000;
  }

  const system = async () => {
    const response = await stack.request('GET', systemUri);
    assert.equal(response.status, 200);
    return response.json;
  };

  test("Ironic's sequence through sushy: ForceOff, eject, insert, boot once from Cd, On → the ISO boots", async () => {
    const sushy = (operation: 'boot' | 'finish') =>
      runSushy(stack.server.url, ['system', operation, `${stack.images.origin}/ironic/boot.iso`], 120_000);

    const offset = (await consoleLog()).length;
    const started = Date.now();
    const booted = await sushy('boot');
    assert.deepEqual(booted.allowed_resets, [
      'ResetType.FORCE_OFF',
      'ResetType.FORCE_ON',
      'ResetType.FORCE_RESTART',
      'ResetType.GRACEFUL_RESTART',
      'ResetType.GRACEFUL_SHUTDOWN',
      'ResetType.ON',
      'ResetType.POWER_CYCLE',
    ]);
    assert.deepEqual(booted.ejected, [], 'nothing was inserted before');
    assert.deepEqual(booted.inserted, {
      path: '/redfish/v1/Systems/system/VirtualMedia/Slot_2',
      inserted: true,
      image: `${stack.images.origin}/ironic/boot.iso`,
    });
    assert.deepEqual(booted.override, { target: 'Cd', enabled: 'Once', power_state: 'Off' });
    assert.equal(booted.powered_on.power_state, 'On');
    const seconds = await markerAfter(offset, started);
    console.log(
      `Legacy (sushy, https:// ISO as USB CD-ROM): "${MARKER}" on the serial console ${seconds.toFixed(1)} s after ForceOff`,
    );
    const firmware = await fs.readFile(path.join(stack.machineDir, 'firmware.log'), 'utf8');
    assert.match(firmware, /Booting from DVD\/CD/, 'SeaBIOS booted the CD-ROM');

    const finished = await sushy('finish');
    assert.deepEqual(finished.after_boot, { target: 'None', enabled: 'Disabled', power_state: 'On' });
    assert.deepEqual(finished.ejected, ['Slot_2']);
    assert.deepEqual(finished.powered_off, { target: 'None', enabled: 'Disabled', power_state: 'Off' });
    assert.equal(stack.client.slot('Slot_2')?.active, false);
    assert.deepEqual(await qemuProcessesIn(stack.machineDir), [], 'powered off: no QEMU runs');
    await assertValidRedfish(await system());
  });

  test('Proxy: `vmedia mount` serves the ISO from a local file; redfishtool boots it once as a Usb stick', async () => {
    const redfishtool = redfishToolFor(stack.server.url);
    await fs.writeFile(path.join(dir, 'password'), `${adminPassword}\n`, { mode: 0o600 });
    await fs.writeFile(path.join(dir, 'ca.pem'), stack.server.ca);
    const file = path.join(dir, 'boot.iso');
    const mount = spawn(
      process.execPath,
      [
        vmediaBin,
        'mount',
        'Slot_0',
        file,
        ...['--url', stack.server.url, '--user', 'admin', '--password-file', path.join(dir, 'password')],
        ...['--ca', path.join(dir, 'ca.pem')],
      ],
      {
        stdio: ['ignore', 'ignore', 'pipe'],
        env: { ...process.env, VMEDIA_STATE_DIR: path.join(dir, 'no-state') },
      },
    );
    children.add(mount);
    await waitFor(() => stack.client.slot('Slot_0')?.active === true, {
      what: 'Slot_0 to be inserted',
      timeoutMs: 30_000,
    });

    // Without an override the machine boots its own (blank) disk: nothing from the stick.
    const offset = (await consoleLog()).length;
    await redfishtool('Systems', 'reset', 'On');
    await waitFor(async () => (await system()).PowerState === 'On', { what: 'power on', timeoutMs: 30_000 });
    await waitFor(
      async () =>
        /No bootable device/.test(await fs.readFile(path.join(stack.machineDir, 'firmware.log'), 'utf8')),
      {
        what: 'SeaBIOS to find nothing to boot',
        timeoutMs: 60_000,
      },
    );
    assert.ok(!(await consoleLog()).slice(offset).includes(MARKER), 'no override, no boot from the medium');

    // The override, as redfishtool sends it; then a restart boots the stick once.
    await redfishtool('Systems', 'setBootOverride', 'Once', 'Usb');
    const overridden = await system();
    assert.equal(overridden.Boot.BootSourceOverrideTarget, 'Usb');
    assert.equal(overridden.Boot.BootSourceOverrideEnabled, 'Once');
    const restarted = Date.now();
    const reset = await fetchWithCurl('POST', `${systemUri}/Actions/ComputerSystem.Reset`, {
      ResetType: 'ForceRestart',
    });
    assert.equal(reset.status, 204);
    const seconds = await markerAfter(offset, restarted);
    console.log(
      `Proxy (vmedia mount → /nbd → USB stick): "${MARKER}" on the serial console ${seconds.toFixed(1)} s after ForceRestart`,
    );
    const after = await system();
    assert.equal(after.Boot.BootSourceOverrideTarget, 'None', 'Once is spent');
    assert.equal(after.Boot.BootSourceOverrideEnabled, 'Disabled');

    // Spent on the machine too: the next restart boots its own disk again, and the medium does not boot.
    const firmwareLog = path.join(stack.machineDir, 'firmware.log');
    const failuresBefore = (await fs.readFile(firmwareLog, 'utf8')).split('No bootable device').length;
    const consoleBefore = (await consoleLog()).length;
    assert.equal(
      (
        await fetchWithCurl('POST', `${systemUri}/Actions/ComputerSystem.Reset`, {
          ResetType: 'ForceRestart',
        })
      ).status,
      204,
    );
    await waitFor(
      async () =>
        (await fs.readFile(firmwareLog, 'utf8')).split('No bootable device').length > failuresBefore,
      {
        what: 'the restart after the one-time boot to find nothing on the disk',
        timeoutMs: 60_000,
      },
    );
    assert.ok(!(await consoleLog()).slice(consoleBefore).includes(MARKER), 'the medium booted once only');

    const off = await fetchWithCurl('POST', `${systemUri}/Actions/ComputerSystem.Reset`, {
      ResetType: 'ForceOff',
    });
    assert.equal(off.status, 204);
    await waitFor(async () => (await system()).PowerState === 'Off', {
      what: 'power off',
      timeoutMs: 30_000,
    });
    mount.kill('SIGINT');
    await once(mount, 'exit');
    children.delete(mount);
    await waitFor(() => stack.client.slot('Slot_0')?.active === false, {
      what: 'Slot_0 to be ejected',
      timeoutMs: 30_000,
    });
    assert.deepEqual(await qemuProcessesIn(stack.machineDir), []);

    async function fetchWithCurl(method: string, uri: string, body: unknown) {
      // The credentials go in a curl config file, not on the command line.
      const config = path.join(dir, 'curl.conf');
      await fs.writeFile(config, `user = "admin:${adminPassword}"\n`, { mode: 0o600 });
      const { stdout } = await run('curl', [
        ...['-sS', '--cacert', path.join(dir, 'ca.pem'), '-K', config],
        ...['-X', method, '-H', 'Content-Type: application/json', '-d', JSON.stringify(body)],
        ...['-o', '/dev/null', '-w', '%{http_code}', `${stack.server.url}${uri}`],
      ]);
      return { status: Number(stdout) };
    }
  });
});

/** The QEMU processes whose command line names this machine directory. */
async function qemuProcessesIn(machineDir: string): Promise<number[]> {
  const found: number[] = [];
  for (const entry of await fs.readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const commandLine = await fs.readFile(`/proc/${entry}/cmdline`, 'utf8').catch(() => '');
    if (commandLine.startsWith('qemu-system') && commandLine.includes(machineDir)) found.push(Number(entry));
  }
  return found;
}
