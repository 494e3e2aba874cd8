import { createHash, X509Certificate } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import { DbusError, SlotMode } from '../contract/dbus.ts';
import { RETRY_AFTER_SECONDS } from '../contract/redfish.ts';
import {
  type SlotState,
  VirtualMediaCallError,
  type VirtualMediaClient,
  VirtualMediaUnavailable,
} from '../dbus/virtual-media-client.ts';
import { errors, type RedfishError } from '../redfish/errors.ts';
import { redfishMessage } from '../redfish/messages.ts';
import { collection, creationUris, odataType } from '../redfish/odata.ts';
import { schemaRef } from '../redfish/schemas.ts';

const tags = ['VirtualMedia'];

/** A certificate's Id: the start of its SHA-256 fingerprint, so it is stable and the same everywhere. */
export function certificateId(pem: string): string {
  return createHash('sha256').update(new X509Certificate(pem).raw).digest('hex').slice(0, 16);
}

/** `CN=a\nO=b` (Node's form of a distinguished name) as a Redfish Identifier. */
function identifier(distinguishedName: string) {
  const names: Record<string, string> = {
    CN: 'CommonName',
    O: 'Organization',
    OU: 'OrganizationalUnit',
    L: 'City',
    ST: 'State',
    C: 'Country',
  };
  const parts: Record<string, string> = {};
  for (const line of distinguishedName.split('\n')) {
    const equals = line.indexOf('=');
    const name = names[line.slice(0, equals)];
    if (equals > 0 && name && !(name in parts)) parts[name] = line.slice(equals + 1);
  }
  return { ...parts, DisplayString: distinguishedName.split('\n').join(', ') };
}

function certificateResource(uri: string, pem: string) {
  const certificate = new X509Certificate(pem);
  return {
    '@odata.id': uri,
    '@odata.type': odataType('Certificate'),
    Id: certificateId(pem),
    Name: 'Trusted CA certificate',
    CertificateString: pem,
    CertificateType: 'PEM',
    Subject: identifier(certificate.subject),
    Issuer: identifier(certificate.issuer),
    ValidNotBefore: new Date(certificate.validFrom).toISOString(),
    ValidNotAfter: new Date(certificate.validTo).toISOString(),
    SerialNumber: hexPairs(certificate.serialNumber),
    Fingerprint: certificate.fingerprint256,
    FingerprintHashAlgorithm: 'TPM_ALG_SHA256',
  };
}

export interface CertificateRoutesOptions {
  client: VirtualMediaClient;
  /** The route of one member (`…/VirtualMedia/:slotId`) and a slot's member URI under it. */
  memberRoute: string;
  memberUri: (slotId: string) => string;
  /** The slot a request names, or the Redfish error (404, 503). */
  findSlot: (slotId: string) => SlotState;
}

type SlotRoute = { Params: { slotId: string } };
type CertificateRoute = { Params: { slotId: string; certificateId: string } };

/**
 * VirtualMedia v1_4's `Certificates` of a Legacy slot: the CA certificates its https:// image server may
 * be signed by (self-signed image servers are the commonest trouble with this feature). The service
 * keeps them (D-Bus Trust interface); they apply from the next InsertMedia on.
 */
export async function virtualMediaCertificateRoutes(app: FastifyInstance, options: CertificateRoutesOptions) {
  const collectionRoute = `${options.memberRoute}/Certificates`;
  const collectionUri = (slotId: string) => `${options.memberUri(slotId)}/Certificates`;

  const legacySlot = (slotId: string): SlotState => {
    const slot = options.findSlot(slotId);
    if (slot.mode !== SlotMode.Legacy) throw errors.resourceNotFound('CertificateCollection', 'Certificates');
    return slot;
  };
  const findCertificate = (slot: SlotState, id: string): string => {
    const pem = slot.certificates.find((candidate) => certificateId(candidate) === id);
    if (!pem) throw errors.resourceNotFound('Certificate', id);
    return pem;
  };

  app.get<SlotRoute>(
    collectionRoute,
    {
      config: { privileges: ['Login'] },
      schema: {
        tags,
        summary: "A Legacy slot's trusted CAs",
        response: { 200: schemaRef('Collection.json') },
      },
    },
    async (request) => {
      const slot = legacySlot(request.params.slotId);
      const uri = collectionUri(slot.slotId);
      const members = slot.certificates.map((pem) => `${uri}/${certificateId(pem)}`);
      return collection('CertificateCollection', uri, 'Trusted CA certificates', members);
    },
  );

  for (const route of creationUris(collectionRoute)) {
    app.post<SlotRoute & { Body: { CertificateString: string; CertificateType: 'PEM' } }>(
      route,
      {
        config: { privileges: ['ConfigureManager'] },
        schema: {
          tags,
          summary: 'Trust a CA certificate (PEM) for this slot from the next insert on',
          body: schemaRef('requests/CertificateCreate.json'),
          response: { 201: schemaRef('Certificate.json') },
        },
      },
      async (request, reply) => {
        const slot = legacySlot(request.params.slotId);
        const pem = request.body.CertificateString;
        try {
          await options.client.addCertificate(slot.slotId, pem);
        } catch (error) {
          throw refused(error);
        }
        // The service re-encodes what it stores: answer with its copy, which the cache now holds.
        const stored = options.client.slot(slot.slotId)?.certificates.find((c) => sameCertificate(c, pem));
        if (!stored) throw errors.internalError();
        const uri = `${collectionUri(slot.slotId)}/${certificateId(stored)}`;
        return reply.code(201).header('Location', uri).send(certificateResource(uri, stored));
      },
    );
  }

  app.get<CertificateRoute>(
    `${collectionRoute}/:certificateId`,
    {
      config: { privileges: ['Login'] },
      schema: {
        tags,
        summary: 'One trusted CA certificate',
        response: { 200: schemaRef('Certificate.json') },
      },
    },
    async (request) => {
      const slot = legacySlot(request.params.slotId);
      const pem = findCertificate(slot, request.params.certificateId);
      return certificateResource(`${collectionUri(slot.slotId)}/${request.params.certificateId}`, pem);
    },
  );

  app.delete<CertificateRoute>(
    `${collectionRoute}/:certificateId`,
    {
      config: { privileges: ['ConfigureManager'] },
      schema: { tags, summary: 'Stop trusting a CA certificate for this slot' },
    },
    async (request, reply) => {
      const slot = legacySlot(request.params.slotId);
      const pem = findCertificate(slot, request.params.certificateId);
      try {
        await options.client.removeCertificate(slot.slotId, pem);
      } catch (error) {
        throw refused(error);
      }
      return reply.code(204).send();
    },
  );
}

/** `0A1B2C` as Redfish writes serial numbers: `0A:1B:2C`. */
function hexPairs(hex: string): string {
  return (hex.length % 2 ? `0${hex}` : hex).toUpperCase().match(/../g)!.join(':');
}

function sameCertificate(a: string, b: string): boolean {
  try {
    return new X509Certificate(a).raw.equals(new X509Certificate(b).raw);
  } catch {
    return false;
  }
}

/** A Trust call the service refused, as the Redfish error the caller can act on. */
function refused(error: unknown): RedfishError {
  if (error instanceof VirtualMediaUnavailable)
    return errors.serviceTemporarilyUnavailable(RETRY_AFTER_SECONDS);
  if (error instanceof VirtualMediaCallError) {
    if (error.dbusName === DbusError.InvalidArgument) {
      // The certificate itself is not repeated: the reason the service gave says what is wrong with it.
      const message = redfishMessage(
        'PropertyValueFormatError',
        ['(certificate)', 'CertificateString'],
        ['#/CertificateString'],
      );
      return errors.badRequest([{ ...message, Resolution: `${capitalized(error.message)}.` }]);
    }
    if (error.dbusName === DbusError.ResourceNotFound) return errors.resourceNotFound('Certificate', '');
  }
  return errors.internalError();
}

const capitalized = (text: string) => `${text[0]?.toUpperCase() ?? ''}${text.slice(1)}`;
