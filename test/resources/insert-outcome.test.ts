import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Errno } from '../../src/contract/dbus.ts';
import { insertOutcome } from '../../src/resources/virtual-media-insert.ts';

// The table in docs/contract.md §3: a Completion errno → the task monitor's status and message.
const table: Array<[keyof typeof Errno, number, string]> = [
  ['OK', 204, 'Success'],
  ['ECONNREFUSED', 400, 'CouldNotEstablishConnection'],
  ['EHOSTUNREACH', 400, 'CouldNotEstablishConnection'],
  ['ENOENT', 404, 'ResourceNotFound'],
  ['EACCES', 400, 'ResourceAtUriUnauthorized'],
  ['EPERM', 400, 'ResourceAtUriUnauthorized'],
  ['EINVAL', 400, 'ResourceAtUriInUnknownFormat'],
  ['ENOTSUP', 400, 'ResourceAtUriInUnknownFormat'],
  ['EPROTONOSUPPORT', 400, 'CouldNotEstablishConnection'],
  ['EBUSY', 504, 'OperationTimeout'],
  ['ENODEV', 503, 'OperationFailed'],
  ['ECANCELED', 409, 'ResourceInUse'],
  ['EIO', 502, 'CouldNotEstablishConnection'],
];

for (const [name, status, id] of table) {
  test(`Completion(${name}) → ${status} ${id}`, () => {
    const outcome = insertOutcome(Errno[name], 'https://images.example/disk.img');
    assert.equal(outcome.statusCode, status);
    assert.deepEqual(
      outcome.messages.map((message) => message.MessageId.split('.').at(-1)),
      [id],
    );
  });
}

test('no free USB device controller says so, not "a timeout"', () => {
  const [message] = insertOutcome(Errno.ENODEV, 'https://images.example/disk.img').messages;
  assert.match(String(message?.Resolution), /No USB device controller is free/);
  assert.doesNotMatch(JSON.stringify(message), /timeout|timed out/i);
});

test('an SMB server without encryption is named as the reason, with what to change', () => {
  const [message] = insertOutcome(Errno.EPROTONOSUPPORT, 'smb://files.example/images/disk.iso').messages;
  assert.match(String(message?.Resolution), /does not offer SMB3 encryption/);
  assert.match(String(message?.Resolution), /server smb encrypt/);
});
