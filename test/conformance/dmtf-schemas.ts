import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Ajv, type ValidateFunction } from 'ajv';
import ajvFormats from 'ajv-formats';

/**
 * The official DMTF bundle (JSON schemas, CSDL, registries, the OpenBMC OEM schema) is never part of the
 * repository: conformance tests read it from `VMEDIA_DMTF_SCHEMAS`, by default `../shared/redfish` beside
 * the checkout, and are skipped when it is not there.
 */
export const dmtfBundle = path.resolve(
  process.env.VMEDIA_DMTF_SCHEMAS ?? fileURLToPath(new URL('../../../shared/redfish', import.meta.url)),
);

/** Why the conformance group cannot run here, or undefined when the bundle is present. */
export const dmtfMissing = existsSync(path.join(dmtfBundle, 'json-schema'))
  ? undefined
  : `the DMTF schema bundle is not at ${dmtfBundle} (set VMEDIA_DMTF_SCHEMAS to run the conformance tests)`;

const dmtfBase = 'http://redfish.dmtf.org/schemas/v1/';

/** Where a schema `$id`/`$ref` URI is on disk: DMTF schemas, else the OpenBMC OEM ones. */
async function loadSchema(uri: string): Promise<object> {
  if (!uri.startsWith(dmtfBase)) throw new Error(`no local copy of ${uri}`);
  const name = uri.slice(dmtfBase.length).split('#', 1)[0] ?? '';
  for (const dir of ['json-schema', 'oem-openbmc']) {
    try {
      return linksAsReferences(
        JSON.parse(await readFile(path.join(dmtfBundle, dir, name), 'utf8')),
      ) as object;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
    }
  }
  throw new Error(`schema ${name} is in neither json-schema nor oem-openbmc`);
}

// `Other.json#/definitions/Other`: a resource or collection defined in another file. In a body such a
// property is always a navigation link, i.e. a reference object; `Message` is the one embedded type so named.
const otherResource =
  /^http:\/\/redfish\.dmtf\.org\/schemas\/(?:swordfish\/)?v1\/(\w+)\.json#\/definitions\/(\w+)$/;
const idRef = `${dmtfBase}odata-v4.json#/definitions/idRef`;

/**
 * Replaces references to other resources by the reference-object schema they stand for in a body.
 * Checking a link against the full target schema adds nothing, and would make ajv compile the whole
 * Redfish model (~1300 files, tens of seconds) to check one collection.
 */
function linksAsReferences(schema: unknown): unknown {
  if (Array.isArray(schema)) return schema.map(linksAsReferences);
  if (typeof schema !== 'object' || schema === null) return schema;
  return Object.fromEntries(
    Object.entries(schema).map(([key, value]) => {
      if (key !== '$ref' || typeof value !== 'string') return [key, linksAsReferences(value)];
      const [, file, definition] = value.match(otherResource) ?? [];
      return [key, file && file === definition && file !== 'Message' ? idRef : value];
    }),
  );
}

// ajv-formats is CommonJS: under ESM its function arrives as the `default` of the default export.
const addFormats = (ajvFormats as unknown as { default: (ajv: Ajv) => Ajv }).default;
// The DMTF schemas declare their own meta-schema and annotation keywords (readonly, longDescription, …).
const ajv = new Ajv({ strict: false, allErrors: true, validateSchema: false, loadSchema });
addFormats(ajv);

const validators = new Map<string, Promise<ValidateFunction>>();

/** The schema a body claims: `#NS.v1_2_3.Type`, `#NSCollection.NSCollection`, or a Redfish error. */
export function schemaRefFor(body: Record<string, unknown>): string {
  if ('error' in body && !('@odata.type' in body))
    return `${dmtfBase}redfish-error.v1_0_2.json#/definitions/RedfishError`;
  const type = body['@odata.type'];
  if (typeof type !== 'string')
    throw new Error(`body has no @odata.type: ${JSON.stringify(body).slice(0, 200)}`);
  const parts = type.replace(/^#/, '').split('.');
  const typeName = parts.at(-1);
  const file = parts.slice(0, -1).join('.');
  return `${dmtfBase}${file}.json#/definitions/${typeName}`;
}

/**
 * Validates a Redfish response body against the DMTF JSON schema of its `@odata.type` (or the
 * redfish-error schema) from the bundle; throws an Error listing every violation.
 */
export async function assertDmtfValid(body: unknown): Promise<void> {
  if (typeof body !== 'object' || body === null)
    throw new Error(`not a Redfish body: ${JSON.stringify(body)}`);
  const ref = schemaRefFor(body as Record<string, unknown>);
  let validator = validators.get(ref);
  if (!validator) {
    validator = ajv.compileAsync({ $ref: ref });
    validators.set(ref, validator);
  }
  const validate = await validator;
  if (!validate(body)) {
    const problems = (validate.errors ?? []).map(
      (e) => `${e.instancePath || '/'} ${e.message} ${JSON.stringify(e.params)}`,
    );
    throw new Error(
      `body does not match ${ref}:\n  ${problems.join('\n  ')}\n${JSON.stringify(body, null, 2)}`,
    );
  }
}
