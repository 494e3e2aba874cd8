import type { FastifyInstance, FastifyRequest } from 'fastify';
import accountServicePatch from '../../schemas/requests/AccountServicePatch.json' with { type: 'json' };
import managerAccountCreate from '../../schemas/requests/ManagerAccountCreate.json' with { type: 'json' };
import managerAccountPatch from '../../schemas/requests/ManagerAccountPatch.json' with { type: 'json' };
import type { Account, AccountPolicy } from '../auth/accounts.ts';
import { assertSelfOr, principalOf } from '../auth/plugin.ts';
import { type RoleId, roleIds, roles } from '../auth/privileges.ts';
import { accountServiceUri } from '../contract/redfish.ts';
import { errors, type RedfishError } from '../redfish/errors.ts';
import { assertIfMatch } from '../redfish/etag.ts';
import { redfishMessage } from '../redfish/messages.ts';
import { collection, creationUris, link, odataType } from '../redfish/odata.ts';
import { patchChanges, readOnlyProperties } from '../redfish/patch.ts';
import { schemaRef } from '../redfish/schemas.ts';

const serviceUri = accountServiceUri;
const accountsUri = `${serviceUri}/Accounts`;
const rolesUri = `${serviceUri}/Roles`;
const tags = ['AccountService'];

/** Named in the PATCH body schemas without a type: sending one is PropertyNotWritable. */
const serviceReadOnly = readOnlyProperties(accountServicePatch);
const accountReadOnly = readOnlyProperties(managerAccountPatch);

// The request schemas spell out the role names; they must be the roles privileges.ts defines.
for (const schema of [managerAccountCreate, managerAccountPatch]) {
  const listed = schema.properties.RoleId.enum;
  if (listed.length !== roleIds.length || !roleIds.every((id) => listed.includes(id)))
    throw new Error(`${schema.$id}: RoleId lists ${listed.join(', ')}, not the roles ${roleIds.join(', ')}`);
}

function accountResource(account: Account) {
  return {
    '@odata.id': `${accountsUri}/${account.username}`,
    '@odata.type': odataType('ManagerAccount'),
    Id: account.username,
    Name: 'User Account',
    Description: 'User Account',
    UserName: account.username,
    RoleId: account.roleId,
    Enabled: account.enabled,
    Locked: account.locked,
    // Only an administrator's unlock can be written; locking happens through failed logins.
    'Locked@Redfish.AllowableValues': ['false'],
    Password: null,
    AccountTypes: ['Redfish', 'WebUI'],
    Links: { Role: link(`${rolesUri}/${account.roleId}`) },
  };
}

function roleResource(id: RoleId) {
  return {
    '@odata.id': `${rolesUri}/${id}`,
    '@odata.type': odataType('Role'),
    Id: id,
    Name: 'User Role',
    Description: `${id} User Role`,
    RoleId: id,
    IsPredefined: true,
    AssignedPrivileges: [...roles[id]],
    OemPrivileges: [],
  };
}

/** A password the policy refuses; the message never carries the password itself. */
function passwordRejected(): RedfishError {
  return errors.propertyValueFormat('[redacted]', 'Password');
}

/** AccountService: the password and lockout policy, local accounts, and the predefined roles. */
export async function accountServiceRoutes(app: FastifyInstance) {
  const { accounts, sessions } = app;

  const serviceResource = () => ({
    '@odata.id': serviceUri,
    '@odata.type': odataType('AccountService'),
    Id: 'AccountService',
    Name: 'Account Service',
    Description: 'Account Service',
    ServiceEnabled: true,
    LocalAccountAuth: 'Enabled',
    MinPasswordLength: accounts.policy.minPasswordLength,
    MaxPasswordLength: accounts.policy.maxPasswordLength,
    AccountLockoutThreshold: accounts.policy.lockoutThreshold,
    AccountLockoutDuration: accounts.policy.lockoutDuration,
    AccountLockoutCounterResetAfter: accounts.policy.lockoutCounterResetAfter,
    AccountLockoutCounterResetEnabled: true,
    Accounts: link(accountsUri),
    Roles: link(rolesUri),
  });

  app.get(
    serviceUri,
    {
      config: { privileges: ['Login'] },
      schema: { tags, response: { 200: schemaRef('AccountService.json') } },
    },
    async () => serviceResource(),
  );

  type PolicyPatch = {
    MinPasswordLength?: number;
    MaxPasswordLength?: number;
    AccountLockoutThreshold?: number;
    AccountLockoutDuration?: number;
    AccountLockoutCounterResetAfter?: number;
  };
  app.patch<{ Body: PolicyPatch }>(
    serviceUri,
    {
      config: { privileges: ['ConfigureUsers'] },
      schema: {
        tags,
        summary: 'Password and lockout policy',
        body: schemaRef('requests/AccountServicePatch.json'),
        response: { 200: schemaRef('AccountService.json') },
      },
    },
    async (request, reply) => {
      assertIfMatch(request, reply, serviceResource(), 'AccountService.json');
      const changes = patchChanges(request.body, serviceReadOnly);
      const policy: AccountPolicy = {
        minPasswordLength: changes.MinPasswordLength ?? accounts.policy.minPasswordLength,
        maxPasswordLength: changes.MaxPasswordLength ?? accounts.policy.maxPasswordLength,
        lockoutThreshold: changes.AccountLockoutThreshold ?? accounts.policy.lockoutThreshold,
        lockoutDuration: changes.AccountLockoutDuration ?? accounts.policy.lockoutDuration,
        lockoutCounterResetAfter:
          changes.AccountLockoutCounterResetAfter ?? accounts.policy.lockoutCounterResetAfter,
      };
      if (policy.minPasswordLength > policy.maxPasswordLength) {
        const name = changes.MinPasswordLength === undefined ? 'MaxPasswordLength' : 'MinPasswordLength';
        throw errors.propertyValueOutOfRange(String(changes[name]), name);
      }
      // The Redfish schema requires the counter window to fit inside the lockout duration.
      if (policy.lockoutDuration > 0 && policy.lockoutCounterResetAfter > policy.lockoutDuration) {
        throw errors.propertyValueOutOfRange(
          String(policy.lockoutCounterResetAfter),
          'AccountLockoutCounterResetAfter',
        );
      }
      await accounts.setPolicy(policy);
      return serviceResource();
    },
  );

  // Accounts

  const canSeeAll = (request: FastifyRequest) => {
    const held = principalOf(request).privileges;
    return held.has('ConfigureUsers') || held.has('ConfigureManager');
  };

  app.get(
    accountsUri,
    { config: { privileges: ['Login'] }, schema: { tags, response: { 200: schemaRef('Collection.json') } } },
    async (request) => {
      const self = principalOf(request).username;
      const visible = accounts.list().filter((a) => canSeeAll(request) || a.username === self);
      return collection(
        'ManagerAccountCollection',
        accountsUri,
        'Accounts Collection',
        visible.map((a) => `${accountsUri}/${a.username}`),
      );
    },
  );

  type NewAccount = { UserName: string; Password: string; RoleId: RoleId; Enabled?: boolean };
  for (const uri of creationUris(accountsUri)) {
    app.post<{ Body: NewAccount }>(
      uri,
      {
        config: { privileges: ['ConfigureUsers'] },
        schema: {
          tags,
          summary: 'Create an account',
          body: schemaRef('requests/ManagerAccountCreate.json'),
          response: { 201: schemaRef('ManagerAccount.json') },
        },
      },
      async (request, reply) => {
        const { UserName, Password, RoleId, Enabled = true } = request.body;
        if (accounts.get(UserName)) {
          throw errors.resourceAlreadyExists('ManagerAccount', 'UserName', UserName);
        }
        if (!accounts.passwordFitsPolicy(Password)) throw passwordRejected();
        await accounts.create({ username: UserName, password: Password, roleId: RoleId, enabled: Enabled });
        request.log.info(
          { user: UserName, roleId: RoleId, by: principalOf(request).username },
          'account created',
        );
        const account = accounts.get(UserName)!;
        return reply
          .code(201)
          .header('Location', `${accountsUri}/${UserName}`)
          .send(accountResource(account));
      },
    );
  }

  const findAccount = (request: FastifyRequest<{ Params: { id: string } }>): Account => {
    const account = accounts.get(request.params.id);
    if (!account) throw errors.resourceNotFound('ManagerAccount', request.params.id);
    return account;
  };

  app.get<{ Params: { id: string } }>(
    `${accountsUri}/:id`,
    {
      config: { privileges: [['ConfigureUsers'], ['ConfigureManager'], ['ConfigureSelf']] },
      schema: { tags, response: { 200: schemaRef('ManagerAccount.json') } },
    },
    async (request) => {
      const account = findAccount(request);
      if (!canSeeAll(request)) assertSelfOr(request, account.username, 'ConfigureUsers');
      return accountResource(account);
    },
  );

  /** Whether a change would leave no enabled Administrator to manage the service. */
  const orphansService = (username: string, after: { roleId: RoleId; enabled: boolean } | undefined) =>
    !accounts
      .list()
      .map((a) => (a.username === username ? after && { ...a, ...after } : a))
      .some((a) => a?.roleId === 'Administrator' && a.enabled);

  type AccountPatch = {
    UserName?: string;
    Password?: string;
    RoleId?: RoleId;
    Enabled?: boolean;
    Locked?: false;
  };
  app.patch<{ Params: { id: string }; Body: AccountPatch }>(
    `${accountsUri}/:id`,
    {
      config: { privileges: [['ConfigureUsers'], ['ConfigureSelf']] },
      schema: {
        tags,
        summary: 'Change an account (ConfigureSelf may change its own password only); honours If-Match',
        body: schemaRef('requests/ManagerAccountPatch.json'),
        response: { 200: schemaRef('ManagerAccount.json') },
      },
    },
    async (request, reply) => {
      const account = findAccount(request);
      const principal = principalOf(request);
      assertIfMatch(request, reply, accountResource(account), 'ManagerAccount.json');
      const changes = patchChanges(request.body, accountReadOnly);
      if (!principal.privileges.has('ConfigureUsers')) {
        // ConfigureSelf covers exactly one thing: a user's own password.
        assertSelfOr(request, account.username, 'ConfigureUsers');
        if (Object.keys(changes).some((name) => name !== 'Password')) {
          throw errors.insufficientPrivilege();
        }
      }
      if (changes.Password !== undefined && !accounts.passwordFitsPolicy(changes.Password))
        throw passwordRejected();
      if (
        changes.UserName !== undefined &&
        changes.UserName !== account.username &&
        accounts.get(changes.UserName)
      ) {
        throw errors.resourceAlreadyExists('ManagerAccount', 'UserName', changes.UserName);
      }
      const after = { roleId: changes.RoleId ?? account.roleId, enabled: changes.Enabled ?? account.enabled };
      if (orphansService(account.username, after)) {
        const name = changes.RoleId === undefined ? 'Enabled' : 'RoleId';
        throw errors.propertyValueIncorrect(name, String(changes[name]));
      }
      await accounts.update(account.username, {
        ...(changes.UserName !== undefined ? { username: changes.UserName } : {}),
        ...(changes.Password !== undefined ? { password: changes.Password } : {}),
        ...(changes.RoleId !== undefined ? { roleId: changes.RoleId } : {}),
        ...(changes.Enabled !== undefined ? { enabled: changes.Enabled } : {}),
        ...(changes.Locked === false ? { locked: false as const } : {}),
      });
      // New credentials or a new name end the account's other sessions; the caller's own one survives.
      if (changes.Password !== undefined || changes.UserName !== undefined || changes.Enabled === false) {
        sessions.deleteUser(
          account.username,
          changes.UserName === undefined ? principal.session?.id : undefined,
        );
      }
      request.log.info(
        { user: account.username, changed: Object.keys(changes), by: principal.username },
        'account changed',
      );
      const updated = accounts.get(changes.UserName ?? account.username)!;
      return {
        ...accountResource(updated),
        '@Message.ExtendedInfo': [redfishMessage('AccountModified', [])],
      };
    },
  );

  app.delete<{ Params: { id: string } }>(
    `${accountsUri}/:id`,
    { config: { privileges: ['ConfigureUsers'] }, schema: { tags } },
    async (request, reply) => {
      const account = findAccount(request);
      if (orphansService(account.username, undefined)) throw errors.resourceCannotBeDeleted();
      await accounts.remove(account.username);
      sessions.deleteUser(account.username);
      request.log.info({ user: account.username, by: principalOf(request).username }, 'account deleted');
      return reply.code(204).send();
    },
  );

  // Roles (predefined, read-only)

  app.get(
    rolesUri,
    { config: { privileges: ['Login'] }, schema: { tags, response: { 200: schemaRef('Collection.json') } } },
    async () =>
      collection(
        'RoleCollection',
        rolesUri,
        'Roles Collection',
        roleIds.map((id) => `${rolesUri}/${id}`),
      ),
  );

  app.get<{ Params: { id: string } }>(
    `${rolesUri}/:id`,
    { config: { privileges: ['Login'] }, schema: { tags, response: { 200: schemaRef('Role.json') } } },
    async (request) => {
      const id = roleIds.find((r) => r === request.params.id);
      if (!id) throw errors.resourceNotFound('Role', request.params.id);
      return roleResource(id);
    },
  );
}
