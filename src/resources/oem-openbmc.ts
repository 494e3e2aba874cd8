import type { FastifyInstance } from 'fastify';
import { oemCsdlUri, oemJsonSchemaUri, oemNamespace, oemVersion } from '../redfish/odata.ts';

/**
 * The OpenBMC OEM VirtualMedia schema (`Oem.OpenBMC.WebSocketEndpoint` on Proxy slots), generated
 * here rather than read from files: a deployed BMC has no schema directory beside the program, and
 * `$metadata` must never reference a document the service cannot serve. The definition follows
 * OpenBMC's published `OpenBMCVirtualMedia.v1_0_0` (test/redfish-vm/oem-schema.test.ts compares them).
 */

const property = {
  name: 'WebSocketEndpoint',
  description: 'Indicates endpoint socket name and location.',
  longDescription:
    'The value of this property shall be a string indicating the location and name of the WebSocket ' +
    'endpoint that serves this slot in Proxy mode.',
} as const;
const entity = {
  description: 'OEM Extension for VirtualMedia',
  longDescription: 'OEM Extension for VirtualMedia to support Proxy mode.',
} as const;

const odataCore =
  'http://docs.oasis-open.org/odata/odata/v4.0/errata03/csd01/complete/vocabularies/Org.OData.Core.V1.xml';

export function oemCsdl(): string {
  const propertyXml = (indent: string) =>
    [
      `${indent}<Property Name="${property.name}" Type="Edm.String">`,
      `${indent}  <Annotation Term="OData.Permissions" EnumMember="OData.Permission/Read"/>`,
      `${indent}  <Annotation Term="OData.Description" String="${property.description}"/>`,
      `${indent}  <Annotation Term="OData.LongDescription" String="${property.longDescription}"/>`,
      `${indent}</Property>`,
    ].join('\n');
  return [
    '<?xml version="1.0" encoding="UTF-8"?>',
    '<edmx:Edmx xmlns:edmx="http://docs.oasis-open.org/odata/ns/edmx" Version="4.0">',
    `  <edmx:Reference Uri="${odataCore}">`,
    '    <edmx:Include Namespace="Org.OData.Core.V1" Alias="OData"/>',
    '  </edmx:Reference>',
    '  <edmx:Reference Uri="http://redfish.dmtf.org/schemas/v1/RedfishExtensions_v1.xml">',
    '    <edmx:Include Namespace="RedfishExtensions.v1_0_0" Alias="Redfish"/>',
    '  </edmx:Reference>',
    '  <edmx:Reference Uri="http://redfish.dmtf.org/schemas/v1/Resource_v1.xml">',
    '    <edmx:Include Namespace="Resource"/>',
    '    <edmx:Include Namespace="Resource.v1_0_0"/>',
    '  </edmx:Reference>',
    '  <edmx:DataServices>',
    `    <Schema xmlns="http://docs.oasis-open.org/odata/ns/edm" Namespace="${oemNamespace}">`,
    '      <Annotation Term="Redfish.OwningEntity" String="OpenBMC"/>',
    '    </Schema>',
    `    <Schema xmlns="http://docs.oasis-open.org/odata/ns/edm" Namespace="${oemNamespace}.${oemVersion}">`,
    '      <Annotation Term="Redfish.OwningEntity" String="OpenBMC"/>',
    '      <Annotation Term="Redfish.Release" String="1.0"/>',
    // A ComplexType: Resource.OemObject is one (upstream's EntityType over it is not valid CSDL).
    '      <ComplexType Name="VirtualMedia" BaseType="Resource.OemObject">',
    `        <Annotation Term="OData.Description" String="${entity.description}"/>`,
    `        <Annotation Term="OData.LongDescription" String="${entity.longDescription}"/>`,
    propertyXml('        '),
    '      </ComplexType>',
    '    </Schema>',
    '  </edmx:DataServices>',
    '</edmx:Edmx>',
    '',
  ].join('\n');
}

export function oemJsonSchema() {
  return {
    $id: `http://redfish.dmtf.org/schemas/v1${oemJsonSchemaUri}`,
    $schema: 'http://redfish.dmtf.org/schemas/v1/redfish-schema-v1.json',
    title: `#${oemNamespace}.${oemVersion}`,
    owningEntity: 'OpenBMC',
    release: '1.0',
    definitions: {
      VirtualMedia: {
        type: 'object',
        additionalProperties: false,
        description: entity.description,
        longDescription: entity.longDescription,
        patternProperties: {
          '^([a-zA-Z_][a-zA-Z0-9_]*)?@(odata|Redfish|Message)\\.[a-zA-Z_][a-zA-Z0-9_]*$': {
            description: 'This property shall specify a valid odata or Redfish property.',
            type: ['array', 'boolean', 'integer', 'number', 'null', 'object', 'string'],
          },
        },
        properties: {
          [property.name]: {
            description: property.description,
            longDescription: property.longDescription,
            readonly: true,
            type: ['string', 'null'],
          },
        },
      },
    },
  };
}

/** Serves both documents where `$metadata` and `@odata.type` clients look for them, without credentials. */
export async function oemSchemaRoutes(app: FastifyInstance) {
  const tags = ['Schemas'];
  const csdl = oemCsdl();
  const json = oemJsonSchema();
  app.get(
    oemCsdlUri,
    { config: { public: true, mediaType: 'application/xml' }, schema: { tags, summary: 'OpenBMC OEM CSDL' } },
    async (_request, reply) => reply.type('application/xml; charset=utf-8').send(csdl),
  );
  app.get(
    oemJsonSchemaUri,
    { config: { public: true }, schema: { tags, summary: 'OpenBMC OEM JSON schema' } },
    async () => json,
  );
}
