import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { hostUri, nbdTool, slotFreed } from '../bridge/helpers.ts';
import { adminPassword } from '../helpers/server.ts';
import { startVmStack, type VmStack } from '../helpers/virtual-media-stack.ts';
import { waitFor } from '../helpers/wait.ts';

const vmediaBin = fileURLToPath(new URL('../../bin/vmedia.js', import.meta.url));
const MiB = 1024 * 1024;

describe('vmedia mount, insert, eject, status against the real server and service', () => {
  let stack: VmStack;
  let dir: string;
  let connection: string[];
  const children = new Set<ChildProcess>();
  const image = randomBytes(2 * MiB);

  before(async () => {
    stack = await startVmStack({ images: { '/images/small.img': image } });
    dir = await fs.mkdtemp(path.join(os.tmpdir(), 'vmedia-cli-'));
    await fs.writeFile(path.join(dir, 'password'), `${adminPassword}\n`, { mode: 0o600 });
    await fs.writeFile(path.join(dir, 'ca.pem'), stack.server.ca);
    connection = [
      '--url',
      stack.server.url,
      '--user',
      'admin',
      '--password-file',
      path.join(dir, 'password'),
    ];
    connection.push('--ca', path.join(dir, 'ca.pem'));
  });

  after(async () => {
    for (const child of children) child.kill('SIGKILL');
    await stack?.stop();
    if (dir) await fs.rm(dir, { recursive: true, force: true });
  });

  /** `vmedia <args>` as a child; the state dir points nowhere so that nothing local is picked up. */
  function vmedia(args: string[]) {
    const child = spawn(process.execPath, [vmediaBin, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, VMEDIA_STATE_DIR: path.join(dir, 'no-state'), VMEDIA_PASSWORD: '' },
    });
    children.add(child);
    let stdout = '';
    let stderr = '';
    child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
      stdout += chunk;
    });
    child.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
      stderr += chunk;
    });
    const exited = once(child, 'exit').then(([code]) => {
      children.delete(child);
      return { code: code as number | null, stdout, stderr };
    });
    return { child, exited, stderr: () => stderr };
  }

  async function vmediaOk(args: string[]): Promise<string> {
    const { code, stdout, stderr } = await vmedia(args).exited;
    assert.equal(code, 0, `vmedia ${args[0]} failed: ${stderr}`);
    return stdout;
  }

  /** Starts `vmedia mount` and waits until the host side has the medium. */
  async function mount(slotId: string, file: string, extra: string[] = []) {
    const run = vmedia(['mount', slotId, file, ...connection, ...extra]);
    await waitFor(() => stack.client.slot(slotId)?.active === true, {
      what: `${slotId} to be inserted`,
      timeoutMs: 30_000,
    });
    assert.match(run.stderr(), new RegExp(`serving ${path.basename(file)} .* on ${slotId} via /nbd/`));
    return run;
  }

  test('a sparse image beyond 4 GiB: exact size on the host, a region near the end byte-exact', async () => {
    const file = path.join(dir, 'big.img');
    const size = 5 * 1024 * MiB + 4096;
    const region = randomBytes(256 * 1024);
    const regionOffset = size - 4096 - region.length;
    const handle = await fs.open(file, 'w');
    await handle.truncate(size);
    await handle.write(region, 0, region.length, regionOffset);
    await handle.close();

    const run = await mount('Slot_0', file);
    const { stdout: info } = await nbdTool('nbdinfo', ['--size', hostUri(stack, 'Slot_0')]);
    assert.equal(Number(info.trim()), size);
    // nbdkit's offset filter over the host export: nbdcopy then reads just the last bytes of the medium.
    const out = path.join(dir, 'tail.bin');
    const hostSocket = path.join(stack.harness.hostDir, 'Slot_0.sock');
    await nbdTool('nbdkit', [
      '-U',
      '-',
      '--filter=offset',
      'nbd',
      `socket=${hostSocket}`,
      `offset=${regionOffset}`,
      `range=${size - regionOffset}`,
      '--run',
      `nbdcopy "$uri" ${out}`,
    ]);
    const tail = await fs.readFile(out);
    assert.equal(tail.length, region.length + 4096);
    assert.ok(tail.subarray(0, region.length).equals(region), 'the region reads back byte-exact');
    assert.ok(tail.subarray(region.length).equals(Buffer.alloc(4096)), 'the last block is the hole');

    // Ctrl-C: the CLI ejects the slot and exits cleanly.
    run.child.kill('SIGINT');
    const { code, stderr } = await run.exited;
    assert.equal(code, 0, stderr);
    assert.match(stderr, /Slot_0 released/);
    await slotFreed(stack, 'Slot_0');
  });

  test('--rw: bytes written through the host export land in the file', async () => {
    const file = path.join(dir, 'rw.img');
    const content = randomBytes(8 * MiB);
    await fs.writeFile(file, content);
    const run = await mount('Slot_1', file, ['--rw']);
    const { stdout } = await nbdTool('qemu-io', [
      '-f',
      'raw',
      '-c',
      'write -P 0x5a 1000000 300000',
      '-c',
      'flush',
      hostUri(stack, 'Slot_1'),
    ]);
    assert.doesNotMatch(stdout, /fail|error/i);
    const expected = Buffer.from(content);
    expected.fill(0x5a, 1000000, 1300000);
    assert.ok((await fs.readFile(file)).equals(expected), 'the file holds the written bytes');

    run.child.kill('SIGINT');
    assert.equal((await run.exited).code, 0);
    await slotFreed(stack, 'Slot_1');
  });

  test('killing the CLI (no clean exit) frees the slot', async () => {
    const file = path.join(dir, 'kill.img');
    await fs.writeFile(file, randomBytes(MiB));
    const run = await mount('Slot_0', file);
    run.child.kill('SIGKILL');
    await run.exited;
    await slotFreed(stack, 'Slot_0');
  });

  test('mount refuses a Legacy slot and a wrong password, with a message', async () => {
    const file = path.join(dir, 'small.img');
    await fs.writeFile(file, randomBytes(4096));
    const legacy = await vmedia(['mount', 'Slot_2', file, ...connection]).exited;
    assert.equal(legacy.code, 1);
    assert.match(legacy.stderr, /Slot_2 is not a Proxy slot/);

    await fs.writeFile(path.join(dir, 'wrong'), 'not the password\n');
    const wrong = [...connection];
    wrong[wrong.indexOf('--password-file') + 1] = path.join(dir, 'wrong');
    const refused = await vmedia(['mount', 'Slot_0', file, ...wrong]).exited;
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /login as admin: /);
  });

  test('insert waits for the task; a failure exits non-zero with the Redfish message; eject; status', async () => {
    const missing = await vmedia([
      'insert',
      'Slot_2',
      `${stack.images.origin}/images/missing.img`,
      ...connection,
    ]).exited;
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /vmedia insert: POST .*InsertMedia: \S.+/);

    const url = `${stack.images.origin}/images/small.img`;
    assert.match(await vmediaOk(['insert', 'Slot_2', url, ...connection]), /Slot_2: inserted/);
    const { stdout } = await nbdTool('nbdinfo', ['--size', hostUri(stack, 'Slot_2')]);
    assert.equal(Number(stdout.trim()), image.length);

    const rows = JSON.parse(await vmediaOk(['status', '--json', ...connection])) as Array<
      Record<string, unknown>
    >;
    assert.deepEqual(
      rows.map((r) => [r.SlotId, r.Mode, r.Inserted]),
      [
        ['Slot_2', 'Legacy', true],
        ['Slot_3', 'Legacy', false],
        ['Slot_0', 'Proxy', false],
        ['Slot_1', 'Proxy', false],
      ],
    );
    assert.equal(rows[0]!.Image, url);
    assert.match(await vmediaOk(['status', ...connection]), /^Slot_2\s+Legacy\s+yes\s+URI\s+ro\s+https:/m);

    assert.match(await vmediaOk(['eject', 'Slot_2', ...connection]), /Slot_2: ejected/);
    await waitFor(() => stack.client.slot('Slot_2')?.active === false, { what: 'Slot_2 to be empty' });
  });
});
