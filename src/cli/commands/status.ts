import { parseArgs } from 'node:util';
import { virtualMediaUri } from '../../contract/redfish.ts';
import { connectionOptions, connectionUsage, RedfishClient } from '../redfish-client.ts';

interface SlotRow {
  SlotId: string;
  Mode: string;
  Inserted: boolean;
  ConnectedVia: string;
  WriteProtected: boolean;
  Image: string | null;
  Endpoint: string | null;
}

/** `vmedia status [--json]`: every VirtualMedia slot, as a table or as JSON. */
export async function run(argv: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args: argv,
    options: { ...connectionOptions, json: { type: 'boolean', default: false } },
  });
  if (positionals.length) throw new Error(`usage: vmedia status [--json] [${connectionUsage}]`);
  const client = await RedfishClient.connect(values);
  try {
    const collection = await client.get(virtualMediaUri);
    const members = await Promise.all(
      (collection.Members as Array<{ '@odata.id': string }>).map((m) => client.get(m['@odata.id'])),
    );
    const rows: SlotRow[] = members.map((member) => {
      const endpoint = member.Oem?.OpenBMC?.WebSocketEndpoint ?? null;
      return {
        SlotId: member.Id,
        Mode: endpoint ? 'Proxy' : 'Legacy',
        Inserted: member.Inserted,
        ConnectedVia: member.ConnectedVia,
        WriteProtected: member.WriteProtected,
        Image: member.Image ?? null,
        Endpoint: endpoint,
      };
    });
    process.stdout.write(values.json ? `${JSON.stringify(rows, null, 2)}\n` : table(rows));
  } finally {
    await client.close();
  }
}

function table(rows: SlotRow[]): string {
  const header = ['SLOT', 'MODE', 'INSERTED', 'VIA', 'WP', 'IMAGE / ENDPOINT'];
  const cells = rows.map((r) => [
    r.SlotId,
    r.Mode,
    r.Inserted ? 'yes' : 'no',
    r.ConnectedVia,
    r.WriteProtected ? 'ro' : 'rw',
    r.Image ?? r.Endpoint ?? '',
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i]!.length)));
  const lines = [header, ...cells].map((line) =>
    line
      .map((c, i) => c.padEnd(widths[i]!))
      .join('  ')
      .trimEnd(),
  );
  return `${lines.join('\n')}\n`;
}
