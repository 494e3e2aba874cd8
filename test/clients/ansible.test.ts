import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { adminPassword } from '../helpers/server.ts';
import { startVmStack, type VmStack } from '../helpers/virtual-media-stack.ts';

const run = promisify(execFile);
const sha256 = (data: Uint8Array) => createHash('sha256').update(data).digest('hex');

/**
 * Ansible 7.7 / ansible-core 2.14 (Debian `ansible`), module community.general.redfish_command,
 * unmodified: VirtualMediaInsert and VirtualMediaEject in category Manager, without naming a slot. The
 * module takes the first empty member whose MediaTypes match. The password reaches it in the playbook
 * file (0600, in a temporary folder), never in argv.
 */
describe('Ansible redfish_command VirtualMediaInsert / VirtualMediaEject', () => {
  const image = randomBytes(768 * 1024);
  let stack: VmStack;
  let home: string;
  let imageUrl: string;

  before(async () => {
    stack = await startVmStack({ images: { '/ansible/install.iso': image } });
    imageUrl = `${stack.images.origin}/ansible/install.iso`;
    home = await fs.mkdtemp(path.join(stack.dir, 'ansible-'));
  });

  after(async () => {
    await stack?.stop();
  });

  /** Runs one redfish_command task; answers the module's result as Ansible reports it. */
  async function redfishCommand(command: 'VirtualMediaInsert' | 'VirtualMediaEject') {
    const task = {
      'community.general.redfish_command': {
        category: 'Manager',
        command,
        baseuri: new URL(stack.server.url).host,
        username: 'admin',
        password: adminPassword,
        resource_id: 'bmc',
        virtual_media: {
          image_url: imageUrl,
          media_types: ['CD'],
          inserted: true,
          write_protected: true,
        },
      },
      register: 'result',
    };
    const playbook = [
      {
        hosts: 'localhost',
        gather_facts: false,
        tasks: [task, { 'ansible.builtin.debug': { var: 'result' } }],
      },
    ];
    const file = path.join(home, `${command}.yml`);
    await fs.writeFile(file, JSON.stringify(playbook), { mode: 0o600 });
    // A failed task exits 2: its result is in the JSON report all the same.
    const { stdout } = await run('/usr/bin/ansible-playbook', ['-i', 'localhost,', '-c', 'local', file], {
      env: {
        PATH: '/usr/bin:/bin',
        HOME: home,
        ANSIBLE_HOME: home,
        ANSIBLE_LOCAL_TEMP: path.join(home, 'tmp'),
        ANSIBLE_STDOUT_CALLBACK: 'json',
        ANSIBLE_PYTHON_INTERPRETER: '/usr/bin/python3',
        ANSIBLE_NOCOLOR: '1',
        NO_PROXY: '127.0.0.1',
      },
      timeout: 120_000,
    }).catch((error: { code?: number; stdout?: string }) => {
      if (error.code === 2 && error.stdout) return { stdout: error.stdout };
      throw error;
    });
    const report = JSON.parse(stdout);
    return report.plays[0].tasks[0].hosts.localhost as { changed: boolean; failed?: boolean; msg: string };
  }

  test('VirtualMediaInsert takes the first free CD slot, a Legacy one; the host reads the image', async () => {
    const result = await redfishCommand('VirtualMediaInsert');
    assert.equal(result.failed ?? false, false, result.msg);
    assert.equal(result.changed, true, result.msg);
    const inserted = stack.client.slots().filter((slot) => slot.active);
    assert.deepEqual(
      inserted.map((slot) => slot.slotId),
      ['Slot_2'],
    );
    const copy = path.join(stack.dir, 'ansible-copy.img');
    await run('nbdcopy', [`nbd+unix:///?socket=${path.join(stack.harness.hostDir, 'Slot_2.sock')}`, copy]);
    assert.equal(sha256(await fs.readFile(copy)), sha256(image));
  });

  test('a second VirtualMediaInsert of the same image changes nothing', async () => {
    const result = await redfishCommand('VirtualMediaInsert');
    assert.equal(result.changed, false, result.msg);
  });

  test('VirtualMediaEject finds the slot by its image and empties it', async () => {
    const result = await redfishCommand('VirtualMediaEject');
    assert.equal(result.failed ?? false, false, result.msg);
    assert.equal(result.changed, true, result.msg);
    assert.equal(stack.client.slot('Slot_2')?.active, false);
    await assert.rejects(fs.access(path.join(stack.harness.hostDir, 'Slot_2.sock')));
  });
});
