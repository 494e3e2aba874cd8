import type { FastifyBaseLogger } from 'fastify';
import pino, { type Logger } from 'pino';
import { logLevelFrom } from './config/environment.ts';

/**
 * Paths pino blanks out wherever they appear. Secrets must never reach a log line, whatever the caller
 * passes: request headers, parsed bodies and our own objects alike.
 */
const redactedPaths = [
  'req.headers.authorization',
  'req.headers["x-auth-token"]',
  'req.headers.cookie',
  'req.headers["x-xsrf-token"]',
  // A browser's WebSocket carries its session's XSRF token as the subprotocol.
  'req.headers["sec-websocket-protocol"]',
  'res.headers["set-cookie"]',
  'res.headers["x-auth-token"]',
  'headers.authorization',
  'headers["x-auth-token"]',
  'headers.cookie',
  'headers["sec-websocket-protocol"]',
  'password',
  'Password',
  'token',
  '*.password',
  '*.Password',
  '*.token',
  'body.Password',
  '*.body.Password',
];

export function createLogger(
  name: string,
  level = logLevelFrom(),
  destination?: pino.DestinationStream,
): Logger {
  return pino({ name, level, redact: { paths: redactedPaths, censor: '[redacted]' } }, destination);
}

export type { Logger };

/**
 * A request's logger as fastify asks for one per request (`childLoggerFactory`), made only when the
 * request logs something at a level that is on. pino's `child()` serializes the bindings and sets up the
 * redaction for every request, a measurable part of a GET's cost (`npm run bench`), and most requests
 * never log. A route with its own `logLevel` gets a real child at once: its level differs from ours.
 */
export function deferredRequestLogger(
  parent: FastifyBaseLogger,
  bindings: pino.Bindings,
  options: pino.ChildLoggerOptions,
): FastifyBaseLogger {
  if (options.level !== undefined) return parent.child(bindings, options);
  // The server's logger is always ours, a pino logger (createLogger).
  return new DeferredChild(parent as Logger, bindings, options) as unknown as FastifyBaseLogger;
}

/** One object per request and its methods on the prototype: nothing else is allocated until it logs. */
class DeferredChild {
  private made: Logger | undefined;

  constructor(
    private readonly parent: Logger,
    private readonly bindings: pino.Bindings,
    private readonly options: pino.ChildLoggerOptions,
  ) {}

  private real(): Logger {
    this.made ??= this.parent.child(this.bindings, this.options);
    return this.made;
  }

  get level(): string {
    return (this.made ?? this.parent).level;
  }

  set level(level: string) {
    this.real().level = level;
  }

  isLevelEnabled(level: string): boolean {
    return (this.made ?? this.parent).isLevelEnabled(level);
  }

  fatal(...args: Parameters<pino.LogFn>): void {
    if (this.isLevelEnabled('fatal')) this.real().fatal(...args);
  }
  error(...args: Parameters<pino.LogFn>): void {
    if (this.isLevelEnabled('error')) this.real().error(...args);
  }
  warn(...args: Parameters<pino.LogFn>): void {
    if (this.isLevelEnabled('warn')) this.real().warn(...args);
  }
  info(...args: Parameters<pino.LogFn>): void {
    if (this.isLevelEnabled('info')) this.real().info(...args);
  }
  debug(...args: Parameters<pino.LogFn>): void {
    if (this.isLevelEnabled('debug')) this.real().debug(...args);
  }
  trace(...args: Parameters<pino.LogFn>): void {
    if (this.isLevelEnabled('trace')) this.real().trace(...args);
  }
  silent(): void {}

  child(bindings: pino.Bindings, options?: pino.ChildLoggerOptions): Logger {
    return this.real().child(bindings, options);
  }
}
