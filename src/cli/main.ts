/**
 * `vmedia <command>`: one entry point for the daemons (start, server, service) and the client verbs.
 * Each command lives in its own module and is loaded only when called.
 */
type Command = {
  summary: string;
  /** What follows the command name, shown by `vmedia <command> --help`. */
  synopsis: string;
  load: () => Promise<{ run(argv: string[]): Promise<void> }>;
};

const connection = '[--url URL] [--user NAME] [--password-file FILE] [--ca FILE | --insecure]';
const hostMode = '[--host-mode auto|emulated|usb-gadget]';

const commands: Record<string, Command> = {
  start: {
    summary: 'run the embedded stack: private D-Bus, service and server',
    synopsis: `[--bus private|system] ${hostMode}`,
    load: () => import('./commands/start.ts'),
  },
  server: {
    summary: 'run the HTTPS Redfish server (sessions, accounts, virtual media, web UI)',
    synopsis: '[--bus-address ADDRESS] [--state-dir DIR] [--cert FILE --key FILE]',
    load: () => import('./commands/server.ts'),
  },
  service: {
    summary: 'run the xyz.openbmc_project.VirtualMedia D-Bus service',
    synopsis: `[--bus-address ADDRESS] [--config FILE] [--state-dir DIR] ${hostMode} [--cifs-client auto|kernel|userspace] [--sysfs-root DIR] [--configfs-root DIR] [--nbd-client PATH] [--nbdkit PATH]`,
    load: () => import('./commands/service.ts'),
  },
  machine: {
    summary:
      "run the emulated host: a QEMU PC that boots the slots' media, as OpenBMC's host services on D-Bus",
    synopsis:
      '[--bus-address ADDRESS] [--state-dir DIR] [--qemu PATH] [--memory MiB] [--graceful-timeout SECONDS]',
    load: () => import('./commands/machine.ts'),
  },
  mount: {
    summary: 'serve a local image file into a Proxy slot over WSS (headless Proxy mode)',
    synopsis: `<SlotId> <file> [--rw] ${connection}`,
    load: () => import('./commands/mount.ts'),
  },
  insert: {
    summary: 'insert an HTTPS or SMB image URL into a Legacy slot and wait for the result',
    synopsis: `<SlotId> <https-or-smb-url> [--rw] [--image-user NAME --image-password-file FILE] ${connection}`,
    load: () => import('./commands/insert.ts'),
  },
  eject: {
    summary: 'eject the medium of a slot',
    synopsis: `<SlotId> ${connection}`,
    load: () => import('./commands/eject.ts'),
  },
  status: {
    summary: 'list the virtual media slots and what they hold',
    synopsis: `[--json] ${connection}`,
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
if (argv.includes('--help') || argv.includes('-h')) {
  process.stdout.write(`usage: vmedia ${name} ${command.synopsis}\n\n${command.summary}\n`);
  process.exit(0);
}
try {
  await (await command.load()).run(argv);
} catch (error) {
  process.stderr.write(`vmedia ${name}: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exit(1);
}
