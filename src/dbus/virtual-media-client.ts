import type { SlotMode } from '../contract/dbus.ts';

/**
 * What the server knows of one slot: the service's D-Bus properties, cached and kept current from
 * signals (docs/contract.md §2). Reading it costs no D-Bus round trip.
 */
export interface SlotState {
  readonly slotId: string;
  readonly objectPath: string;
  readonly mode: SlotMode;
  readonly endpointId: string;
  readonly device: string;
  readonly socket: string;
  readonly timeout: number;
  readonly blockSize: number;
  readonly remainingInactivityTimeout: number;
  readonly imageUrl: string;
  readonly writeProtected: boolean;
  readonly active: boolean;
  readonly exitCode: number;
  readonly readIO: bigint;
  readonly writeIO: bigint;
  /** Legacy slots: whether an https:// image server's certificate is verified (Trust interface). */
  readonly verifyCertificate: boolean;
  /** Legacy slots: the CA certificates (PEM) added for this slot's https:// images. */
  readonly certificates: readonly string[];
}

export interface LegacyCredentials {
  user: string;
  password: string;
}

/**
 * The server's view of the VirtualMedia service. Methods reject with a `VirtualMediaUnavailable` when
 * the service is not on the bus, and with the D-Bus error when a precheck fails; success means the
 * asynchronous work started — its result arrives as a `completion` event.
 */
export interface VirtualMediaClient {
  readonly available: boolean;
  /** Shared and frozen: the same objects until the service's state changes. */
  slots(): readonly SlotState[];
  slot(slotId: string): SlotState | undefined;
  slotByEndpoint(endpointId: string): SlotState | undefined;
  proxyMount(slotId: string): Promise<void>;
  proxyUnmount(slotId: string): Promise<void>;
  legacyMount(
    slotId: string,
    url: string,
    readWrite: boolean,
    credentials?: LegacyCredentials,
  ): Promise<void>;
  legacyUnmount(slotId: string): Promise<void>;
  /** A Legacy slot's trust for https:// images; refusals arrive as VirtualMediaCallError. */
  setVerifyCertificate(slotId: string, verify: boolean): Promise<void>;
  addCertificate(slotId: string, pem: string): Promise<void>;
  removeCertificate(slotId: string, pem: string): Promise<void>;
  /** Resolves with the errno of the slot's next Completion signal. */
  nextCompletion(slotId: string, signal?: AbortSignal): Promise<number>;
  onCompletion(listener: (slotId: string, errno: number) => void): () => void;
  onChange(listener: (slot: SlotState) => void): () => void;
  close(): Promise<void>;
}

export class VirtualMediaUnavailable extends Error {
  constructor(cause?: unknown) {
    super('the VirtualMedia service is not available on D-Bus', { cause });
    this.name = 'VirtualMediaUnavailable';
  }
}

export class VirtualMediaCallError extends Error {
  constructor(
    readonly dbusName: string,
    message: string,
  ) {
    super(message);
    this.name = 'VirtualMediaCallError';
  }
}

const reject = () => Promise.reject(new VirtualMediaUnavailable());

/**
 * The client of a server that has no bus (OpenAPI generation, tests of other features): the service is
 * never there, so the VirtualMedia routes exist and answer 503 like during a service restart.
 */
export const absentVirtualMedia: VirtualMediaClient = Object.freeze({
  available: false,
  slots: () => [],
  slot: () => undefined,
  slotByEndpoint: () => undefined,
  proxyMount: reject,
  proxyUnmount: reject,
  legacyMount: reject,
  legacyUnmount: reject,
  setVerifyCertificate: reject,
  addCertificate: reject,
  removeCertificate: reject,
  nextCompletion: reject,
  onCompletion: () => () => undefined,
  onChange: () => () => undefined,
  close: () => Promise.resolve(),
});
