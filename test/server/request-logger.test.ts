import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { test } from 'node:test';
import { createLogger, deferredRequestLogger } from '../../src/log.ts';
import { startTestServer } from '../helpers/server.ts';

function capture(): { stream: Writable; lines: () => Record<string, unknown>[] } {
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk, _encoding, done) {
      lines.push(...String(chunk).split('\n').filter(Boolean));
      done();
    },
  });
  return { stream, lines: () => lines.map((line) => JSON.parse(line)) };
}

/**
 * A logger whose child() calls are counted: the deferred logger must make one only when it logs. (Its
 * children inherit the counting child(), so grandchildren are checked on a plain logger below.)
 */
function countingLogger(level: string) {
  const log = capture();
  const parent = createLogger('request-logger', level, log.stream);
  let children = 0;
  const child = parent.child.bind(parent);
  parent.child = ((...args: Parameters<typeof child>) => {
    children++;
    return child(...args);
  }) as typeof parent.child;
  return { parent, log, children: () => children };
}

test('a request logger makes no pino child until it logs at a level that is on, then exactly one', () => {
  const { parent, log, children } = countingLogger('warn');
  const logger = deferredRequestLogger(parent, { reqId: 'req-1' }, {});
  logger.info('not logged');
  logger.debug({ detail: 1 }, 'not logged');
  assert.equal(children(), 0);
  assert.equal(logger.level, 'warn');
  logger.warn({ slot: 'Slot_0' }, 'logged');
  logger.error('logged too');
  assert.equal(children(), 1);
  const lines = log.lines();
  assert.deepEqual(
    lines.map(({ msg, reqId, slot }) => ({ msg, reqId, slot })),
    [
      { msg: 'logged', reqId: 'req-1', slot: 'Slot_0' },
      { msg: 'logged too', reqId: 'req-1', slot: undefined },
    ],
  );
});

test("a request logger's own child carries both bindings", () => {
  const log = capture();
  const logger = deferredRequestLogger(
    createLogger('request-logger', 'warn', log.stream),
    { reqId: 'req-3' },
    {},
  );
  logger.child({ module: 'm' }).warn('from the grandchild');
  assert.deepEqual(
    log.lines().map(({ msg, reqId, module }) => ({ msg, reqId, module })),
    [{ msg: 'from the grandchild', reqId: 'req-3', module: 'm' }],
  );
});

test('a route with its own log level gets a real child at once, at that level', () => {
  const { parent, children } = countingLogger('warn');
  const logger = deferredRequestLogger(parent, { reqId: 'req-2' }, { level: 'debug' });
  assert.equal(children(), 1);
  assert.equal(logger.level, 'debug');
});

test("a request logger's level can be raised on its own, and then reads back as set", () => {
  const { parent, children } = countingLogger('warn');
  const logger = deferredRequestLogger(parent, { reqId: 'req-4' }, {});
  logger.level = 'debug';
  assert.equal(children(), 1);
  assert.equal(logger.level, 'debug');
  assert.equal(parent.level, 'warn');
});

test('the server logs each request with its request id when the level asks for it', async () => {
  const log = capture();
  const server = await startTestServer({ logger: createLogger('request-logger', 'info', log.stream) });
  try {
    assert.equal((await server.request('GET', '/redfish/v1')).status, 200);
  } finally {
    await server.close();
  }
  const completed = log.lines().filter((line) => line.msg === 'request completed');
  assert.equal(completed.length, 1);
  assert.match(String(completed[0]!.reqId), /^req-/);
  const incoming = log.lines().find((line) => line.msg === 'incoming request');
  assert.equal(incoming?.reqId, completed[0]!.reqId);
});
