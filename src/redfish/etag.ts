import { hash } from 'node:crypto';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { errors } from './errors.ts';
import { type SchemaId, schemaRef } from './schemas.ts';

/** A weak ETag over a representation as serialized: any visible change gives a new tag. */
export function etagOfJson(json: string): string {
  // The one-shot hash: no Hash object per response (half the cost of createHash on a member's body).
  return `W/"${hash('sha256', json, 'base64url').slice(0, 22)}"`;
}

/**
 * Honours `If-Match` on a modifying request: the change goes ahead only if the client saw the current
 * representation (RFC 9110 §13.1.1), else 412 PreconditionFailed. The current resource is serialized
 * with its schema, as its GET is, so the tag compared is the one the protocol plugin sent.
 */
export function assertIfMatch(
  request: FastifyRequest,
  reply: FastifyReply,
  current: Record<string, unknown>,
  schema: SchemaId,
) {
  const header = request.headers['if-match'];
  if (header === undefined) return;
  const expected = etagOfJson(reply.serializeInput(current, schemaRef(schema)));
  const strip = (tag: string) => tag.trim().replace(/^W\//, '');
  const matches = header.split(',').some((tag) => tag.trim() === '*' || strip(tag) === strip(expected));
  if (!matches) throw errors.preconditionFailed();
}
