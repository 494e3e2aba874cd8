import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import fs from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { RedfishResponse } from '../../src/cli/redfish-client.ts';
import { CDROM_MAX_BYTES } from '../../src/service/host/usb-gadget.ts';
import { SAMBA_FOLDERS, sambaFiles } from '../helpers/samba.ts';
import { createTestCertificates } from '../helpers/test-ca.ts';
import {
  type GuestStack,
  repoRoot,
  shellQuote,
  startGuestStack,
  startVm,
  type Vm,
  vmUnavailable,
} from '../helpers/vm.ts';
import { waitFor } from '../helpers/wait.ts';

// The BMC chain on a real Linux kernel (docs/contract.md §2 "Real host attachment"): vmedia runs inside
// a QEMU guest with Debian's kernel, nbd, configfs and dummy_hcd, so the "host" is the guest's own
// usb-storage driver. Every assertion reads the guest's block devices, sysfs and configfs, not vmedia's
// word. Slots of `vmedia start`'s default config: Slot_0/1 Proxy (/dev/nbd0/1), Slot_2/3 Legacy.

const MiB = 1024 * 1024;
const IMAGE_ORIGIN = 'https://127.0.0.1:4443';
/** Samba inside the guest: the kernel's CIFS client mounts from it over the guest's loopback. */
const SMB_PORT = 4445;
const SMB_USER = 'imaging';
/** A comma and a space: mount.cifs must get it from the credentials file, not the option string. */
const SMB_PASSWORD = 'Smb-pässword, 9c41-never-leak';
const SMB_IMAGE = `smb://127.0.0.1:${SMB_PORT}/images/os%20images/disk.img`;
const VM_URI = '/redfish/v1/Managers/bmc/VirtualMedia';
const unavailable = vmUnavailable();

const sha256 = (data: Uint8Array) => createHash('sha256').update(data).digest('hex');

describe('the kernel chain in a VM (QEMU, Debian kernel)', { skip: unavailable ?? false }, () => {
  let vm: Vm;
  let stack: GuestStack;
  let hostDir: string;
  const imageSha: Record<string, string> = {};

  before(
    async () => {
      const started = Date.now();
      vm = await startVm();
      console.log(`# vm: booted to the agent in ${vm.bootSeconds.toFixed(1)} s`);
      hostDir = await fs.mkdtemp(path.join(vm.dir, 'host-'));
      const certificates = await createTestCertificates(hostDir);
      await vm.sh('mkdir -p /tmp/tls /tmp/images /tmp/nginx');
      await vm.writeFile('/tmp/tls/ca.crt', certificates.caCert);
      await vm.writeFile('/tmp/tls/server.crt', certificates.cert);
      await vm.writeFile('/tmp/tls/server.key', certificates.key, 0o600);
      await vm.writeFile(
        '/tmp/nginx/nginx.conf',
        [
          'user root; worker_processes 1; pid /tmp/nginx/nginx.pid; error_log /tmp/nginx/error.log;',
          'events {}',
          'http {',
          '  access_log /tmp/nginx/access.log;',
          '  client_body_temp_path /tmp/nginx/body; proxy_temp_path /tmp/nginx/proxy;',
          '  fastcgi_temp_path /tmp/nginx/fastcgi; uwsgi_temp_path /tmp/nginx/uwsgi; scgi_temp_path /tmp/nginx/scgi;',
          '  server {',
          '    listen 127.0.0.1:4443 ssl;',
          '    ssl_certificate /tmp/tls/server.crt; ssl_certificate_key /tmp/tls/server.key;',
          '    ssl_protocols TLSv1.2 TLSv1.3;',
          '    root /tmp/images;',
          '  }',
          '}',
          '',
        ].join('\n'),
      );
      await vm.sh('nginx -e /tmp/nginx/error.log -c /tmp/nginx/nginx.conf');
      for (const name of ['disk.img', 'cd.iso', 'idle.img']) {
        const out = await vm.sh(
          `dd if=/dev/urandom of=/tmp/images/${name} bs=1M count=8 status=none && sha256sum /tmp/images/${name}`,
        );
        imageSha[name] = out.split(' ')[0]!;
      }
      // nginx itself, through the CA the service will trust: the image server works before vmedia is involved.
      await vm.sh(`curl -fsS --cacert /tmp/tls/ca.crt -o /dev/null ${IMAGE_ORIGIN}/disk.img`);
      imageSha.smb = await startGuestSamba(vm);
      stack = await startGuestStack(vm, { env: { VMEDIA_CA_BUNDLE: '/tmp/tls/ca.crt' } });
      const log = await stack.log();
      assert.match(log, /host mode usb-gadget/, `auto must choose usb-gadget on this kernel:\n${log}`);
      assert.match(
        log,
        /"cifsClient":"kernel"/,
        `auto must choose the kernel's CIFS on this kernel:\n${log}`,
      );
      console.log(`# vm: vmedia ready in the guest after ${((Date.now() - started) / 1000).toFixed(1)} s`);
    },
    { timeout: 420_000 },
  );

  after(async () => {
    await vm?.stop();
  });

  test('Legacy HTTPS: nginx → nbdkit curl → nbd-client → /dev/nbd2 → gadget → /dev/sdX', {
    timeout: 180_000,
  }, async (t) => {
    const before = await nbdReads(vm, 2);
    await insert(stack, 'Slot_2', `${IMAGE_ORIGIN}/disk.img`);
    const disk = await waitDisk(vm, 'Slot_2');
    assert.match(disk, /^sd[a-z]+$/);
    const member = (await stack.request('GET', `${VM_URI}/Slot_2`)).json;
    assert.equal(member.Inserted, true);
    const sum = await guestSha(vm, disk);
    t.diagnostic(`image  sha256 ${imageSha['disk.img']} disk.img`);
    t.diagnostic(`device sha256 ${sum} /dev/${disk}`);
    assert.equal(sum, imageSha['disk.img']);
    const afterRead = await nbdReads(vm, 2);
    t.diagnostic(`/sys/block/nbd2/stat reads: ${before} → ${afterRead}`);
    assert.ok(afterRead > before, 'the reads went through /dev/nbd2');
    assert.equal((await vm.sh('cat /sys/block/nbd2/pid')).trim().length > 0, true);

    await eject(stack, 'Slot_2');
    await assertReleased(vm, 'Slot_2', 2, disk);
  });

  test('Proxy: vmedia mount on this machine → WSS → bridge → nbd-client → gadget → /dev/sdX', {
    timeout: 240_000,
  }, async (t) => {
    const file = path.join(hostDir, 'proxy.img');
    await fs.writeFile(file, randomBytes(8 * MiB));
    const original = sha256(await fs.readFile(file));

    // Read-only (no --rw): the bytes arrive, a write fails, the file is unchanged.
    let mount = startMount(stack, 'Slot_0', file, false);
    try {
      const disk = await waitDisk(vm, 'Slot_0', mount);
      const sum = await guestSha(vm, disk);
      t.diagnostic(`file   sha256 ${original} proxy.img (host)`);
      t.diagnostic(`device sha256 ${sum} /dev/${disk} (Slot_0, read-only)`);
      assert.equal(sum, original);
      assert.equal(await lunFlag(vm, 'Slot_0', 'ro'), '1', 'the gadget follows the read-only export');
      assert.equal((await stack.request('GET', `${VM_URI}/Slot_0`)).json.WriteProtected, true);
      const write = await vm.run(
        `dd if=/dev/zero of=/dev/${disk} bs=4096 count=1 seek=5 conv=fsync,notrunc status=none && sync`,
      );
      t.diagnostic(`read-only write: exit ${write.code} ${write.stderr.trim()}`);
      assert.notEqual(write.code, 0, 'a write to a read-only Proxy medium must fail');
      assert.equal(sha256(await fs.readFile(file)), original, 'the file is unchanged');
      await stopMount(mount);
      await assertReleased(vm, 'Slot_0', 0, disk);
    } finally {
      mount.child.kill('SIGKILL');
    }

    // --rw: a write in the guest lands in the file on this machine.
    mount = startMount(stack, 'Slot_1', file, true);
    try {
      const disk = await waitDisk(vm, 'Slot_1', mount);
      assert.equal(await guestSha(vm, disk), original);
      assert.equal(await lunFlag(vm, 'Slot_1', 'ro'), '0');
      assert.equal((await stack.request('GET', `${VM_URI}/Slot_1`)).json.WriteProtected, false);
      const pattern = randomBytes(4096);
      await vm.writeFile('/tmp/pattern.bin', pattern);
      await vm.sh(
        `dd if=/tmp/pattern.bin of=/dev/${disk} bs=4096 count=1 seek=5 conv=fsync,notrunc status=none && sync`,
      );
      const landed = await waitFor(
        async () => {
          const handle = await fs.open(file);
          try {
            const chunk = Buffer.alloc(4096);
            await handle.read(chunk, 0, 4096, 5 * 4096);
            return chunk.equals(pattern) && chunk;
          } finally {
            await handle.close();
          }
        },
        { what: 'the guest write to reach the file', timeoutMs: 30_000, intervalMs: 200 },
      );
      t.diagnostic(`write sha256 ${sha256(landed)} at offset ${5 * 4096} (file on the host)`);
      t.diagnostic(`file  sha256 ${sha256(await fs.readFile(file))} proxy.img after the write`);
      await stopMount(mount);
      await assertReleased(vm, 'Slot_1', 1, disk);
    } finally {
      mount.child.kill('SIGKILL');
    }
  });

  test('an .iso is a CD-ROM: /dev/srN with the exact bytes', { timeout: 180_000 }, async (t) => {
    await insert(stack, 'Slot_3', `${IMAGE_ORIGIN}/cd.iso`);
    const disk = await waitDisk(vm, 'Slot_3');
    assert.match(disk, /^sr\d+$/, 'a CD-ROM drive');
    assert.equal(await lunFlag(vm, 'Slot_3', 'cdrom'), '1');
    const sum = await guestSha(vm, disk);
    t.diagnostic(`image  sha256 ${imageSha['cd.iso']} cd.iso`);
    t.diagnostic(`device sha256 ${sum} /dev/${disk}`);
    assert.equal(sum, imageSha['cd.iso']);
    await eject(stack, 'Slot_3');
    await assertReleased(vm, 'Slot_3', 3, disk);
  });

  test('an .iso above the CD-ROM limit (sparse, 2.36 GB + 1 MiB) is a removable disk with its bytes', {
    timeout: 180_000,
  }, async (t) => {
    // The gadget's CD-ROM emulation cannot address more than CDROM_MAX_BYTES (docs/contract.md §2).
    const size = CDROM_MAX_BYTES + MiB;
    await vm.sh(
      `truncate -s ${size} /tmp/images/big.iso && ` +
        `dd if=/dev/urandom of=/tmp/images/big.iso bs=1M count=1 conv=notrunc status=none && ` +
        `dd if=/dev/urandom of=/tmp/images/big.iso bs=1M count=1 seek=${size / MiB - 1} conv=notrunc status=none`,
    );
    await insert(stack, 'Slot_3', `${IMAGE_ORIGIN}/big.iso`);
    try {
      const disk = await waitDisk(vm, 'Slot_3');
      assert.match(disk, /^sd[a-z]+$/, 'a disk, not a CD-ROM drive');
      assert.equal(await lunFlag(vm, 'Slot_3', 'cdrom'), '0');
      assert.equal(await lunFlag(vm, 'Slot_3', 'removable'), '1');
      assert.equal(Number(await vm.sh(`cat /sys/block/${disk}/size`)) * 512, size, 'the whole image');
      for (const [where, skip] of [
        ['first', 0],
        ['last', size / MiB - 1],
      ] as const) {
        const file = await guestMiBSha(vm, '/tmp/images/big.iso', skip);
        const device = await guestMiBSha(vm, `/dev/${disk}`, skip);
        t.diagnostic(`${where} MiB: image ${file}, /dev/${disk} ${device}`);
        assert.equal(device, file);
      }
      await eject(stack, 'Slot_3');
      await assertReleased(vm, 'Slot_3', 3, disk);
    } finally {
      await vm.sh('rm -f /tmp/images/big.iso');
    }
  });

  test('no free USB device controller: the task answers 503 saying so, the slot stays clean', {
    timeout: 180_000,
  }, async (t) => {
    // Other gadgets (as a KVM keyboard would) take every UDC of the guest.
    const udcs = (await vm.sh('ls /sys/class/udc')).trim().split(/\s+/);
    t.diagnostic(`UDCs: ${udcs.join(' ')}, all taken by foreign gadgets`);
    await vm.sh('truncate -s 1M /tmp/foreign.img');
    for (const [i, udc] of udcs.entries()) await vm.sh(foreignGadget(`foreign-${i}`, udc));
    try {
      const accepted = await stack.request('POST', `${VM_URI}/Slot_2/Actions/VirtualMedia.InsertMedia`, {
        Image: `${IMAGE_ORIGIN}/disk.img`,
      });
      const final = await outcomeOf(stack, accepted, 'the insert to fail');
      const [message] = final.json.error['@Message.ExtendedInfo'];
      t.diagnostic(`task monitor: ${final.status} ${message.MessageId}: ${message.Resolution}`);
      assert.equal(final.status, 503);
      assert.equal(message.MessageId, 'Base.1.22.1.OperationFailed');
      assert.match(message.Resolution, /No USB device controller is free/);
      const member = (await stack.request('GET', `${VM_URI}/Slot_2`)).json;
      assert.equal(member.Inserted, false);
      assert.equal(member.Image, null);
      assert.equal((await vm.run('test -e /sys/kernel/config/usb_gadget/mass-storage-Slot_2')).code, 1);
      assert.equal((await vm.run('cat /sys/block/nbd2/pid 2>/dev/null')).stdout.trim(), '');
      assert.deepEqual(
        [...(await helperPids(vm, 'nbd-client', 2)), ...(await helperPids(vm, 'nbdkit', 2))],
        [],
      );
      for (const [i, udc] of udcs.entries()) {
        const bound = (await vm.sh(`cat /sys/kernel/config/usb_gadget/foreign-${i}/UDC`)).trim();
        assert.equal(bound, udc, 'a foreign gadget is left alone');
      }
    } finally {
      for (const i of udcs.keys()) await vm.sh(removeGadget(`foreign-${i}`));
    }
    await insert(stack, 'Slot_2', `${IMAGE_ORIGIN}/disk.img`);
    const disk = await waitDisk(vm, 'Slot_2');
    await eject(stack, 'Slot_2');
    await assertReleased(vm, 'Slot_2', 2, disk);
  });

  test('two slots at once, one per mode', { timeout: 240_000 }, async (t) => {
    const file = path.join(hostDir, 'both.img');
    await fs.writeFile(file, randomBytes(4 * MiB));
    const original = sha256(await fs.readFile(file));
    await insert(stack, 'Slot_2', `${IMAGE_ORIGIN}/disk.img`);
    const mount = startMount(stack, 'Slot_0', file, false);
    try {
      const legacy = await waitDisk(vm, 'Slot_2');
      const proxy = await waitDisk(vm, 'Slot_0', mount);
      assert.notEqual(legacy, proxy);
      const udcs = await Promise.all(
        ['Slot_2', 'Slot_0'].map(async (slot) =>
          (await vm.sh(`cat /sys/kernel/config/usb_gadget/mass-storage-${slot}/UDC`)).trim(),
        ),
      );
      t.diagnostic(`UDCs: Slot_2 ${udcs[0]}, Slot_0 ${udcs[1]}`);
      assert.notEqual(udcs[0], udcs[1]);
      const [legacySum, proxySum] = await Promise.all([guestSha(vm, legacy), guestSha(vm, proxy)]);
      t.diagnostic(`Legacy device sha256 ${legacySum} /dev/${legacy} (image ${imageSha['disk.img']})`);
      t.diagnostic(`Proxy  device sha256 ${proxySum} /dev/${proxy} (file ${original})`);
      assert.equal(legacySum, imageSha['disk.img']);
      assert.equal(proxySum, original);
      await eject(stack, 'Slot_2');
      await stopMount(mount);
      await assertReleased(vm, 'Slot_2', 2, legacy);
      await assertReleased(vm, 'Slot_0', 0, proxy);
    } finally {
      mount.child.kill('SIGKILL');
    }
  });

  for (const victim of ['nbd-client', 'nbdkit'] as const) {
    test(`fault: ${victim} killed in the guest → the slot is Ready and the gadget gone`, {
      timeout: 180_000,
    }, async (t) => {
      await insert(stack, 'Slot_2', `${IMAGE_ORIGIN}/disk.img`);
      const disk = await waitDisk(vm, 'Slot_2');
      const pids = await helperPids(vm, victim, 2);
      assert.ok(pids.length > 0, `a ${victim} serves Slot_2`);
      t.diagnostic(`SIGKILL ${victim} ${pids.join(' ')}`);
      await vm.sh(`kill -KILL ${pids.join(' ')}`);
      await waitFor(async () => (await stack.request('GET', `${VM_URI}/Slot_2`)).json.Inserted === false, {
        what: 'Slot_2 to be Ready again',
        timeoutMs: 60_000,
        intervalMs: 500,
      });
      await assertReleased(vm, 'Slot_2', 2, disk);
    });
  }

  test('fault: the service SIGKILLed with a medium in → the restarted service cleans up', {
    timeout: 240_000,
  }, async (t) => {
    await insert(stack, 'Slot_2', `${IMAGE_ORIGIN}/disk.img`);
    const disk = await waitDisk(vm, 'Slot_2');
    const service = await killService(vm, stack, t);
    const member = await waitForRestart(vm, stack, service);
    t.diagnostic(`after the restart: Inserted ${member.Inserted}`);
    // What the dead service left behind must be gone, and the slot usable again.
    await assertReleased(vm, 'Slot_2', 2, disk, 30_000);
    assert.equal(member.Inserted, false);
    await insert(stack, 'Slot_2', `${IMAGE_ORIGIN}/disk.img`);
    const again = await waitDisk(vm, 'Slot_2');
    assert.equal(await guestSha(vm, again), imageSha['disk.img']);
    await eject(stack, 'Slot_2');
    await assertReleased(vm, 'Slot_2', 2, again);
  });

  test('Legacy CIFS: Samba → kernel cifs (SMB 3.1.1, sealed) → nbdkit file → /dev/nbd2 → gadget → /dev/sdX', {
    timeout: 180_000,
  }, async (t) => {
    await insert(stack, 'Slot_2', SMB_IMAGE, { UserName: SMB_USER, Password: SMB_PASSWORD });
    const disk = await waitDisk(vm, 'Slot_2');
    const mounts = await cifsMounts(vm, 'Slot_2');
    t.diagnostic(`mount: ${mounts.join(' | ')}`);
    assert.equal(mounts.length, 1, 'the share is mounted by the kernel');
    assert.match(mounts[0]!, /^\/\/127\.0\.0\.1\/images \S+ cifs ro,/);
    assert.match(mounts[0]!, /,vers=3\.1\.1,/);
    assert.match(mounts[0]!, /,seal,/);
    const sessions = await vm.sh(`${SAMBA_ENV} smbstatus -s /tmp/samba/smb.conf -b`);
    t.diagnostic(sessions.trim().split('\n').at(-1)!);
    assert.match(sessions, /SMB3_11\s+AES-(128|256)-(GCM|CCM)/, 'smbd sees an encrypted SMB 3.1.1 session');
    const sum = await guestSha(vm, disk);
    t.diagnostic(`image  sha256 ${imageSha.smb} os images/disk.img on the share`);
    t.diagnostic(`device sha256 ${sum} /dev/${disk}`);
    assert.equal(sum, imageSha.smb);

    const runtime = await vm.sh(`ls ${stack.stateDir}/run`);
    assert.doesNotMatch(runtime, /credentials/, 'the credentials file is gone once mounted');
    // The needle comes from a file: on grep's own command line it would find itself.
    await vm.writeFile(`${SAMBA_DIR}/needle`, SMB_PASSWORD, 0o600);
    const exposed = await vm.run(
      `grep -l -F -f ${SAMBA_DIR}/needle /proc/[0-9]*/cmdline /proc/[0-9]*/environ`,
    );
    assert.equal(
      exposed.stdout.trim(),
      '',
      'no process of the guest has the password in argv or environment',
    );
    assert.ok(!(await stack.log()).includes(SMB_PASSWORD), 'nor does the log');

    await eject(stack, 'Slot_2');
    await assertReleased(vm, 'Slot_2', 2, disk);
    assert.deepEqual(await cifsMounts(vm, 'Slot_2'), [], 'unmounted after the eject');
    assert.doesNotMatch(await vm.sh(`ls ${stack.stateDir}/run`), /Slot_2\.cifs/, 'mount point removed');
  });

  test('Legacy CIFS with a wrong password: 400 ResourceAtUriUnauthorized, nothing mounted', {
    timeout: 120_000,
  }, async () => {
    const accepted = await stack.request('POST', `${VM_URI}/Slot_2/Actions/VirtualMedia.InsertMedia`, {
      Image: SMB_IMAGE,
      UserName: SMB_USER,
      Password: 'not-the-password',
    });
    const final = await outcomeOf(stack, accepted, 'the insert with a wrong password to fail');
    assert.equal(final.status, 400, JSON.stringify(final.json));
    const [message] = final.json.error['@Message.ExtendedInfo'];
    assert.match(message.MessageId, /ResourceAtUriUnauthorized$/);
    assert.equal((await stack.request('GET', `${VM_URI}/Slot_2`)).json.Inserted, false);
    assert.deepEqual(await cifsMounts(vm, 'Slot_2'), []);
    assert.doesNotMatch(await vm.sh(`ls ${stack.stateDir}/run`), /Slot_2\.cifs/);
  });

  test('fault: the service SIGKILLed with a CIFS medium in → the restarted service unmounts the share', {
    timeout: 240_000,
  }, async (t) => {
    await insert(stack, 'Slot_2', SMB_IMAGE, { UserName: SMB_USER, Password: SMB_PASSWORD });
    const disk = await waitDisk(vm, 'Slot_2');
    assert.equal((await cifsMounts(vm, 'Slot_2')).length, 1);
    const service = await killService(vm, stack, t);
    await waitForRestart(vm, stack, service);
    await assertReleased(vm, 'Slot_2', 2, disk, 30_000);
    assert.deepEqual(await cifsMounts(vm, 'Slot_2'), [], 'the share a killed service left is unmounted');
    assert.doesNotMatch(await vm.sh(`ls ${stack.stateDir}/run`), /Slot_2\.cifs/);
  });

  test('inactivity timeout: no I/O on the real device for InactivityTimeout → unmounted', {
    timeout: 300_000,
  }, async (t) => {
    const idleSeconds = 10;
    await stack.stop();
    await vm.writeFile(
      '/tmp/idle-slots.json',
      JSON.stringify({
        InactivityTimeout: idleSeconds,
        MountPoints: {
          Slot_2: {
            Mode: 1,
            NBDDevice: '/dev/nbd2',
            UnixSocket: '/run/vmedia-idle/run/nbd2.sock',
            Timeout: 90,
          },
        },
      }),
    );
    stack = await startGuestStack(vm, {
      name: 'idle',
      env: { VMEDIA_CA_BUNDLE: '/tmp/tls/ca.crt', VMEDIA_CONFIG: '/tmp/idle-slots.json' },
    });
    await insert(stack, 'Slot_2', `${IMAGE_ORIGIN}/idle.img`);
    const disk = await waitDisk(vm, 'Slot_2');
    const sum = await guestSha(vm, disk);
    t.diagnostic(`device sha256 ${sum} /dev/${disk} (image ${imageSha['idle.img']})`);
    assert.equal(sum, imageSha['idle.img']);
    const lastIo = Date.now();
    await waitFor(async () => (await stack.request('GET', `${VM_URI}/Slot_2`)).json.Inserted === false, {
      what: `Slot_2 to unmount itself after ${idleSeconds} s without I/O`,
      timeoutMs: (idleSeconds + 60) * 1000,
      intervalMs: 500,
    });
    const idle = (Date.now() - lastIo) / 1000;
    t.diagnostic(`unmounted after ${idle.toFixed(1)} s without I/O (InactivityTimeout ${idleSeconds})`);
    assert.ok(idle >= idleSeconds - 1, `not before the timeout (${idle} s)`);
    await assertReleased(vm, 'Slot_2', 2, disk);
  });
});

// ---------------------------------------------------------------------------------------------------

/**
 * The outcome of an InsertMedia or EjectMedia: the answer itself, or for a 202 what its task monitor
 * answers once it stops answering 202 (docs/contract.md §3).
 */
async function outcomeOf(stack: GuestStack, answer: RedfishResponse, what: string, timeoutMs = 120_000) {
  if (answer.status !== 202) return answer;
  const monitor = String(answer.headers.location);
  return waitFor(
    async () => {
      const response = await stack.request('GET', monitor);
      return response.status !== 202 && response;
    },
    { what, timeoutMs, intervalMs: 500 },
  );
}

/** Inserts `image` into a Legacy slot over Redfish: 204 at once, or 202 and a task that ends in 204. */
async function insert(
  stack: GuestStack,
  slot: string,
  image: string,
  parameters: Record<string, unknown> = {},
): Promise<void> {
  const response = await stack.request('POST', `${VM_URI}/${slot}/Actions/VirtualMedia.InsertMedia`, {
    Image: image,
    ...parameters,
  });
  const final = await outcomeOf(stack, response, `the insert into ${slot} to finish`);
  assert.equal(final.status, 204, `insert ${image} into ${slot}: ${JSON.stringify(final.json)}`);
}

/** Ejects over Redfish: 204 at once, or 202 and a task that ends in 204. */
async function eject(stack: GuestStack, slot: string): Promise<void> {
  const response = await stack.request('POST', `${VM_URI}/${slot}/Actions/VirtualMedia.EjectMedia`, {});
  const final = await outcomeOf(stack, response, `the eject of ${slot} to finish`, 60_000);
  assert.equal(final.status, 204, JSON.stringify(final.json));
}

/** The guest's block devices (sdX, srN) by the USB serial number of the gadget behind them (= SlotId). */
async function disksBySerial(vm: Vm): Promise<Record<string, string>> {
  const out = await vm.sh(
    'for b in /sys/block/sd* /sys/block/sr*; do [ -e "$b/device" ] || continue; ' +
      'p=$(readlink -f "$b/device"); while [ "$p" != / ] && [ ! -f "$p/serial" ]; do p=$(dirname "$p"); done; ' +
      '[ -f "$p/serial" ] && [ "$(cat $b/size)" -gt 0 ] && echo "$(cat $p/serial) $(basename $b)"; done; true',
  );
  return Object.fromEntries(
    out
      .trim()
      .split('\n')
      .filter(Boolean)
      .map((line) => line.split(' ') as [string, string]),
  );
}

/** The block device of `slot`'s gadget, once the guest kernel has enumerated it and read its capacity. */
async function waitDisk(vm: Vm, slot: string, mount?: Mount): Promise<string> {
  return waitFor(
    async () => {
      if (mount && mount.child.exitCode !== null) throw new Error(`vmedia mount exited:\n${mount.output()}`);
      const disk = (await disksBySerial(vm))[slot];
      return disk && (await vm.run(`test -b /dev/${disk}`)).code === 0 && disk;
    },
    { what: `a block device for ${slot} in the guest`, timeoutMs: 60_000, intervalMs: 500 },
  );
}

/** A flag of the slot's gadget LUN in configfs (ro, cdrom, removable). */
async function lunFlag(vm: Vm, slot: string, flag: string): Promise<string> {
  const lun = `/sys/kernel/config/usb_gadget/mass-storage-${slot}/functions/mass_storage.usb0/lun.0`;
  return (await vm.sh(`cat ${lun}/${flag}`)).trim();
}

/** Shell that makes a mass-storage gadget vmedia does not own and binds it to `udc`. */
function foreignGadget(name: string, udc: string): string {
  const g = `/sys/kernel/config/usb_gadget/${name}`;
  return [
    `mkdir ${g} ${g}/strings/0x409 ${g}/configs/c.1 ${g}/functions/mass_storage.0`,
    `echo 0x1d6b > ${g}/idVendor`,
    `echo 0x0104 > ${g}/idProduct`,
    `echo /tmp/foreign.img > ${g}/functions/mass_storage.0/lun.0/file`,
    `ln -s ${g}/functions/mass_storage.0 ${g}/configs/c.1/`,
    `echo ${udc} > ${g}/UDC`,
  ].join(' && ');
}

function removeGadget(name: string): string {
  const g = `/sys/kernel/config/usb_gadget/${name}`;
  return [
    `[ ! -e ${g} ] || { echo > ${g}/UDC`,
    `rm -f ${g}/configs/c.1/mass_storage.0`,
    `rmdir ${g}/functions/mass_storage.0 ${g}/configs/c.1 ${g}/strings/0x409 ${g}; }`,
  ].join('; ');
}

async function guestSha(vm: Vm, disk: string): Promise<string> {
  return (await vm.sh(`sha256sum /dev/${disk}`, { timeoutMs: 120_000 })).split(' ')[0]!;
}

/** sha256 of the `index`-th MiB of a guest file or device. */
async function guestMiBSha(vm: Vm, file: string, index: number): Promise<string> {
  return (await vm.sh(`dd if=${file} bs=1M count=1 skip=${index} status=none | sha256sum`)).split(' ')[0]!;
}

/** Reads completed on /dev/nbdN (field 1 of its stat). */
const SERVICE_READY = 'vmedia service ready';

/** SIGKILLs the guest's `vmedia service` (no cleanup, as a crash); `vmedia start` restarts it. */
async function killService(vm: Vm, stack: GuestStack, t: { diagnostic(message: string): void }) {
  const pid = (await vm.sh(`pgrep -f 'vmedia(\\.js|\\.mjs)? service' | head -1`)).trim();
  const readies = (await stack.log()).split(SERVICE_READY).length - 1;
  t.diagnostic(`SIGKILL the service (pid ${pid}); vmedia start restarts it`);
  await vm.sh(`kill -KILL ${pid}`);
  return { pid, readies };
}

/** Waits for the service that replaced the killed one, then for the server to serve Slot_2 from it. */
async function waitForRestart(vm: Vm, stack: GuestStack, killed: { pid: string; readies: number }) {
  await waitFor(
    async () => {
      const now = (await vm.run(`pgrep -f 'vmedia(\\.js|\\.mjs)? service' | head -1`)).stdout.trim();
      const readies = (await stack.log()).split(SERVICE_READY).length - 1;
      return now !== '' && now !== killed.pid && readies > killed.readies;
    },
    { what: 'the restarted service to be ready', timeoutMs: 120_000, intervalMs: 1000 },
  );
  // Until the server has found the new service on the bus, the member answers 503 (docs/contract.md §3).
  return waitFor(
    async () => {
      const response = await stack.request('GET', `${VM_URI}/Slot_2`);
      return response.status === 200 && response.json;
    },
    { what: 'the server to serve Slot_2 from the restarted service', timeoutMs: 60_000, intervalMs: 500 },
  );
}

const SAMBA_DIR = '/tmp/samba';
const SAMBA_ENV = Object.entries(
  sambaFiles(SAMBA_DIR, { port: SMB_PORT, encrypt: 'required', user: SMB_USER, shares: {} }).env,
)
  .map(([key, value]) => `${key}=${value}`)
  .join(' ');

/** A real smbd in the guest (users from nss_wrapper), one share requiring encryption; the image's sha256. */
async function startGuestSamba(vm: Vm): Promise<string> {
  const share = `${SAMBA_DIR}/share`;
  const { files } = sambaFiles(SAMBA_DIR, {
    port: SMB_PORT,
    encrypt: 'required',
    user: SMB_USER,
    shares: { images: share },
  });
  await vm.sh(
    `mkdir -p ${[...SAMBA_FOLDERS, 'share/os images'].map((f) => shellQuote(`${SAMBA_DIR}/${f}`)).join(' ')}`,
  );
  for (const [file, text] of Object.entries(files)) await vm.writeFile(file, text);
  // The password reaches smbpasswd on stdin from a file, never on a command line.
  await vm.writeFile(`${SAMBA_DIR}/pw`, `${SMB_PASSWORD}\n${SMB_PASSWORD}\n`, 0o600);
  await vm.sh(
    `${SAMBA_ENV} smbpasswd -c ${SAMBA_DIR}/smb.conf -s -a ${SMB_USER} < ${SAMBA_DIR}/pw && rm ${SAMBA_DIR}/pw`,
  );
  await vm.sh(`${SAMBA_ENV} smbd -D -s ${SAMBA_DIR}/smb.conf`);
  const out = await vm.sh(
    `dd if=/dev/urandom of='${share}/os images/disk.img' bs=1M count=8 status=none && sha256sum '${share}/os images/disk.img'`,
  );
  await waitFor(async () => (await vm.run(`grep -q ':115D ' /proc/net/tcp`)).code === 0, {
    what: 'smbd to listen in the guest',
    timeoutMs: 30_000,
    intervalMs: 200,
  });
  return out.split(' ')[0]!;
}

/** The guest's CIFS mounts of a slot (lines of /proc/mounts whose mount point is `<SlotId>.cifs`). */
async function cifsMounts(vm: Vm, slot: string): Promise<string[]> {
  const mounts = await vm.sh('cat /proc/mounts');
  return mounts.split('\n').filter((line) => line.split(' ')[1]?.endsWith(`/${slot}.cifs`));
}

async function nbdReads(vm: Vm, n: number): Promise<number> {
  return Number((await vm.sh(`cat /sys/block/nbd${n}/stat`)).trim().split(/\s+/)[0]);
}

/** Live (not zombie) nbd-client or nbdkit processes of slot n (their argv names /dev/nbdN or nbdN.sock). */
async function helperPids(vm: Vm, command: 'nbd-client' | 'nbdkit', n: number): Promise<string[]> {
  const out = await vm.sh(`ps -eo pid=,stat=,comm=,args= | awk '$2 !~ /^Z/ && $3 == "${command}"'`);
  const needle = command === 'nbd-client' ? `/dev/nbd${n}` : `nbd${n}.sock`;
  return out
    .split('\n')
    .filter((line) => line.includes(needle))
    .map((line) => line.trim().split(/\s+/)[0]!);
}

/**
 * Everything the mount created is gone, as the guest kernel sees it: the block device, the configfs
 * gadget, the NBD connection (`/sys/block/nbdN/pid`), and the helper processes.
 */
async function assertReleased(
  vm: Vm,
  slot: string,
  n: number,
  disk: string,
  timeoutMs = 20_000,
): Promise<void> {
  const state = async () => {
    const gadget = (await vm.run(`test -e /sys/kernel/config/usb_gadget/mass-storage-${slot}`)).code === 0;
    const device = (await vm.run(`test -e /sys/block/${disk}`)).code === 0;
    const pid = (await vm.run(`cat /sys/block/nbd${n}/pid 2>/dev/null`)).stdout.trim();
    const helpers = [...(await helperPids(vm, 'nbd-client', n)), ...(await helperPids(vm, 'nbdkit', n))];
    return { gadget, device, nbdPid: pid, helpers };
  };
  let last: Awaited<ReturnType<typeof state>> | undefined;
  try {
    await waitFor(
      async () => {
        last = await state();
        return !last.gadget && !last.device && last.nbdPid === '' && last.helpers.length === 0;
      },
      { what: `${slot} to be released in the guest`, timeoutMs, intervalMs: 500 },
    );
  } catch (error) {
    assert.fail(`${(error as Error).message}: ${JSON.stringify(last)}`);
  }
}

interface Mount {
  child: ChildProcess;
  output(): string;
}

/** `vmedia mount <slot> <file>` on this machine against the guest's server, trusting its certificate. */
function startMount(stack: GuestStack, slot: string, file: string, rw: boolean): Mount {
  const args = [path.join(repoRoot, 'bin/vmedia.js'), 'mount', slot, file, '--url', stack.url];
  args.push('--user', 'admin', '--password-file', stack.passwordFile, '--ca', stack.caFile);
  if (rw) args.push('--rw');
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
    output += chunk;
  });
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
    output += chunk;
  });
  return { child, output: () => output };
}

/** Ctrl-C: the CLI ejects the slot and exits 0. */
async function stopMount(mount: Mount): Promise<void> {
  if (mount.child.exitCode !== null) return;
  mount.child.kill('SIGINT');
  const [code] = await once(mount.child, 'exit');
  assert.equal(code, 0, `vmedia mount exited with ${code}:\n${mount.output()}`);
}
