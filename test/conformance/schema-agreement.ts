import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { redfishSchemas } from '../../src/redfish/schemas.ts';
import { dmtfBundle } from './dmtf-schemas.ts';

/**
 * Checks that the project's own schemas (schemas/) say nothing the DMTF definitions contradict: every
 * property they declare exists in the DMTF definition of the same version, with a type and enum values
 * it allows, and everything DMTF requires is required by ours too. Links are only checked to be links.
 */

// biome-ignore lint/suspicious/noExplicitAny: JSON Schemas are walked generically.
export type Schema = Record<string, any>;

const dmtfBase = 'http://redfish.dmtf.org/schemas/v1/';
const files = new Map<string, Promise<Schema>>();

function dmtfFile(name: string): Promise<Schema> {
  let file = files.get(name);
  if (!file) {
    file = readFile(path.join(dmtfBundle, 'json-schema', name), 'utf8').then((text) =>
      absoluteRefs(JSON.parse(text), name),
    );
    files.set(name, file);
  }
  return file;
}

/** `#/definitions/X` inside a DMTF file, made absolute so a node means the same wherever it is read. */
function absoluteRefs(node: unknown, file: string): Schema {
  if (Array.isArray(node)) return node.map((item) => absoluteRefs(item, file)) as unknown as Schema;
  if (typeof node !== 'object' || node === null) return node as Schema;
  return Object.fromEntries(
    Object.entries(node).map(([key, value]) => [
      key,
      key === '$ref' && typeof value === 'string' && value.startsWith('#')
        ? `${dmtfBase}${file}${value}`
        : absoluteRefs(value, file),
    ]),
  );
}

function pointer(document: Schema, fragment: string): Schema {
  let node = document;
  for (const segment of fragment.replace(/^\/?/, '').split('/').filter(Boolean)) node = node?.[segment];
  if (node === undefined) throw new Error(`no #${fragment}`);
  return node;
}

/** A DMTF `$ref` (absolute URI): the node it names and the file it is in. */
async function dmtfRef(ref: string): Promise<{ node: Schema; file: string }> {
  if (!ref.startsWith(dmtfBase)) throw new Error(`unexpected reference ${ref}`);
  const [file = '', fragment = ''] = ref.slice(dmtfBase.length).split('#');
  return { node: pointer(await dmtfFile(file), fragment), file };
}

const otherResource = /^http:\/\/redfish\.dmtf\.org\/schemas\/v1\/(\w+)\.json#\/definitions\/(\w+)$/;

interface Resolved {
  node: Schema;
  nullable: boolean;
  /** A reference to another resource: in a body it is a link. */
  navigation: boolean;
}

/**
 * Follows `$ref`s and unwraps `anyOf: [X, {type: null}]`, DMTF's way of saying "X or null", and
 * `anyOf: [X.v1_0_0, …, X.v1_2_0]`, its way of naming a type by every version.
 */
async function resolveDmtf(start: Schema): Promise<Resolved> {
  let node = start;
  let nullable = false;
  for (let depth = 0; depth < 20; depth++) {
    if (typeof node.$ref === 'string') {
      const [, file, definition] = node.$ref.match(otherResource) ?? [];
      if (file && file === definition && file !== 'Message') return { node, nullable, navigation: true };
      node = (await dmtfRef(node.$ref)).node;
      continue;
    }
    if (Array.isArray(node.anyOf)) {
      const branches = node.anyOf.filter((branch: Schema) => branch.type !== 'null');
      nullable ||= branches.length < node.anyOf.length;
      if (branches.length === 1) {
        node = branches[0];
        continue;
      }
      // An unversioned definition lists every version of the type: the newest has everything.
      if (branches.every((branch: Schema) => typeof branch.$ref === 'string')) {
        node = branches.at(-1);
        continue;
      }
    }
    return { node, nullable, navigation: false };
  }
  throw new Error('reference chain too long');
}

const ours = new Map(redfishSchemas.map((schema) => [schema.$id, schema as Schema]));

function resolveOurs(node: Schema, base: string): { node: Schema; base: string } {
  while (typeof node.$ref === 'string') {
    const [file, fragment = ''] = node.$ref.split('#');
    const target = file ? file : base;
    const document = ours.get(target);
    if (!document) throw new Error(`no schema ${target}`);
    node = pointer(document, fragment);
    base = target;
  }
  return { node, base };
}

const list = (value: unknown): string[] =>
  value === undefined ? [] : Array.isArray(value) ? value : [value as string];

function typesOf(node: Schema): Set<string> {
  const types = new Set(list(node.type));
  for (const value of [...(node.enum ?? []), ...('const' in node ? [node.const] : [])]) {
    types.add(value === null ? 'null' : Number.isInteger(value) ? 'integer' : typeof value);
  }
  return types;
}

/** Where ours disagrees with DMTF, one line each (`/Status/State: …`). */
export async function disagreements(
  oursNode: Schema,
  oursBase: string,
  dmtfNode: Schema,
  at = '',
): Promise<string[]> {
  const problems: string[] = [];
  const { node: mine, base } = resolveOurs(oursNode, oursBase);
  const theirs = await resolveDmtf(dmtfNode);
  if (mine.readOnly === true && mine.type === undefined) return problems;
  if (theirs.navigation) {
    if (!mine.properties?.['@odata.id']) problems.push(`${at}: DMTF has a link here, ours is not one`);
    return problems;
  }
  const dmtf = theirs.node;

  const allowed = typesOf(dmtf);
  if (theirs.nullable) allowed.add('null');
  if (allowed.size > 0) {
    for (const type of typesOf(mine)) {
      const ok = allowed.has(type) || (type === 'integer' && allowed.has('number'));
      if (!ok) problems.push(`${at}: type ${type} is not one DMTF allows (${[...allowed].join(', ')})`);
    }
  }
  if (Array.isArray(dmtf.enum) && Array.isArray(mine.enum)) {
    for (const value of mine.enum) {
      if (value !== null && !dmtf.enum.includes(value)) problems.push(`${at}: ${value} is not a DMTF value`);
    }
  }
  if (mine.items && dmtf.items)
    problems.push(...(await disagreements(mine.items, base, dmtf.items, `${at}[]`)));

  if (mine.properties) {
    const annotations = Object.keys(dmtf.patternProperties ?? {}).map((pattern) => new RegExp(pattern));
    for (const [name, property] of Object.entries(mine.properties as Record<string, Schema>)) {
      // Oem is free-form in DMTF; the OpenBMC part is checked against the OEM schema on its own.
      if (name === 'Oem') continue;
      const declared = dmtf.properties?.[name];
      if (declared) problems.push(...(await disagreements(property, base, declared, `${at}/${name}`)));
      else if (!annotations.some((pattern) => pattern.test(name)))
        problems.push(`${at}/${name}: not a DMTF property`);
    }
    const required = new Set(list(mine.required));
    for (const name of list(dmtf.required)) {
      if (!required.has(name)) problems.push(`${at}/${name}: DMTF requires it, ours does not`);
    }
  }
  return problems;
}

/** The DMTF file and definition for `#Type.v1_2_3.Type`. */
export function dmtfDefinitionRef(odataType: string, definition?: string): string {
  const parts = odataType.replace(/^#/, '').split('.');
  return `${dmtfBase}${parts.slice(0, -1).join('.')}.json#/definitions/${definition ?? parts.at(-1)}`;
}

/** Compares one of our schemas (by `$id`) with a DMTF definition (by `$ref` URI). */
export async function compareWithDmtf(id: string, ref: string): Promise<string[]> {
  const schema = ours.get(id);
  if (!schema) throw new Error(`no schema ${id}`);
  return disagreements(schema, id, { $ref: ref });
}

/**
 * An action's parameters as an object schema (DMTF declares them as `parameters` with
 * `requiredParameter`), so a request body schema can be compared like a resource.
 */
export async function dmtfActionBody(ref: string): Promise<Schema> {
  const { node } = await dmtfRef(ref);
  const parameters = (node.parameters ?? {}) as Record<string, Schema>;
  return {
    type: 'object',
    properties: parameters,
    required: Object.entries(parameters)
      .filter(([, p]) => p.requiredParameter === true)
      .map(([name]) => name),
  };
}

/** A DMTF resource definition's properties only, for request bodies (which need not carry `Id` & co). */
export async function dmtfProperties(ref: string): Promise<Schema> {
  const { node } = await dmtfRef(ref);
  const { node: definition } = await resolveDmtf(node);
  return {
    type: 'object',
    properties: definition.properties,
    patternProperties: definition.patternProperties,
  };
}

/** The DMTF resource definition's properties marked writable (`readonly: false`). */
export async function dmtfWritable(ref: string): Promise<Set<string>> {
  const { node, file } = await dmtfRef(ref);
  const { node: definition } = await resolveDmtf(node);
  const writable = new Set<string>();
  for (const [name, property] of Object.entries((definition.properties ?? {}) as Record<string, Schema>)) {
    if (property.readonly === false) writable.add(name);
    // A complex property (Boot) has no flag of its own: its members say what is writable, as `Boot/Member`.
    // Only definitions of the same file are followed: a reference to another resource is a link.
    const target =
      typeof property.$ref === 'string' ? property.$ref.replace(/^#/, `${dmtfBase}${file}#`) : '';
    if (property.readonly === undefined && target.startsWith(`${dmtfBase}${file}#/definitions/`)) {
      for (const member of await dmtfWritable(target)) writable.add(`${name}/${member}`);
    }
  }
  return writable;
}

export { ours as ownSchemas };
