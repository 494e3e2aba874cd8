import { setTimeout as delay } from 'node:timers/promises';
import type { FastifyInstance, FastifyReply } from 'fastify';
import virtualMediaPatch from '../../schemas/requests/VirtualMediaPatch.json' with { type: 'json' };
import { DbusError, Errno, SlotMode } from '../contract/dbus.ts';
import { RETRY_AFTER_SECONDS, virtualMediaMemberUri, virtualMediaUri } from '../contract/redfish.ts';
import {
  type SlotState,
  VirtualMediaCallError,
  type VirtualMediaClient,
  VirtualMediaUnavailable,
} from '../dbus/virtual-media-client.ts';
import { errors, type RedfishError } from '../redfish/errors.ts';
import { assertIfMatch } from '../redfish/etag.ts';
import { redfishMessage } from '../redfish/messages.ts';
import { collection, odataType, oemVirtualMediaType } from '../redfish/odata.ts';
import { patchChanges, readOnlyProperties } from '../redfish/patch.ts';
import { schemaRef } from '../redfish/schemas.ts';
import { sendAccepted, sendOutcome, type TaskOutcome, type TaskStore } from './tasks.ts';
import {
  actionProblems,
  checkInsert,
  displayUrl,
  EJECT_ACTION,
  INSERT_ACTION,
  type InsertParameters,
  insertOutcome,
  propertyProblems,
  protocolOf,
} from './virtual-media-insert.ts';

/** Long enough for an unmount that only stops local processes; anything slower becomes a task. */
const EJECT_SYNC_MS = 5000;
/** On top of the slot's own Timeout: the service ends every mount by then with Completion(EBUSY). */
const COMPLETION_MARGIN_S = 30;

const tags = ['VirtualMedia'];
const login = { privileges: ['Login'] } as const;
const configureManager = { privileges: ['ConfigureManager'] } as const;

export interface VirtualMediaOptions {
  client: VirtualMediaClient;
  tasks: TaskStore;
}

/** `VirtualMedia.v1_6_5` of one slot, mapped per docs/contract.md §3 (not bmcweb's quirks, §6). */
export function memberResource(slot: SlotState) {
  const uri = virtualMediaMemberUri(slot.slotId);
  const proxy = slot.mode === SlotMode.Proxy;
  const image = !proxy && slot.imageUrl ? displayUrl(slot.imageUrl) : null;
  const actions = {
    ...(proxy ? {} : { '#VirtualMedia.InsertMedia': { target: `${uri}/Actions/${INSERT_ACTION}` } }),
    '#VirtualMedia.EjectMedia': { target: `${uri}/Actions/${EJECT_ACTION}` },
  };
  return {
    '@odata.id': uri,
    '@odata.type': odataType('VirtualMedia'),
    Id: slot.slotId,
    Name: 'Virtual Removable Media',
    Description: proxy
      ? 'Proxy mode: a client streams the image over the WebSocket endpoint'
      : 'Legacy mode: the BMC reads the image from an HTTPS or SMB URI',
    MediaTypes: ['CD', 'USBStick'],
    TransferMethod: 'Stream',
    TransferProtocolType: proxy ? 'OEM' : image ? protocolOf(image) : null,
    Inserted: slot.active,
    ConnectedVia: slot.active ? (proxy ? 'Applet' : 'URI') : 'NotConnected',
    Image: image,
    ImageName: image ? imageName(image) : null,
    WriteProtected: slot.writeProtected,
    Password: null,
    Status: { State: !slot.active && slot.imageUrl ? 'Starting' : 'Enabled', Health: 'OK' },
    Actions: actions,
    ...(proxy
      ? { Oem: { OpenBMC: { '@odata.type': oemVirtualMediaType, WebSocketEndpoint: slot.endpointId } } }
      : {}),
  };
}

function imageName(image: string): string | null {
  const segment = new URL(image).pathname.split('/').pop();
  return segment ? decodeURIComponent(segment) : null;
}

function unavailable(): RedfishError {
  return errors.serviceTemporarilyUnavailable(RETRY_AFTER_SECONDS);
}

const inUse = () => errors.resourceInUse();

/** A Mount/Unmount the service refused, as the Redfish error the caller can act on. */
function refused(error: unknown, image?: string): RedfishError {
  if (error instanceof VirtualMediaUnavailable) return unavailable();
  if (error instanceof VirtualMediaCallError) {
    if (error.dbusName === DbusError.Busy || error.dbusName === DbusError.NotAllowed) return inUse();
    if (error.dbusName === DbusError.InvalidArgument && image !== undefined) {
      return errors.badRequest([actionProblems.format('Image', displayUrl(image))]);
    }
  }
  return errors.internalError();
}

/** The task's view of a Completion that never came: the service left, or the bound passed. */
function lostOutcome(error: unknown): TaskOutcome {
  return error instanceof VirtualMediaUnavailable
    ? {
        statusCode: 503,
        messages: [redfishMessage('ServiceTemporarilyUnavailable', [String(RETRY_AFTER_SECONDS)])],
      }
    : { statusCode: 504, messages: [redfishMessage('OperationTimeout', [])] };
}

/** Named in the PATCH body schema without a type: sending one is PropertyNotWritable. */
const memberReadOnly = readOnlyProperties(virtualMediaPatch);

const slotParams = {
  type: 'object',
  properties: { slotId: { type: 'string' } },
  required: ['slotId'],
} as const;
type SlotRoute = { Params: { slotId: string } };

/** The VirtualMedia collection, its members, InsertMedia/EjectMedia and PATCH (Tacklebox's fallback). */
export async function virtualMediaRoutes(app: FastifyInstance, { client, tasks }: VirtualMediaOptions) {
  /** Slots with a Mount/Unmount call on its way: the service's state may not show it yet. */
  const calling = new Set<string>();

  const findSlot = (slotId: string): SlotState => {
    if (!client.available) throw unavailable();
    const slot = client.slot(slotId);
    if (!slot) throw errors.resourceNotFound('VirtualMedia', slotId);
    return slot;
  };

  const insert = async (
    reply: FastifyReply,
    slot: SlotState,
    parameters: InsertParameters,
    problems: typeof actionProblems,
    targetUri: string,
    httpOperation: string,
  ) => {
    const request = checkInsert(parameters, problems);
    if (slot.active || slot.imageUrl || calling.has(slot.slotId)) throw inUse();
    // Listening before the call: a fast failure may signal Completion before Mount's reply is read.
    const controller = new AbortController();
    const bound = AbortSignal.timeout((slot.timeout + COMPLETION_MARGIN_S) * 1000);
    const completion = client.nextCompletion(slot.slotId, AbortSignal.any([controller.signal, bound]));
    completion.catch(() => undefined);
    calling.add(slot.slotId);
    try {
      await client.legacyMount(slot.slotId, request.url, request.readWrite, request.credentials);
    } catch (error) {
      controller.abort();
      throw refused(error, request.url);
    } finally {
      calling.delete(slot.slotId);
    }
    const task = tasks.run({ name: `Insert media into ${slot.slotId}`, targetUri, httpOperation }, () =>
      completion.then((errno) => insertOutcome(errno, request.url), lostOutcome),
    );
    return sendAccepted(reply, task);
  };

  const eject = async (reply: FastifyReply, slot: SlotState, targetUri: string, httpOperation: string) => {
    if (calling.has(slot.slotId)) throw inUse();
    // Nothing inserted and nothing on its way: already the state the client asks for.
    if (!slot.active && !slot.imageUrl) return reply.code(204).send();
    const completion = client.nextCompletion(slot.slotId).then(
      // ECANCELED: the eject interrupted a mount still in progress — the slot is empty all the same.
      (errno): TaskOutcome =>
        errno === Errno.OK || errno === Errno.ECANCELED
          ? { statusCode: 204, messages: [redfishMessage('Success', [])] }
          : { statusCode: 500, messages: [redfishMessage('OperationFailed', [])] },
      lostOutcome,
    );
    calling.add(slot.slotId);
    try {
      if (slot.mode === SlotMode.Legacy) await client.legacyUnmount(slot.slotId);
      // A WebSocket session serving the medium is told why it ends (close 1000), then unmounts itself.
      else if (!(await app.nbdBridge.closeSession(slot.slotId, 'media ejected through Redfish'))) {
        await client.proxyUnmount(slot.slotId);
      }
    } catch (error) {
      throw refused(error);
    } finally {
      calling.delete(slot.slotId);
    }
    const stopWaiting = new AbortController();
    const late = delay(EJECT_SYNC_MS, undefined, { signal: stopWaiting.signal }).catch(() => undefined);
    const outcome = await Promise.race([completion, late]);
    stopWaiting.abort();
    if (outcome) return sendOutcome(reply, outcome);
    const task = tasks.run(
      { name: `Eject media from ${slot.slotId}`, targetUri, httpOperation },
      () => completion,
    );
    return sendAccepted(reply, task);
  };

  app.get(
    virtualMediaUri,
    {
      config: login,
      schema: { tags, summary: 'Virtual media slots', response: { 200: schemaRef('Collection.json') } },
    },
    async () => {
      if (!client.available) throw unavailable();
      const members = client.slots().map((slot) => virtualMediaMemberUri(slot.slotId));
      return collection('VirtualMediaCollection', virtualMediaUri, 'Virtual Media Services', members);
    },
  );

  app.get<SlotRoute>(
    `${virtualMediaUri}/:slotId`,
    {
      config: login,
      schema: {
        tags,
        summary: 'One slot',
        params: slotParams,
        response: { 200: schemaRef('VirtualMedia.json') },
      },
    },
    async (request) => memberResource(findSlot(request.params.slotId)),
  );

  app.post<SlotRoute & { Body: InsertParameters }>(
    `${virtualMediaUri}/:slotId/Actions/${INSERT_ACTION}`,
    {
      config: { ...configureManager, action: INSERT_ACTION },
      schema: {
        tags,
        summary: 'Insert an image from an HTTPS URI (Legacy slots); 202 with a task',
        params: slotParams,
        body: schemaRef('requests/InsertMedia.json'),
        response: { 202: schemaRef('Task.json') },
      },
    },
    async (request, reply) => {
      const slot = findSlot(request.params.slotId);
      if (slot.mode !== SlotMode.Legacy) throw errors.actionNotSupported(INSERT_ACTION);
      return insert(reply, slot, request.body, actionProblems, request.url, 'POST');
    },
  );

  app.post<SlotRoute>(
    `${virtualMediaUri}/:slotId/Actions/${EJECT_ACTION}`,
    {
      config: { ...configureManager, action: EJECT_ACTION },
      // EjectMedia takes no parameters: no body and an empty body mean `{}` (docs/contract.md §3),
      // as clients send all three. Anything else is still checked against the (empty) schema.
      onRequest: (request, _reply, done) => {
        if (request.headers['content-length'] === '0') delete request.headers['content-type'];
        done();
      },
      preValidation: (request, _reply, done) => {
        request.body ??= {};
        done();
      },
      schema: {
        tags,
        summary: 'Eject the medium (both modes); 204, or 202 with a task when it takes longer',
        params: slotParams,
        body: schemaRef('requests/EjectMedia.json'),
        response: { 202: schemaRef('Task.json') },
      },
    },
    async (request, reply) => eject(reply, findSlot(request.params.slotId), request.url, 'POST'),
  );

  app.patch<SlotRoute & { Body: InsertParameters }>(
    `${virtualMediaUri}/:slotId`,
    {
      config: configureManager,
      schema: {
        tags,
        summary: '{"Image": uri} inserts, {"Image": null} or {"Inserted": false} ejects',
        params: slotParams,
        body: schemaRef('requests/VirtualMediaPatch.json'),
        response: { 202: schemaRef('Task.json') },
      },
    },
    async (request, reply) => {
      const slot = findSlot(request.params.slotId);
      assertIfMatch(request, reply, memberResource(slot), 'VirtualMedia.json');
      const changes = patchChanges(request.body, memberReadOnly);
      if (typeof changes.Image === 'string') {
        if (slot.mode !== SlotMode.Legacy) throw errors.propertyNotWritable('Image');
        return insert(reply, slot, changes, propertyProblems, request.url, 'PATCH');
      }
      if (changes.Image === null || changes.Inserted === false) {
        return eject(reply, slot, request.url, 'PATCH');
      }
      throw errors.badRequest([propertyProblems.missing('Image')]);
    },
  );
}
