import { createHash } from 'node:crypto';
import type { FastifyRequest } from 'fastify';
import { errors } from './errors.ts';

/**
 * A weak ETag over a resource's JSON representation: any visible change gives a new tag. Responses
 * are serialized with JSON.stringify (no route has a response schema), so this is the tag the
 * protocol plugin put on the GET the client made.
 */
export function etagOf(resource: unknown): string {
  return etagOfJson(JSON.stringify(resource));
}

/** The ETag of a representation already serialized. */
export function etagOfJson(json: string): string {
  return `W/"${createHash('sha256').update(json).digest('base64url').slice(0, 22)}"`;
}

/**
 * Honours `If-Match` on a modifying request: the change goes ahead only if the client saw the current
 * representation (RFC 9110 §13.1.1), else 412 PreconditionFailed.
 */
export function assertIfMatch(request: FastifyRequest, current: unknown) {
  const header = request.headers['if-match'];
  if (header === undefined) return;
  const expected = etagOf(current);
  const strip = (tag: string) => tag.trim().replace(/^W\//, '');
  const matches = header.split(',').some((tag) => tag.trim() === '*' || strip(tag) === strip(expected));
  if (!matches) throw errors.preconditionFailed();
}
