/**
 * DMTF's Redfish Tacklebox (https://github.com/DMTF/Redfish-Tacklebox at commit
 * 5c6db129155ae99299b26e653bbc267432022c84) on DMTF's python-redfish-library
 * (https://github.com/DMTF/python-redfish-library at commit 9c9cf45d680b749aa514ef80807889387f603e07),
 * both unmodified from their snapshots, run by Debian's /usr/bin/python3 against the real server and
 * service: `scripts/rf_virtual_media.py insert --image <url>` with no `--id`, so Tacklebox picks the
 * slot itself (the first member with no Image whose MediaTypes fit the image), then `eject --id`.
 *
 * Python modules on that path (redfish.rest.v1, redfish_utilities): requests, requests_unixsocket,
 * requests_toolbelt, xlsxwriter, i.e. Debian's python3-requests, python3-requests-unixsocket,
 * python3-requests-toolbelt and python3-xlsxwriter. The library does not verify certificates unless
 * given a CA file, and rf_virtual_media.py passes none, so it accepts the server's self-signed one.
 *
 * `--debug` makes the library write its HTTP trace to rf_virtual_media-<time>.log in the working
 * directory: the test reads from it which requests Tacklebox made and what they answered.
 *
 * The snapshots are not part of the repository (see test/clients/snapshots.ts); without them this
 * group is skipped with one line saying so.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { adminPassword } from '../helpers/server.ts';
import { startVmStack, type VmStack } from '../helpers/virtual-media-stack.ts';
import { snapshotMissing, snapshotPath } from './snapshots.ts';

const execFileAsync = promisify(execFile);
const sha256 = (data: Uint8Array) => createHash('sha256').update(data).digest('hex');
const MiB = 1024 * 1024;
/** Debian's interpreter: a `python3` found on PATH may be another one, without Debian's modules. */
const python = '/usr/bin/python3';
const managerCollection = '/redfish/v1/Managers/bmc/VirtualMedia';
const slots = ['Slot_0', 'Slot_1', 'Slot_2', 'Slot_3'];

const skip = snapshotMissing('Redfish-Tacklebox') ?? snapshotMissing('python-redfish-library');

/** One exchange in the library's debug trace. */
interface Exchange {
  method: string;
  path: string;
  status: number;
}

/**
 * The exchanges of a `--debug` log, in order. The library logs each request as
 * `HTTP REQUEST (<method>) for <path>:` and its answer as `HTTP RESPONSE for <path>:\nCode: <status> …`.
 */
function exchangesOf(log: string): Exchange[] {
  const exchanges: Exchange[] = [];
  const pattern = /HTTP REQUEST \((\w+)\) for (\S+):|HTTP RESPONSE for (\S+):\s*\nCode: (\d+)/g;
  let pending: { method: string; path: string } | undefined;
  for (const match of log.matchAll(pattern)) {
    if (match[1]) pending = { method: match[1], path: match[2]! };
    else if (pending && pending.path === match[3]) {
      exchanges.push({ ...pending, status: Number(match[4]) });
      pending = undefined;
    }
  }
  return exchanges;
}

describe('DMTF Redfish Tacklebox: rf_virtual_media.py insert (no --id) and eject', {
  skip: skip ?? false,
}, () => {
  const image = randomBytes(3 * MiB + 512);
  let stack: VmStack;
  let dir: string;
  let imageUrl: string;
  let runs = 0;
  const member = async (id: string) => (await stack.server.request('GET', `${managerCollection}/${id}`)).json;
  const hostExport = (id: string) => path.join(stack.harness.hostDir, `${id}.sock`);

  /** Runs rf_virtual_media.py with --debug in a fresh directory; answers its output and HTTP trace. */
  async function tacklebox(...command: string[]) {
    const cwd = path.join(dir, `run-${++runs}`);
    await fs.mkdir(cwd);
    const args = [
      snapshotPath('Redfish-Tacklebox', 'scripts', 'rf_virtual_media.py'),
      '-u',
      'admin',
      '-p',
      adminPassword,
      '-r',
      stack.server.url,
      '--debug',
      ...command,
    ];
    const env = {
      PATH: '/usr/bin:/bin',
      PYTHONPATH: [snapshotPath('Redfish-Tacklebox'), snapshotPath('python-redfish-library', 'src')].join(
        path.delimiter,
      ),
      // The snapshots stay as fetched: no __pycache__ written into them.
      PYTHONDONTWRITEBYTECODE: '1',
      // Loopback only, whatever proxy the environment names.
      NO_PROXY: '127.0.0.1',
      no_proxy: '127.0.0.1',
    };
    let stdout: string;
    try {
      ({ stdout } = await execFileAsync(python, args, { cwd, env, timeout: 120_000 }));
    } catch (error) {
      const { stdout = '', stderr = '' } = error as { stdout?: string; stderr?: string };
      throw new Error(`rf_virtual_media.py ${command.join(' ')} failed:\n${stdout}\n${stderr}`, {
        cause: error,
      });
    }
    const logs = (await fs.readdir(cwd)).filter((name) => /^rf_virtual_media-.*\.log$/.test(name));
    assert.equal(logs.length, 1, `one debug log in ${cwd}: ${logs.join(', ')}`);
    const log = await fs.readFile(path.join(cwd, logs[0]!), 'utf8');
    return { stdout, exchanges: exchangesOf(log) };
  }

  /** The sessions left open (Basic requests of the test make none). */
  const openSessions = async () =>
    (await stack.server.request('GET', '/redfish/v1/SessionService/Sessions')).json.Members;

  before(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vmedia-tacklebox-'));
    stack = await startVmStack({ images: { '/images/tacklebox.img': image } });
    imageUrl = `${stack.images.origin}/images/tacklebox.img`;
  });

  after(async () => {
    await stack?.stop();
    if (dir) await fs.rm(dir, { recursive: true, force: true });
  });

  test('insert --image <url> picks a Legacy slot (Slot_2); the host reads the image byte for byte', async () => {
    const { stdout, exchanges } = await tacklebox('insert', '--image', imageUrl);
    assert.match(stdout, new RegExp(`Inserting '${imageUrl.replace(/[.]/g, '\\.')}'`));

    const inserts = exchanges.filter(
      (e) => e.method === 'POST' && e.path.endsWith('/VirtualMedia.InsertMedia'),
    );
    assert.equal(inserts.length, 1, `one InsertMedia: ${JSON.stringify(exchanges, null, 1)}`);
    assert.match(inserts[0]!.path, /\/VirtualMedia\/Slot_2\/Actions\/VirtualMedia\.InsertMedia$/);
    // Tacklebox does not follow a task: success must mean mounted, i.e. 204 at once.
    assert.equal(inserts[0]!.status, 204, 'InsertMedia answers 204 once the mount is done');
    assert.ok(
      exchanges.some((e) => e.method === 'DELETE' && /\/SessionService\/Sessions\/[^/]+$/.test(e.path)),
      'Tacklebox logged out',
    );
    assert.deepEqual(await openSessions(), []);

    const slot = await member('Slot_2');
    assert.equal(slot.Inserted, true);
    assert.equal(slot.Image, imageUrl);
    assert.equal(slot.ImageName, 'tacklebox.img');
    assert.equal(slot.ConnectedVia, 'URI');
    assert.equal(slot.TransferProtocolType, 'HTTPS');
    for (const other of slots.filter((id) => id !== 'Slot_2')) {
      assert.equal((await member(other)).Inserted, false, `${other} stays free`);
    }

    const copy = path.join(dir, 'Slot_2.copy');
    await execFileAsync('nbdcopy', [`nbd+unix:///?socket=${hostExport('Slot_2')}`, copy], {
      timeout: 60_000,
    });
    assert.equal(sha256(await fs.readFile(copy)), sha256(image), 'the host read the image byte for byte');
  });

  test('eject --id Slot_2 frees the slot', async () => {
    const { stdout, exchanges } = await tacklebox('eject', '--id', 'Slot_2');
    assert.match(stdout, /Ejecting 'Slot_2'/);
    const ejects = exchanges.filter(
      (e) => e.method === 'POST' && e.path.endsWith('/VirtualMedia.EjectMedia'),
    );
    assert.equal(ejects.length, 1, `one EjectMedia: ${JSON.stringify(exchanges, null, 1)}`);
    assert.match(ejects[0]!.path, /\/VirtualMedia\/Slot_2\/Actions\/VirtualMedia\.EjectMedia$/);
    assert.equal(ejects[0]!.status, 204, 'EjectMedia answers 204 once the unmount is done');
    assert.deepEqual(await openSessions(), []);

    const slot = await member('Slot_2');
    assert.equal(slot.Inserted, false);
    assert.equal(slot.Image, null);
    assert.equal(slot.ConnectedVia, 'NotConnected');
    await assert.rejects(fs.access(hostExport('Slot_2')), 'the host export is gone');
  });
});
