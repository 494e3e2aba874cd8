import { errors } from './errors.ts';
import { type RedfishMessage, redfishMessage } from './messages.ts';

type JsonSchema = Record<string, unknown>;

/**
 * The body schema of a PATCH: the writable properties with their types, the read-only ones by name (so
 * that naming one is PropertyNotWritable rather than PropertyUnknown), OData annotations tolerated, and
 * anything else refused.
 */
export function patchSchema(writable: Record<string, JsonSchema>, readOnly: readonly string[]) {
  return {
    type: 'object',
    properties: {
      ...Object.fromEntries(readOnly.map((name) => [name, { description: 'read-only' }])),
      ...writable,
    },
    patternProperties: { '^@odata\\.': {} },
    additionalProperties: false,
  };
}

/**
 * The changes a validated PATCH body asks for. Refuses read-only properties (400 PropertyNotWritable, all
 * named at once) and a body with nothing to change (400 NoOperation), so a PATCH either applies fully or
 * not at all.
 */
export function patchChanges<T extends object>(body: T, readOnly: readonly string[]): Partial<T> {
  const entries = Object.entries(body).filter(([name]) => !name.startsWith('@odata.'));
  const refused: RedfishMessage[] = entries
    .filter(([name]) => readOnly.includes(name))
    .map(([name]) => redfishMessage('PropertyNotWritable', [name], [`#/${name}`]));
  if (refused.length) throw errors.badRequest(refused);
  if (entries.length === 0) throw errors.noOperation();
  return Object.fromEntries(entries) as Partial<T>;
}
