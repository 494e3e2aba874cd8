import { setTimeout as delay } from 'node:timers/promises';
import type { FastifyInstance, FastifyReply } from 'fastify';
import virtualMediaPatch from '../../schemas/requests/VirtualMediaPatch.json' with { type: 'json' };
import { DbusError, Errno, SlotMode } from '../contract/dbus.ts';
import type { ImageUrlPolicy } from '../contract/image-url.ts';
import {
  RETRY_AFTER_SECONDS,
  type VirtualMediaCollectionUri,
  virtualMediaCollectionUris,
  virtualMediaMemberUri,
} from '../contract/redfish.ts';
import {
  type SlotState,
  VirtualMediaCallError,
  type VirtualMediaClient,
  VirtualMediaUnavailable,
} from '../dbus/virtual-media-client.ts';
import { errors, type RedfishError } from '../redfish/errors.ts';
import { assertIfMatch } from '../redfish/etag.ts';
import { type RedfishMessage, redfishMessage } from '../redfish/messages.ts';
import { collection, odataType, oemVirtualMediaType } from '../redfish/odata.ts';
import { patchChanges, readOnlyProperties } from '../redfish/patch.ts';
import { schemaRef } from '../redfish/schemas.ts';
import { sendAccepted, sendOutcome, type TaskOutcome, type TaskStore } from './tasks.ts';
import { virtualMediaCertificateRoutes } from './virtual-media-certificates.ts';
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
  transferProtocolTypes,
} from './virtual-media-insert.ts';

/**
 * How long InsertMedia and EjectMedia wait for the service's Completion before answering with a task.
 * Most clients (Ironic, Ansible, Tacklebox, webui-vue) never poll a task: a mount or unmount that ends
 * within this bound answers with its outcome directly (204, or the error), and only slower ones get 202.
 */
const SYNC_ANSWER_MS = 5000;
/** On top of the slot's own Timeout: the service ends every mount by then with Completion(EBUSY). */
const COMPLETION_MARGIN_S = 30;

const tags = ['VirtualMedia'];
const login = { privileges: ['Login'] } as const;
const configureManager = { privileges: ['ConfigureManager'] } as const;

export interface VirtualMediaOptions {
  client: VirtualMediaClient;
  tasks: TaskStore;
  /** Which image URLs are allowed (VMEDIA_ALLOW_HTTP); the service must be told the same. */
  policy: ImageUrlPolicy;
}

/** The parameters InsertMedia takes and the values it allows, as its ActionInfo and annotations say. */
function insertMediaParameters(policy: ImageUrlPolicy) {
  return [
    { Name: 'Image', Required: true, DataType: 'String' },
    // No AllowableValues on booleans: they are strings, and clients (Ansible) compare them with true.
    { Name: 'Inserted', Required: false, DataType: 'Boolean' },
    { Name: 'WriteProtected', Required: false, DataType: 'Boolean' },
    { Name: 'UserName', Required: false, DataType: 'String' },
    { Name: 'Password', Required: false, DataType: 'String' },
    { Name: 'TransferMethod', Required: false, DataType: 'String', AllowableValues: ['Stream'] },
    {
      Name: 'TransferProtocolType',
      Required: false,
      DataType: 'String',
      AllowableValues: [...transferProtocolTypes(policy)],
    },
  ];
}

const INSERT_ACTION_INFO = 'InsertMediaActionInfo';

/** How a member is shown besides its slot's D-Bus state. */
export interface MemberView {
  /** The collection it is read from: its URIs stay under it. */
  collectionUri: VirtualMediaCollectionUri;
  /** The UserName the medium was inserted with, when the server knows it. */
  userName: string | null;
  policy: ImageUrlPolicy;
}

/** `VirtualMedia.v1_6_5` of one slot, mapped per docs/contract.md §3 (not bmcweb's quirks, §6). */
export function memberResource(slot: SlotState, { collectionUri, userName, policy }: MemberView) {
  const uri = virtualMediaMemberUri(slot.slotId, collectionUri);
  const protocols = transferProtocolTypes(policy);
  const proxy = slot.mode === SlotMode.Proxy;
  const image = !proxy && slot.imageUrl ? displayUrl(slot.imageUrl) : null;
  const actions = {
    ...(proxy
      ? {}
      : {
          '#VirtualMedia.InsertMedia': {
            target: `${uri}/Actions/${INSERT_ACTION}`,
            '@Redfish.ActionInfo': `${uri}/${INSERT_ACTION_INFO}`,
            'TransferMethod@Redfish.AllowableValues': ['Stream'],
            'TransferProtocolType@Redfish.AllowableValues': [...protocols],
          },
        }),
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
    // An empty Legacy slot shows the protocol an image is fetched with by default, not null: clients
    // (Ironic) read null as "takes no URL". The action's AllowableValues list every protocol it takes.
    TransferProtocolType: proxy ? 'OEM' : image ? protocolOf(image) : protocols[0],
    Inserted: slot.active,
    ConnectedVia: slot.active ? (proxy ? 'Applet' : 'URI') : 'NotConnected',
    Image: image,
    ImageName: image ? imageName(image) : null,
    WriteProtected: slot.writeProtected,
    UserName: image ? userName : null,
    Password: null,
    ...(proxy
      ? {}
      : { VerifyCertificate: slot.verifyCertificate, Certificates: { '@odata.id': `${uri}/Certificates` } }),
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

/** Why a Proxy slot takes no URL, for the clients that try (a PATCH of Image, an InsertMedia). */
const PROXY_SLOT_RESOLUTION =
  'This slot is a Proxy slot: its medium is streamed by a browser or the vmedia CLI over the WebSocket endpoint in Oem.OpenBMC.WebSocketEndpoint. Insert an image URI into a Legacy slot instead (one whose InsertMedia action lists HTTPS or CIFS).';

function proxySlotRefusal(message: RedfishMessage): RedfishError {
  return errors.badRequest([{ ...message, Resolution: PROXY_SLOT_RESOLUTION }]);
}

/** Members in the order clients should find them: Legacy slots first, as clients take the first match. */
function membersInOrder(slots: readonly SlotState[]): SlotState[] {
  const legacy = slots.filter((slot) => slot.mode === SlotMode.Legacy);
  return [...legacy, ...slots.filter((slot) => slot.mode !== SlotMode.Legacy)];
}

/** The outcome if `outcome` settles within SYNC_ANSWER_MS; undefined if it is still pending then. */
async function withinSyncBound(outcome: Promise<TaskOutcome>): Promise<TaskOutcome | undefined> {
  const stopWaiting = new AbortController();
  const late = delay(SYNC_ANSWER_MS, undefined, { signal: stopWaiting.signal }).catch(() => undefined);
  try {
    return await Promise.race([outcome, late]);
  } finally {
    stopWaiting.abort();
  }
}

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

/**
 * The VirtualMedia collections (under the ComputerSystem and under the Manager), their members, the
 * InsertMedia ActionInfo, InsertMedia/EjectMedia and PATCH (Tacklebox's and sushy's fallback).
 */
export async function virtualMediaRoutes(
  app: FastifyInstance,
  { client, tasks, policy }: VirtualMediaOptions,
) {
  /** Slots with a Mount/Unmount call on its way: the service's state may not show it yet. */
  const calling = new Set<string>();
  /** The UserName each inserted medium came with: not a D-Bus property, so only the server knows it. */
  const userNames = new Map<string, string>();
  const stopWatching = client.onChange((slot) => {
    if (!slot.active && !slot.imageUrl) userNames.delete(slot.slotId);
  });
  app.addHook('onClose', async () => stopWatching());

  const findSlot = (slotId: string): SlotState => {
    if (!client.available) throw unavailable();
    const slot = client.slot(slotId);
    if (!slot) throw errors.resourceNotFound('VirtualMedia', slotId);
    return slot;
  };

  const member = (slot: SlotState, collectionUri: VirtualMediaCollectionUri) =>
    memberResource(slot, { collectionUri, userName: userNames.get(slot.slotId) ?? null, policy });

  const insert = async (
    reply: FastifyReply,
    slot: SlotState,
    parameters: InsertParameters,
    problems: typeof actionProblems,
    targetUri: string,
    httpOperation: string,
  ) => {
    const request = checkInsert(parameters, problems, policy);
    if (slot.active || slot.imageUrl || calling.has(slot.slotId)) throw inUse();
    // Listening before the call: a fast failure may signal Completion before Mount's reply is read.
    const controller = new AbortController();
    const bound = AbortSignal.timeout((slot.timeout + COMPLETION_MARGIN_S) * 1000);
    const completion = client
      .nextCompletion(slot.slotId, AbortSignal.any([controller.signal, bound]))
      .then((errno) => insertOutcome(errno, request.url), lostOutcome);
    calling.add(slot.slotId);
    try {
      await client.legacyMount(slot.slotId, request.url, request.readWrite, request.credentials);
    } catch (error) {
      controller.abort();
      throw refused(error, request.url);
    } finally {
      calling.delete(slot.slotId);
    }
    if (request.credentials?.user) userNames.set(slot.slotId, request.credentials.user);
    const outcome = await withinSyncBound(completion);
    if (outcome) return sendOutcome(reply, outcome);
    const task = tasks.run(
      { name: `Insert media into ${slot.slotId}`, targetUri, httpOperation },
      () => completion,
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
    const outcome = await withinSyncBound(completion);
    if (outcome) return sendOutcome(reply, outcome);
    const task = tasks.run(
      { name: `Eject media from ${slot.slotId}`, targetUri, httpOperation },
      () => completion,
    );
    return sendAccepted(reply, task);
  };

  for (const collectionUri of virtualMediaCollectionUris) {
    const memberUri = `${collectionUri}/:slotId`;
    await virtualMediaCertificateRoutes(app, {
      client,
      memberRoute: memberUri,
      memberUri: (slotId) => virtualMediaMemberUri(slotId, collectionUri),
      findSlot,
    });

    app.get(
      collectionUri,
      {
        config: login,
        schema: { tags, summary: 'Virtual media slots', response: { 200: schemaRef('Collection.json') } },
      },
      async () => {
        if (!client.available) throw unavailable();
        const members = membersInOrder(client.slots()).map((slot) =>
          virtualMediaMemberUri(slot.slotId, collectionUri),
        );
        return collection('VirtualMediaCollection', collectionUri, 'Virtual Media Services', members);
      },
    );

    app.get<SlotRoute>(
      memberUri,
      {
        config: login,
        schema: {
          tags,
          summary: 'One slot',
          params: slotParams,
          response: { 200: schemaRef('VirtualMedia.json') },
        },
      },
      async (request) => member(findSlot(request.params.slotId), collectionUri),
    );

    app.get<SlotRoute>(
      `${memberUri}/${INSERT_ACTION_INFO}`,
      {
        config: login,
        schema: {
          tags,
          summary: 'The parameters InsertMedia takes (Legacy slots)',
          params: slotParams,
          response: { 200: schemaRef('ActionInfo.json') },
        },
      },
      async (request) => {
        const slot = findSlot(request.params.slotId);
        if (slot.mode !== SlotMode.Legacy) throw errors.resourceNotFound('ActionInfo', INSERT_ACTION_INFO);
        const uri = `${virtualMediaMemberUri(slot.slotId, collectionUri)}/${INSERT_ACTION_INFO}`;
        return {
          '@odata.id': uri,
          '@odata.type': odataType('ActionInfo'),
          Id: INSERT_ACTION_INFO,
          Name: 'InsertMedia Action Info',
          Parameters: insertMediaParameters(policy),
        };
      },
    );

    app.post<SlotRoute & { Body: InsertParameters }>(
      `${memberUri}/Actions/${INSERT_ACTION}`,
      {
        config: { ...configureManager, action: INSERT_ACTION },
        schema: {
          tags,
          summary:
            'Insert an image from an HTTPS or SMB URI (Legacy slots): 204 once mounted, or 202 with a task when it takes longer',
          params: slotParams,
          body: schemaRef('requests/InsertMedia.json'),
          response: { 202: schemaRef('Task.json') },
        },
      },
      async (request, reply) => {
        const slot = findSlot(request.params.slotId);
        if (slot.mode !== SlotMode.Legacy) {
          throw proxySlotRefusal(redfishMessage('ActionNotSupported', [INSERT_ACTION]));
        }
        return insert(reply, slot, request.body, actionProblems, request.url, 'POST');
      },
    );

    app.post<SlotRoute>(
      `${memberUri}/Actions/${EJECT_ACTION}`,
      {
        config: { ...configureManager, action: EJECT_ACTION },
        // EjectMedia takes no parameters: no body (with or without a Content-Type) and an empty body mean
        // `{}` (docs/contract.md §3), as clients send all of these. A body is still checked against the
        // (empty) schema.
        onRequest: (request, _reply, done) => {
          if (!hasBody(request.headers)) delete request.headers['content-type'];
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
      memberUri,
      {
        config: configureManager,
        schema: {
          tags,
          summary:
            '{"Image": uri} inserts, {"Image": null} or {"Inserted": false} ejects; VerifyCertificate (Legacy slots)',
          params: slotParams,
          body: schemaRef('requests/VirtualMediaPatch.json'),
          response: { 200: schemaRef('VirtualMedia.json'), 202: schemaRef('Task.json') },
        },
      },
      async (request, reply) => {
        let slot = findSlot(request.params.slotId);
        assertIfMatch(request, reply, member(slot, collectionUri), 'VirtualMedia.json');
        const { VerifyCertificate: verify, ...changes } = patchChanges(request.body, memberReadOnly);
        if (verify !== undefined) {
          // Applies from the next insert on, so it goes first when a PATCH also inserts.
          if (slot.mode !== SlotMode.Legacy)
            throw errors.badRequest([
              redfishMessage('PropertyUnknown', ['VerifyCertificate'], ['#/VerifyCertificate']),
            ]);
          await client.setVerifyCertificate(slot.slotId, verify).catch((error) => {
            throw refused(error);
          });
          slot = findSlot(slot.slotId);
          if (Object.keys(changes).length === 0) return member(slot, collectionUri);
        }
        if (typeof changes.Image === 'string') {
          if (slot.mode !== SlotMode.Legacy) {
            throw proxySlotRefusal(
              redfishMessage('PropertyValueConflict', ['Image', 'TransferProtocolType'], ['#/Image']),
            );
          }
          return insert(reply, slot, changes, propertyProblems, request.url, 'PATCH');
        }
        if (changes.Image === null || changes.Inserted === false) {
          return eject(reply, slot, request.url, 'PATCH');
        }
        throw errors.badRequest([propertyProblems.missing('Image')]);
      },
    );
  }
}

/** Whether a request carries a body (RFC 9112 §6.3): a non-zero Content-Length or a Transfer-Encoding. */
function hasBody(headers: Record<string, string | string[] | undefined>): boolean {
  const length = headers['content-length'];
  return headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0');
}
