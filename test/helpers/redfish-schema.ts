import { Ajv, type ValidateFunction } from 'ajv';
import ajvFormats from 'ajv-formats';
import { redfishSchemas } from '../../src/redfish/schemas.ts';

// ajv-formats is CommonJS: under ESM its function arrives as the `default` of the default export.
const addFormats = (ajvFormats as unknown as { default: (ajv: Ajv) => Ajv }).default;
// Strict: a typo in a schema keyword fails here rather than silently checking nothing.
const ajv = new Ajv({ strict: true, allErrors: true, schemas: [...redfishSchemas] });
addFormats(ajv);

const validators = new Map<string, ValidateFunction>();

/** Which of the project's schemas (schemas/) a body claims: by `@odata.type`, or the error body. */
export function schemaIdFor(body: Record<string, unknown>): string {
  if ('error' in body && !('@odata.type' in body)) return 'RedfishError.json';
  const type = body['@odata.type'];
  if (typeof type !== 'string')
    throw new Error(`body has no @odata.type: ${JSON.stringify(body).slice(0, 200)}`);
  const name = type.replace(/^#/, '').split('.').at(-1) ?? '';
  return name.endsWith('Collection') ? 'Collection.json' : `${name}.json`;
}

/**
 * Validates a Redfish response body against the project's own schema for it (schemas/, the files the
 * server serializes with); throws an Error listing every violation. Conformance with the DMTF schemas
 * themselves is test/conformance's job.
 */
export function assertValidRedfish(body: unknown): void {
  if (typeof body !== 'object' || body === null)
    throw new Error(`not a Redfish body: ${JSON.stringify(body)}`);
  const id = schemaIdFor(body as Record<string, unknown>);
  let validate = validators.get(id);
  if (!validate) {
    validate = ajv.getSchema(id);
    if (!validate) throw new Error(`no schema ${id} in schemas/ for ${JSON.stringify(body).slice(0, 200)}`);
    validators.set(id, validate);
  }
  if (!validate(body)) {
    const problems = (validate.errors ?? []).map(
      (e) => `${e.instancePath || '/'} ${e.message} ${JSON.stringify(e.params)}`,
    );
    throw new Error(
      `body does not match ${id}:\n  ${problems.join('\n  ')}\n${JSON.stringify(body, null, 2)}`,
    );
  }
}
