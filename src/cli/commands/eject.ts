import { parseArgs } from 'node:util';
import { virtualMediaActionUri } from '../../contract/redfish.ts';
import { connectionOptions, connectionUsage, RedfishClient } from '../redfish-client.ts';

/** `vmedia eject <SlotId>`: EjectMedia (either mode), waiting until the slot is empty. */
export async function run(argv: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: connectionOptions,
  });
  const [slotId] = positionals;
  if (!slotId || positionals.length > 1) throw new Error(`usage: vmedia eject <SlotId> [${connectionUsage}]`);
  const client = await RedfishClient.connect(values);
  try {
    await client.action(virtualMediaActionUri(slotId, 'EjectMedia'), {});
    process.stdout.write(`${slotId}: ejected\n`);
  } finally {
    await client.close();
  }
}
