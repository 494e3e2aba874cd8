import ajvCompiler from '@fastify/ajv-compiler';
import fastJsonStringify from 'fast-json-stringify';
import type { FastifyInstance, FastifyServerOptions } from 'fastify';
import fastifyPlugin from 'fastify-plugin';
import accountService from '../../schemas/AccountService.json' with { type: 'json' };
import actionInfo from '../../schemas/ActionInfo.json' with { type: 'json' };
import certificate from '../../schemas/Certificate.json' with { type: 'json' };
import collection from '../../schemas/Collection.json' with { type: 'json' };
import computerSystem from '../../schemas/ComputerSystem.json' with { type: 'json' };
import common from '../../schemas/common.json' with { type: 'json' };
import manager from '../../schemas/Manager.json' with { type: 'json' };
import managerAccount from '../../schemas/ManagerAccount.json' with { type: 'json' };
import redfishError from '../../schemas/RedfishError.json' with { type: 'json' };
import role from '../../schemas/Role.json' with { type: 'json' };
import accountServicePatchRequest from '../../schemas/requests/AccountServicePatch.json' with {
  type: 'json',
};
import certificateCreateRequest from '../../schemas/requests/CertificateCreate.json' with { type: 'json' };
import computerSystemPatchRequest from '../../schemas/requests/ComputerSystemPatch.json' with {
  type: 'json',
};
import computerSystemResetRequest from '../../schemas/requests/ComputerSystemReset.json' with {
  type: 'json',
};
import ejectMediaRequest from '../../schemas/requests/EjectMedia.json' with { type: 'json' };
import insertMediaRequest from '../../schemas/requests/InsertMedia.json' with { type: 'json' };
import managerAccountCreateRequest from '../../schemas/requests/ManagerAccountCreate.json' with {
  type: 'json',
};
import managerAccountPatchRequest from '../../schemas/requests/ManagerAccountPatch.json' with {
  type: 'json',
};
import sessionCreateRequest from '../../schemas/requests/SessionCreate.json' with { type: 'json' };
import sessionServicePatchRequest from '../../schemas/requests/SessionServicePatch.json' with {
  type: 'json',
};
import virtualMediaPatchRequest from '../../schemas/requests/VirtualMediaPatch.json' with { type: 'json' };
import serviceRoot from '../../schemas/ServiceRoot.json' with { type: 'json' };
import session from '../../schemas/Session.json' with { type: 'json' };
import sessionService from '../../schemas/SessionService.json' with { type: 'json' };
import task from '../../schemas/Task.json' with { type: 'json' };
import taskService from '../../schemas/TaskService.json' with { type: 'json' };
import virtualMedia from '../../schemas/VirtualMedia.json' with { type: 'json' };

/**
 * The project's own JSON Schemas (top-level `schemas/`, one file per resource and request body), imported
 * rather than read from disk so a bundled build carries them. Fastify gets each by its `$id`: routes
 * name them in `schema.body` (request validation) and `schema.response` (serialization by
 * fast-json-stringify, which also drops anything a schema does not declare). Tests validate every body
 * the server sends against the same files.
 */
export const redfishSchemas: readonly { $id: string }[] = [
  common,
  redfishError,
  collection,
  accountService,
  actionInfo,
  certificate,
  computerSystem,
  manager,
  managerAccount,
  role,
  serviceRoot,
  session,
  sessionService,
  task,
  taskService,
  virtualMedia,
  sessionCreateRequest,
  sessionServicePatchRequest,
  accountServicePatchRequest,
  managerAccountCreateRequest,
  managerAccountPatchRequest,
  insertMediaRequest,
  ejectMediaRequest,
  certificateCreateRequest,
  virtualMediaPatchRequest,
  computerSystemPatchRequest,
  computerSystemResetRequest,
];

export type SchemaId = string;

/** `{ $ref: 'VirtualMedia.json#' }`: a schema by its `$id`, for `schema.body` and `schema.response`. */
export function schemaRef(id: SchemaId): { $ref: string } {
  let ref = refs.get(id);
  if (!ref) {
    if (!redfishSchemas.some((schema) => schema.$id === id)) throw new Error(`no schema ${id} in schemas/`);
    ref = { $ref: `${id}#` };
    refs.set(id, ref);
  }
  return ref;
}

// One object per schema: Fastify caches a compiled serializer per schema object.
const refs = new Map<SchemaId, { $ref: string }>();

/** Registers every schema before any route refers to one. */
export const redfishSchemasPlugin = fastifyPlugin(
  async (app: FastifyInstance) => {
    for (const schema of redfishSchemas) app.addSchema(schema);
  },
  { name: 'vmedia-redfish-schemas' },
);

type CompilersFactory = NonNullable<
  NonNullable<FastifyServerOptions['schemaController']>['compilersFactory']
>;
type BuildSerializer = NonNullable<CompilersFactory['buildSerializer']>;
type BuildValidator = NonNullable<CompilersFactory['buildValidator']>;

/**
 * Fastify's serializer builder with one serializer per schema object, not one per route and status, each
 * compiled when it first serializes a body rather than at startup. The default builds (and re-validates
 * every registered schema) for each of ~40 routes at startup, most of which share `Collection.json` or a
 * resource schema by the same `schemaRef` object: that was a third of the server's startup and a share
 * of its idle memory (`npm run bench`). Same fast-json-stringify, same options; the first answer of each
 * resource type pays its compile (a few ms). The tests serialize every resource, so a schema
 * fast-json-stringify refuses still fails them.
 */
export const sharedSerializers: BuildSerializer = (externalSchemas, serializerOptions) => {
  type Schema = Parameters<typeof fastJsonStringify>[0];
  const external = externalSchemas as Record<string, Schema>;
  const compile = (schema: Schema) => {
    // As fastify's own builder does: a route schema with an `$id` of its own is not also external.
    const { $id } = schema as { $id?: string };
    const { [$id ?? '']: _self, ...others } = external;
    return fastJsonStringify(schema, {
      ...serializerOptions,
      schema: $id && external[$id] ? others : external,
    });
  };
  const serializers = new WeakMap<object, (data: unknown) => string>();
  return ({ schema }) => {
    let serialize = serializers.get(schema as object);
    if (!serialize) {
      let compiled: ((data: unknown) => string) | undefined;
      serialize = (data) => {
        compiled ??= compile(schema as Schema);
        return compiled(data);
      };
      serializers.set(schema as object, serialize);
    }
    return serialize;
  };
};

/** Body validation reports every problem and never quietly fixes a request (no coercion, no stripping). */
export const validationOptions = {
  customOptions: { allErrors: true, coerceTypes: false, removeAdditional: false, useDefaults: false },
} as const;

const fastifyValidators = ajvCompiler();

/**
 * Fastify's own validator builder (Ajv, the server's `ajv` options, every registered schema), with each
 * route's validator compiled when it first validates a request rather than at startup: with the Ajv
 * instance itself, that was a tenth of the server's startup (`npm run bench`), for request bodies most
 * routes never receive between two restarts. The first request of each kind pays its compile.
 */
export const lazyValidators: BuildValidator = (externalSchemas, options) => {
  let compiler: ReturnType<BuildValidator> | undefined;
  return (route) => {
    let compiled: ((...args: unknown[]) => unknown) & { errors?: unknown };
    const validate = (...args: unknown[]) => {
      compiler ??= fastifyValidators(externalSchemas, options);
      compiled ??= compiler(route) as typeof compiled;
      const result = compiled(...args);
      // Fastify reads a failed validation's reasons from the function it was given.
      validate.errors = compiled.errors;
      return result;
    };
    validate.errors = undefined as unknown;
    return validate as ReturnType<ReturnType<BuildValidator>>;
  };
};
