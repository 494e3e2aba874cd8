/**
 * Our NBD server, on a Unix socket, against real clients: nbdinfo, nbdcopy (libnbd), qemu-img and
 * qemu-io (QEMU's NBD client), through `nbd+unix://` URIs.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { MemoryBlockDevice } from '../helpers/nbd-memory.ts';
import {
  listenNbd,
  type NbdTestServer,
  patternBytes,
  ReverseOrderDevice,
  run,
  runStatus,
  sha256,
  sha256File,
  tempDir,
} from './helpers.ts';

const MiB = 1024 * 1024;
const BIG = 5 * 2 ** 30 + 512; // 5 GiB + 512 bytes: above 2^32, and not a multiple of 4 KiB
const image = patternBytes(8 * MiB, 1234);
const bigTail = patternBytes(64 * 1024, 4321);
const bigAt4G = patternBytes(4096, 77);

const devices = {
  '': new MemoryBlockDevice(image.length, { data: image, readOnly: true }),
  rw: new MemoryBlockDevice(8 * MiB),
  big: new MemoryBlockDevice(BIG, {
    readOnly: true,
    blockSize: { minimum: 512, preferred: 4096, maximum: 32 * MiB },
  }),
  slow: new ReverseOrderDevice(new MemoryBlockDevice(image.length, { data: image, readOnly: true }), 4, 5),
};

let dir: { dir: string; remove(): Promise<void> };
let server: NbdTestServer;

before(async () => {
  dir = await tempDir();
  devices.big.store(BIG - bigTail.length, bigTail);
  devices.big.store(2 ** 32 - 2048, bigAt4G);
  server = await listenNbd(dir.dir, (name) => devices[name as keyof typeof devices], {
    listExports: () => Object.keys(devices),
  });
});

after(async () => {
  try {
    await server.close();
    // Every session any tool opened ended cleanly (NBD_CMD_DISC or NBD_OPT_ABORT), none with an error.
    const outcomes = await Promise.all(server.outcomes);
    assert.ok(outcomes.length > 10);
    assert.deepEqual(
      outcomes.filter((o) => o !== undefined),
      [],
    );
  } finally {
    await dir.remove();
  }
});

interface NbdinfoExport {
  'export-name': string;
  'export-size': number;
  is_read_only: boolean;
  can_flush: boolean;
  can_fua: boolean;
  can_trim: boolean;
  can_multi_conn: boolean;
  block_size_minimum: number;
  block_size_preferred: number;
  block_size_maximum: number;
}

async function nbdinfo(...args: string[]): Promise<{ protocol: string; exports: NbdinfoExport[] }> {
  return JSON.parse((await run('nbdinfo', ['--json', ...args])).stdout);
}

/** Parses `qemu-io -c 'read -v …'` hexdump lines ("13ffff200:  05 12 … ascii") into bytes. */
function parseQemuHexdump(output: string): Uint8Array {
  const bytes: number[] = [];
  for (const line of output.split('\n')) {
    const match = /^[0-9a-f]+:\s+((?:[0-9a-f]{2} ){1,16})/.exec(line);
    if (!match) continue;
    for (const hex of match[1]!.trim().split(' ')) bytes.push(Number.parseInt(hex, 16));
  }
  return Uint8Array.from(bytes);
}

/** Runs qemu-io commands against `uri`, failing if any verification failed or a command errored. */
async function qemuIo(uri: string, commands: string[], readOnly = true): Promise<string> {
  const args = [...(readOnly ? ['-r'] : []), '-f', 'raw', ...commands.flatMap((c) => ['-c', c]), uri];
  const { stdout, stderr } = await run('qemu-io', args);
  const output = stdout + stderr;
  assert.doesNotMatch(output, /verification failed|error|failed/i, output);
  return output;
}

describe('nbdinfo', () => {
  test('default export: size, read-only, block size, flags', async () => {
    const info = await nbdinfo(server.uri());
    assert.equal(info.protocol, 'newstyle-fixed');
    const [exp] = info.exports;
    assert.equal(exp!['export-size'], image.length);
    assert.equal(exp!.is_read_only, true);
    assert.equal(exp!.can_flush, true);
    assert.equal(exp!.can_trim, false);
    assert.equal(exp!.can_multi_conn, false);
    assert.deepEqual(
      [exp!.block_size_minimum, exp!.block_size_preferred, exp!.block_size_maximum],
      [1, 4096, 32 * MiB],
    );
  });

  test('writable export', async () => {
    const [exp] = (await nbdinfo(server.uri('rw'))).exports;
    assert.equal(exp!.is_read_only, false);
    assert.equal(exp!.can_fua, true);
    assert.equal(exp!.can_trim, true);
  });

  test('5 GiB + 512 bytes reported exactly, with its block size', async () => {
    const [exp] = (await nbdinfo(server.uri('big'))).exports;
    assert.equal(exp!['export-size'], 5368709632);
    assert.equal((await run('nbdinfo', ['--size', server.uri('big')])).stdout.trim(), '5368709632');
    assert.deepEqual(
      [exp!.block_size_minimum, exp!.block_size_preferred, exp!.block_size_maximum],
      [512, 4096, 32 * MiB],
    );
  });

  test('--list shows every export (NBD_OPT_LIST)', async () => {
    const names = (await nbdinfo('--list', server.uri())).exports.map((e) => e['export-name']);
    assert.deepEqual(names.sort(), ['', 'big', 'rw', 'slow']);
  });

  test('an unknown export fails with the server’s reason', async () => {
    const result = await runStatus('nbdinfo', [server.uri('missing')]);
    assert.notEqual(result.code, 0);
    assert.match(result.stderr, /No such file or directory for export: missing/);
  });
});

describe('nbdcopy', () => {
  test('copies the export out byte-exact', async () => {
    const out = path.join(dir.dir, 'out.img');
    await run('nbdcopy', [server.uri(), out]);
    assert.equal(await sha256File(out), sha256(image));
  });

  test('copies a file in to a writable export', async () => {
    const input = path.join(dir.dir, 'in.img');
    const content = patternBytes(8 * MiB, 555);
    await fs.writeFile(input, content);
    await run('nbdcopy', ['--flush', input, server.uri('rw')]);
    assert.equal(sha256(devices.rw.peek(0, content.length)), sha256(content));
  });

  test('several requests in flight with replies out of order', async () => {
    const out = path.join(dir.dir, 'slow.img');
    await run('nbdcopy', [
      '--requests=16',
      '--request-size=65536',
      '--connections=1',
      server.uri('slow'),
      out,
    ]);
    assert.equal(await sha256File(out), sha256(image));
    assert.ok(devices.slow.reorderedPairs > 50, `only ${devices.slow.reorderedPairs} reordered completions`);
  });
});

describe('qemu-img and qemu-io', () => {
  test('qemu-img info reports the exact size, above 4 GiB too', async () => {
    const small = JSON.parse((await run('qemu-img', ['info', '--output=json', server.uri()])).stdout);
    assert.equal(small['virtual-size'], image.length);
    const big = JSON.parse((await run('qemu-img', ['info', '--output=json', server.uri('big')])).stdout);
    assert.equal(big['virtual-size'], 5368709632);
  });

  test('qemu-img compare: identical to the source file, and it notices a difference', async () => {
    const same = path.join(dir.dir, 'same.img');
    await fs.writeFile(same, image);
    await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', same, server.uri()]);
    const changed = Uint8Array.from(image);
    changed[5 * MiB + 3] = changed[5 * MiB + 3]! ^ 0xff;
    await fs.writeFile(same, changed);
    const result = await runStatus('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', same, server.uri()]);
    assert.equal(result.code, 1, result.stdout + result.stderr);
    assert.match(result.stdout, /Content mismatch at offset 524288\d!/);
  });

  test('qemu-img convert copies the export out byte-exact', async () => {
    const out = path.join(dir.dir, 'converted.img');
    await run('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', server.uri(), out]);
    assert.equal(await sha256File(out), sha256(image));
  });

  test('the >4 GiB export: holes read as zeroes, data across 4 GiB and at the end byte-exact', async () => {
    const uri = server.uri('big');
    await qemuIo(uri, [
      'read -P 0 0 1M',
      `read -P 0 ${3 * 2 ** 30} 1M`,
      `read -P 0 ${BIG - bigTail.length - MiB} 1M`,
    ]);
    const across = await qemuIo(uri, [`read -v ${2 ** 32 - 2048} 4096`]);
    assert.deepEqual(parseQemuHexdump(across), bigAt4G);
    const tailOut = await qemuIo(uri, [`read -v ${BIG - bigTail.length} ${bigTail.length}`]);
    assert.deepEqual(parseQemuHexdump(tailOut), bigTail);
    const last = await qemuIo(uri, [`read -v ${BIG - 512} 512`]);
    assert.deepEqual(parseQemuHexdump(last), bigTail.subarray(bigTail.length - 512));
  });

  test('qemu-io writes land in a writable export', async () => {
    const uri = server.uri('rw');
    await qemuIo(uri, ['write -P 0x5a 1048576 65536', 'flush', 'read -P 0x5a 1048576 65536'], false);
    assert.deepEqual(devices.rw.peek(1048576, 65536), new Uint8Array(65536).fill(0x5a));
  });
});
