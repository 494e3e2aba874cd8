/**
 * The Redfish schemas this service speaks, in one table: `@odata.type` values and the `$metadata`
 * document both come from it, so they cannot disagree. A new resource family adds its line here.
 */
/** The OpenBMC OEM VirtualMedia schema (`Oem.OpenBMC.WebSocketEndpoint`), served by resources/oem-openbmc.ts. */
export const oemNamespace = 'OpenBMCVirtualMedia';
export const oemVersion = 'v1_0_0';
export const oemCsdlUri = `/redfish/v1/schema/${oemNamespace}_v1.xml`;
export const oemJsonSchemaUri = `/redfish/v1/schema/${oemNamespace}.${oemVersion}.json`;
export const oemVirtualMediaType = `#${oemNamespace}.${oemVersion}.VirtualMedia`;

const resourceVersions = {
  AccountService: 'v1_18_1',
  ActionInfo: 'v1_5_0',
  Certificate: 'v1_11_0',
  ComputerSystem: 'v1_27_0',
  Manager: 'v1_24_0',
  ManagerAccount: 'v1_14_1',
  Role: 'v1_3_3',
  ServiceRoot: 'v1_20_0',
  Session: 'v1_8_0',
  SessionService: 'v1_2_0',
  Task: 'v1_7_4',
  TaskService: 'v1_3_0',
  VirtualMedia: 'v1_6_5',
} as const;

const collections = [
  'CertificateCollection',
  'ComputerSystemCollection',
  'ManagerAccountCollection',
  'ManagerCollection',
  'RoleCollection',
  'SessionCollection',
  'TaskCollection',
  'VirtualMediaCollection',
] as const;

/** Schemas not published by DMTF (OEM extensions): where their CSDL lives. */
const oemSchemas: readonly { namespace: string; version: string; csdlUri: string }[] = [
  { namespace: oemNamespace, version: oemVersion, csdlUri: oemCsdlUri },
];

export type ResourceType = keyof typeof resourceVersions;
/** Every resource type the service serves. */
export const resourceTypes = Object.keys(resourceVersions) as ResourceType[];
export type CollectionType = (typeof collections)[number];

/** `#Manager.v1_24_0.Manager` */
export function odataType(type: ResourceType): string {
  return `#${type}.${resourceVersions[type]}.${type}`;
}

/** `#ManagerCollection.ManagerCollection` */
export function collectionType(type: CollectionType): string {
  return `#${type}.${type}`;
}

export interface Link {
  '@odata.id': string;
}

export function link(uri: string): Link {
  return { '@odata.id': uri };
}

/** A resource collection body; `members` are the member URIs. */
export function collection(type: CollectionType, uri: string, name: string, members: readonly string[]) {
  return {
    '@odata.id': uri,
    '@odata.type': collectionType(type),
    Name: name,
    Members: members.map(link),
    'Members@odata.count': members.length,
  };
}

/**
 * The URIs that create a member of a collection: the collection itself and, as the Redfish specification
 * makes equivalent, its `Members` property.
 */
export function creationUris(collectionUri: string): string[] {
  return [collectionUri, `${collectionUri}/Members`];
}

const dmtfCsdl = (namespace: string) => `http://redfish.dmtf.org/schemas/v1/${namespace}_v1.xml`;

// The newest ServiceRoot namespace that (re)defines the entity container; later versions only add types.
const serviceContainer = 'ServiceRoot.v1_19_0';

/** The OData `$metadata` document: references to every schema in use and the service's EntityContainer. */
export function metadataDocument(): string {
  const reference = (uri: string, includes: string[]) =>
    [
      `  <edmx:Reference Uri="${uri}">`,
      ...includes.map(
        (ns) =>
          `    <edmx:Include Namespace="${ns}"${ns.startsWith('RedfishExtensions') ? ' Alias="Redfish"' : ''}/>`,
      ),
      '  </edmx:Reference>',
    ].join('\n');
  const references = [
    reference(dmtfCsdl('RedfishExtensions'), ['RedfishExtensions.v1_0_0']),
    reference(dmtfCsdl('Resource'), ['Resource', 'Resource.v1_0_0']),
    ...Object.entries(resourceVersions).map(([ns, version]) =>
      reference(dmtfCsdl(ns), [
        ns,
        `${ns}.${version}`,
        ...(ns === 'ServiceRoot' && serviceContainer !== `${ns}.${version}` ? [serviceContainer] : []),
      ]),
    ),
    ...collections.map((ns) => reference(dmtfCsdl(ns), [ns])),
    ...oemSchemas.map(({ namespace, version, csdlUri }) =>
      reference(csdlUri, [namespace, `${namespace}.${version}`]),
    ),
  ];
  return [
    '<?xml version="1.0" encoding="UTF-8"?>',
    '<edmx:Edmx xmlns:edmx="http://docs.oasis-open.org/odata/ns/edmx" Version="4.0">',
    ...references,
    '  <edmx:DataServices>',
    '    <Schema xmlns="http://docs.oasis-open.org/odata/ns/edm" Namespace="Service">',
    `      <EntityContainer Name="Service" Extends="${serviceContainer}.ServiceContainer"/>`,
    '    </Schema>',
    '  </edmx:DataServices>',
    '</edmx:Edmx>',
    '',
  ].join('\n');
}
