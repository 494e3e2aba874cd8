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
