/**
 * Redfish privileges and the predefined roles (DMTF DSP0266 "Roles", same sets as bmcweb), and the one
 * function that decides whether a principal satisfies a route's requirement.
 */

export const privileges = [
  'Login',
  'ConfigureManager',
  'ConfigureUsers',
  'ConfigureComponents',
  'ConfigureSelf',
] as const;

export type Privilege = (typeof privileges)[number];

export const roles = {
  Administrator: ['Login', 'ConfigureManager', 'ConfigureUsers', 'ConfigureComponents', 'ConfigureSelf'],
  Operator: ['Login', 'ConfigureComponents', 'ConfigureSelf'],
  ReadOnly: ['Login', 'ConfigureSelf'],
} as const satisfies Record<string, readonly Privilege[]>;

export type RoleId = keyof typeof roles;

export const roleIds = Object.keys(roles) as RoleId[];

export function isRoleId(value: string): value is RoleId {
  return Object.hasOwn(roles, value);
}

const privilegeSets = new Map<RoleId, ReadonlySet<Privilege>>(
  roleIds.map((roleId) => [roleId, new Set(roles[roleId])]),
);

/** One shared set per role: every authenticated request asks. */
export function privilegesOf(roleId: RoleId): ReadonlySet<Privilege> {
  return privilegeSets.get(roleId)!;
}

/**
 * What a route demands: one AND-set (`['ConfigureManager']`), or an OR of AND-sets
 * (`[['ConfigureUsers'], ['ConfigureSelf']]`), as in bmcweb's privilege registry.
 */
export type PrivilegeRequirement = readonly Privilege[] | readonly (readonly Privilege[])[];

export function satisfies(held: ReadonlySet<Privilege>, required: PrivilegeRequirement): boolean {
  if (required.length === 0) return true;
  const alternatives = (
    typeof required[0] === 'string' ? [required] : required
  ) as readonly (readonly Privilege[])[];
  return alternatives.some((set) => set.every((privilege) => held.has(privilege)));
}
