import type { IncomingMessage } from 'node:http';
import fastifyWebsocket, { type WebsocketPluginOptions } from '@fastify/websocket';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import fastifyPlugin from 'fastify-plugin';
import { WebSocket } from 'ws';
import { principalOf } from '../auth/plugin.ts';
import { SlotMode } from '../contract/dbus.ts';
import { RETRY_AFTER_SECONDS } from '../contract/redfish.ts';
import type { VirtualMediaClient } from '../dbus/virtual-media-client.ts';
import { errors } from '../redfish/errors.ts';
import { NbdBridge } from './bridge.ts';
import { CloseCode, defaultLimits, type RelayLimits } from './relay.ts';

declare module 'fastify' {
  interface FastifyInstance {
    /** The `/nbd/<n>` sessions: EjectMedia on a Proxy slot ends one with `closeSession`. */
    nbdBridge: NbdBridge;
  }
}

export interface BridgePluginOptions {
  client: VirtualMediaClient;
  limits?: RelayLimits;
}

type WebSocketClass = NonNullable<NonNullable<WebsocketPluginOptions['options']>['WebSocket']>;

/**
 * A peer that closes without a status code (a browser's `ws.close()`, as webui-vue stops a medium) gets
 * 1000 back rather than an empty close frame, which the browser reports as 1005: clients such as
 * webui-vue count only 1000 as a clean end. ws answers such a close frame with `close()` and no code;
 * every close the bridge itself sends names its code.
 */
class NormalClosingWebSocket extends WebSocket {
  override close(code?: number, reason?: string | Buffer): void {
    super.close(code ?? CloseCode.Normal, reason);
  }
}

/**
 * Routes WebSocket upgrades, and only them, to the bridge whatever their path: a slot's EndpointId is
 * any path the slot configuration names, and the service may add slots after the server started.
 */
const upgradeConstraint: Parameters<FastifyInstance['addConstraintStrategy']>[0] = {
  name: 'websocketUpgrade',
  storage() {
    const handlers = new Map<unknown, ReturnType<ReturnType<typeof this.storage>['get']>>();
    return {
      get: (value) => handlers.get(value) ?? null,
      set: (value, handler) => {
        handlers.set(value, handler);
      },
    };
  },
  deriveConstraint: (request) => (request.headers.upgrade?.toLowerCase() === 'websocket' ? true : undefined),
  // Every upgrade request comes here, even to a path with an ordinary route (a Redfish URI): this route
  // closes the connection after refusing, which Node no longer does once anyone handles 'upgrade'.
  mustMatchWhenDerived: true,
};

/**
 * The `/nbd/<n>` WebSocket → Unix-socket bridge (docs/contract.md §4). Everything is checked before the upgrade:
 * the shared authorization hook (credentials, ConfigureManager, and for a cookie session the XSRF token
 * offered as `Sec-WebSocket-Protocol`), then the slot: a Proxy slot by that EndpointId (404), with no
 * session and not mounted (409). The XSRF token is echoed as the chosen subprotocol, as browsers require.
 */
async function bridgePlugin(app: FastifyInstance, options: BridgePluginOptions) {
  const limits = options.limits ?? defaultLimits;
  const bridge = new NbdBridge({
    client: options.client,
    log: app.log.child({ module: 'nbd-bridge' }),
    limits,
  });
  app.decorate('nbdBridge', bridge);
  app.addHook('onClose', () => bridge.closeAll('the server is shutting down'));
  // Authorization is checked at the upgrade; afterwards a logout, a DELETE of the session or a change of
  // its account ends the relay it opened. Idle expiry does not: the stream is the session's use.
  const unsubscribe = app.sessions.onEnded((session) => {
    void bridge.closeSessionsOf(session.id, 'the login session ended');
  });
  app.addHook('onClose', () => unsubscribe());

  /** Raw upgrade requests of cookie sessions → the subprotocol to answer with (their XSRF token). */
  const subprotocols = new WeakMap<IncomingMessage, string>();
  app.addConstraintStrategy(upgradeConstraint);

  await app.register(async (scope) => {
    await scope.register(fastifyWebsocket, {
      options: {
        // ws only constructs it; the type names the module's statics (Server, …), which a subclass lacks.
        WebSocket: NormalClosingWebSocket as unknown as WebSocketClass,
        maxPayload: limits.maxMessage,
        perMessageDeflate: false,
        handleProtocols: (offered, request) => {
          const token = subprotocols.get(request);
          return token !== undefined && offered.has(token) ? token : false;
        },
      },
    });

    scope.route({
      method: 'GET',
      url: '/*',
      constraints: { websocketUpgrade: true },
      config: { privileges: ['ConfigureManager'] },
      schema: { hide: true },
      exposeHeadRoute: false,
      // A refused upgrade leaves a socket Node's HTTP server no longer tracks (the auth hook may refuse
      // before @fastify/websocket's own hooks run): end it once the refusal is sent. An accepted upgrade
      // is hijacked and never gets here.
      onResponse: async (request) => {
        request.raw.socket.destroy();
      },
      preHandler: async (request) => {
        slotFor(request, options.client, bridge);
        const xsrfToken = principalOf(request).session?.xsrfToken;
        if (xsrfToken !== undefined) subprotocols.set(request.raw, xsrfToken);
      },
      // Reached by a request that names `Upgrade: websocket` without asking to upgrade the connection.
      handler: (_request, reply) => reply.code(426).header('Upgrade', 'websocket').send(),
      wsHandler: (socket, request) => {
        const slot = options.client.slotByEndpoint(pathOf(request));
        // Two upgrades for one slot can pass their checks before either session opens: the later loses.
        if (!slot || bridge.has(slot.slotId)) {
          socket.close(CloseCode.PolicyViolation, 'the slot is in use');
          return;
        }
        bridge.open(slot, socket, principalOf(request).session?.id);
      },
    });
  });
}

function pathOf(request: FastifyRequest): string {
  const query = request.url.indexOf('?');
  return query < 0 ? request.url : request.url.slice(0, query);
}

/** The free Proxy slot the request's path names, or the Redfish error that refuses the upgrade. */
function slotFor(request: FastifyRequest, client: VirtualMediaClient, bridge: NbdBridge) {
  if (!client.available) {
    throw errors.serviceTemporarilyUnavailable(RETRY_AFTER_SECONDS);
  }
  const endpoint = pathOf(request);
  const slot = client.slotByEndpoint(endpoint);
  if (!slot || slot.mode !== SlotMode.Proxy) throw errors.resourceNotFound('EndpointId', endpoint);
  if (bridge.has(slot.slotId) || slot.active) throw errors.resourceInUse();
  return slot;
}

export const nbdBridgePlugin = fastifyPlugin(bridgePlugin, { name: 'vmedia-nbd-bridge' });
