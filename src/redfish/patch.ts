import { errors } from './errors.ts';
import { type RedfishMessage, redfishMessage } from './messages.ts';

interface PatchSchema {
  properties: Record<string, { readOnly?: boolean; type?: unknown }>;
}

/**
 * The read-only properties a PATCH body schema (schemas/requests/*Patch.json) names: each is declared
 * with `"readOnly": true` and no type, so naming one is PropertyNotWritable rather than PropertyUnknown.
 * Writable properties carry their types; OData annotations are tolerated and anything else refused.
 */
export function readOnlyProperties(schema: PatchSchema): string[] {
  return Object.entries(schema.properties)
    .filter(([, property]) => property.readOnly === true)
    .map(([name]) => name);
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
