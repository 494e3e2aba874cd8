// The guest agent of the vmedia test VM (scripts/vm/build.sh starts it; test/helpers/vm.ts drives it).
// Plain JavaScript, no dependencies, so it starts fast in the guest's shared root.
//
// Protocol: one JSON object per line each way over the virtio serial port given as argv[2].
//   host → guest  {id, op: 'run', cmd, timeoutMs?}      → {id, code, signal, stdout, stderr} (base64)
//                 {id, op: 'write', path, data, mode?}  → {id, code: 0} or {id, code: 1, error}
//                 {id, op: 'ping'}                      → {id, code: 0}
//   guest → host  {event: 'ready', uptime}              once at start, and as the answer to every ping
// When the host end closes after it has sent something, the agent powers the VM off.
// Commands run concurrently with `bash -c`; one that leaves a background process holding its output
// open is answered shortly after the shell exits, with the output so far.
import { spawn } from 'node:child_process';
import fs from 'node:fs';

const port = process.argv[2];
if (!port) {
  console.error('vm-agent: no serial port (is virtio_console loaded?)');
  process.exit(2);
}
// A virtio console port can be open only once: one fd for both directions.
const fd = fs.openSync(port, 'r+');
const out = fs.createWriteStream(null, { fd, autoClose: false });
const send = (message) => out.write(`${JSON.stringify(message)}\n`);
const uptime = () => Number(fs.readFileSync('/proc/uptime', 'utf8').split(' ')[0]);

function run({ id, cmd, timeoutMs }) {
  const child = spawn('/bin/bash', ['-c', cmd], { stdio: ['ignore', 'pipe', 'pipe'], cwd: '/' });
  const stdout = [];
  const stderr = [];
  child.stdout.on('data', (chunk) => stdout.push(chunk));
  child.stderr.on('data', (chunk) => stderr.push(chunk));
  let answered = false;
  const answer = (code, signal, error) => {
    if (answered) return;
    answered = true;
    clearTimeout(timer);
    send({
      id,
      code,
      signal,
      ...(error ? { error } : {}),
      stdout: Buffer.concat(stdout).toString('base64'),
      stderr: Buffer.concat(stderr).toString('base64'),
    });
  };
  const timer = timeoutMs
    ? setTimeout(() => {
        child.kill('SIGKILL');
        answer(null, 'SIGKILL', `timed out after ${timeoutMs} ms`);
      }, timeoutMs)
    : undefined;
  child.on('error', (error) => answer(127, null, error.message));
  child.on('close', (code, signal) => answer(code, signal));
  child.on('exit', (code, signal) => setTimeout(() => answer(code, signal), 500));
}

function write({ id, path, data, mode }) {
  try {
    fs.writeFileSync(path, Buffer.from(data, 'base64'), { mode: mode ?? 0o644 });
    send({ id, code: 0 });
  } catch (error) {
    send({ id, code: 1, error: error.message });
  }
}

// Once the host has spoken, its going away (the test runner died) powers the VM off.
let hostSeen = false;

function handle(line) {
  hostSeen = true;
  let message;
  try {
    message = JSON.parse(line);
  } catch {
    return;
  }
  if (message.op === 'run') run(message);
  else if (message.op === 'write') write(message);
  else if (message.op === 'ping') send({ id: message.id, code: 0, event: 'ready', uptime: uptime() });
}

// Reads return EOF while the host end is not connected: read again a little later.
function listen() {
  let buffered = '';
  const input = fs.createReadStream(null, { fd, autoClose: false, encoding: 'utf8', highWaterMark: 1 << 16 });
  input.on('data', (chunk) => {
    buffered += chunk;
    for (let nl = buffered.indexOf('\n'); nl >= 0; nl = buffered.indexOf('\n')) {
      handle(buffered.slice(0, nl));
      buffered = buffered.slice(nl + 1);
    }
  });
  input.on('error', (error) => console.error(`vm-agent: ${error.message}`));
  input.on('end', () => {
    if (hostSeen) {
      console.error('vm-agent: the host closed the control port; powering off');
      fs.writeFileSync('/proc/sysrq-trigger', 'o');
    }
    setTimeout(listen, 200);
  });
}

listen();
send({ event: 'ready', uptime: uptime() });
console.log(`vm-agent: ready after ${uptime()} s on ${port}`);
