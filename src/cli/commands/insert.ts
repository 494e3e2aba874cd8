import fs from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { virtualMediaActionUri } from '../../contract/redfish.ts';
import { connectionOptions, connectionUsage, RedfishClient } from '../redfish-client.ts';

/**
 * `vmedia insert <SlotId> <url> [--rw] [--image-user NAME --image-password-file FILE]`: InsertMedia on
 * a Legacy slot, waiting for its task; exits non-zero with the server's Redfish message on failure.
 */
export async function run(argv: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      ...connectionOptions,
      rw: { type: 'boolean', default: false },
      'image-user': { type: 'string' },
      'image-password-file': { type: 'string' },
    },
  });
  const [slotId, url] = positionals;
  if (!slotId || !url || positionals.length > 2) {
    throw new Error(
      `usage: vmedia insert <SlotId> <url> [--rw] [--image-user NAME --image-password-file FILE] [${connectionUsage}]`,
    );
  }
  const body: Record<string, unknown> = { Image: url, WriteProtected: !values.rw };
  if (values['image-user']) body.UserName = values['image-user'];
  if (values['image-password-file']) {
    body.Password = (await fs.readFile(values['image-password-file'], 'utf8')).replace(/\r?\n$/, '');
  }
  const client = await RedfishClient.connect(values);
  try {
    await client.action(virtualMediaActionUri(slotId, 'InsertMedia'), body);
    process.stdout.write(`${slotId}: inserted ${url}\n`);
  } finally {
    await client.close();
  }
}
