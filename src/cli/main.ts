/**
 * `vmedia <command>`: one entry point for the daemons (start, server, service) and the client verbs.
 * Each command lives in its own module and is loaded only when called.
 */
type Command = { summary: string; load: () => Promise<{ run(argv: string[]): Promise<void> }> };

const commands: Record<string, Command> = {
  start: {
    summary: 'run the embedded stack: private D-Bus, service and server',
    load: () => import('./commands/start.ts'),
  },
  server: {
    summary: 'run the HTTPS Redfish server (sessions, accounts, virtual media, web UI)',
    load: () => import('./commands/server.ts'),
  },
  service: {
    summary: 'run the xyz.openbmc_project.VirtualMedia D-Bus service',
    load: () => import('./commands/service.ts'),
  },
  mount: {
    summary: 'serve a local image file into a Proxy slot over WSS (headless Proxy mode)',
    load: () => import('./commands/mount.ts'),
  },
  insert: {
    summary: 'insert an HTTPS or SMB image URL into a Legacy slot and wait for the result',
    load: () => import('./commands/insert.ts'),
  },
  eject: {
    summary: 'eject the medium of a slot',
    load: () => import('./commands/eject.ts'),
  },
  status: {
    summary: 'list the virtual media slots and what they hold',
    load: () => import('./commands/status.ts'),
  },
};

function usage(): string {
  const width = Math.max(...Object.keys(commands).map((name) => name.length));
  const lines = Object.entries(commands).map(([name, c]) => `  ${name.padEnd(width)}  ${c.summary}`);
  return `usage: vmedia <command> [options]\n\ncommands:\n${lines.join('\n')}\n`;
}

const [name, ...argv] = process.argv.slice(2);
const command = name ? commands[name] : undefined;
if (!command) {
  process.stderr.write(usage());
  process.exit(name && name !== '--help' ? 2 : 0);
}
try {
  await (await command.load()).run(argv);
} catch (error) {
  process.stderr.write(`vmedia ${name}: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exit(1);
}
