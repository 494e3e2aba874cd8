import type { FastifyInstance, FastifyReply } from 'fastify';
import { taskServiceUri } from '../contract/redfish.ts';
import { errors } from '../redfish/errors.ts';
import { errorBody, type RedfishMessage, redfishMessage } from '../redfish/messages.ts';
import { collection, link, odataType } from '../redfish/odata.ts';
import { schemaRef } from '../redfish/schemas.ts';

const SERVICE_URI = taskServiceUri;
const TASKS_URI = `${SERVICE_URI}/Tasks`;
const MONITORS_URI = `${SERVICE_URI}/TaskMonitors`;

export const taskUri = (id: string) => `${TASKS_URI}/${id}`;
export const taskMonitorUri = (id: string) => `${MONITORS_URI}/${id}`;

/** How a task's operation ended: what its monitor answers from then on. */
export interface TaskOutcome {
  statusCode: number;
  messages: RedfishMessage[];
}

export interface TaskRequest {
  name: string;
  targetUri: string;
  httpOperation: string;
}

export interface TaskStoreOptions {
  /** How long a finished task (and its monitor) stays readable. */
  retentionMs?: number;
  /** At most this many tasks are kept; the oldest finished ones go first. */
  maxTasks?: number;
}

const DEFAULT_RETENTION_MS = 10 * 60_000;
const DEFAULT_MAX_TASKS = 64;

export class Task {
  readonly startTime = new Date();
  endTime: Date | undefined;
  outcome: TaskOutcome | undefined;
  private readonly done: Promise<void>;
  private markDone!: () => void;

  constructor(
    readonly id: string,
    readonly request: TaskRequest,
  ) {
    this.done = new Promise((resolve) => {
      this.markDone = resolve;
    });
  }

  get running(): boolean {
    return this.outcome === undefined;
  }

  /** Settles once the task has finished, whatever the outcome. */
  finished(): Promise<void> {
    return this.done;
  }

  finish(outcome: TaskOutcome): void {
    if (this.outcome) return;
    this.outcome = outcome;
    this.endTime = new Date();
    this.markDone();
  }

  /** The `Task.v1_7_4` representation. The request body is never kept: it may hold a password. */
  resource() {
    const failed = (this.outcome?.statusCode ?? 0) >= 400;
    return {
      '@odata.id': taskUri(this.id),
      '@odata.type': odataType('Task'),
      Id: this.id,
      Name: this.request.name,
      TaskState: this.running ? 'Running' : failed ? 'Exception' : 'Completed',
      TaskStatus: failed ? 'Critical' : 'OK',
      StartTime: this.startTime.toISOString(),
      ...(this.endTime ? { EndTime: this.endTime.toISOString() } : {}),
      PercentComplete: this.running ? 0 : 100,
      TaskMonitor: taskMonitorUri(this.id),
      HidePayload: false,
      Payload: { TargetUri: this.request.targetUri, HttpOperation: this.request.httpOperation },
      Messages: this.outcome?.messages ?? [],
    };
  }
}

/**
 * Long-running operations (DSP0266 "Asynchronous operations"): each gets a Task resource and a task
 * monitor. Finished tasks are kept for a while, then pruned — lazily, on the next access, so there is
 * no timer to stop.
 */
export class TaskStore {
  private readonly tasks = new Map<string, Task>();
  private nextId = 1;
  readonly retentionMs: number;
  private readonly maxTasks: number;

  constructor(options: TaskStoreOptions = {}) {
    this.retentionMs = options.retentionMs ?? DEFAULT_RETENTION_MS;
    this.maxTasks = options.maxTasks ?? DEFAULT_MAX_TASKS;
  }

  /**
   * Starts a task whose outcome is what `work` resolves to; a rejection ends it as an internal error
   * (`work` is expected to turn every foreseeable failure into an outcome itself).
   */
  run(request: TaskRequest, work: () => Promise<TaskOutcome>): Task {
    this.prune(1);
    const task = new Task(String(this.nextId++), request);
    this.tasks.set(task.id, task);
    work().then(
      (outcome) => task.finish(outcome),
      () => task.finish({ statusCode: 500, messages: [redfishMessage('InternalError', [])] }),
    );
    return task;
  }

  get(id: string): Task | undefined {
    this.prune();
    return this.tasks.get(id);
  }

  all(): Task[] {
    this.prune();
    return [...this.tasks.values()];
  }

  /** Drops expired tasks, then the oldest finished ones until `room` more fit under the limit. */
  private prune(room = 0): void {
    const now = Date.now();
    const finished = [...this.tasks.values()].filter((t) => t.endTime);
    for (const task of finished) {
      if (now - task.endTime!.getTime() > this.retentionMs) this.tasks.delete(task.id);
    }
    // Map order is creation order: the oldest finished tasks are overwritten first.
    for (const task of finished) {
      if (this.tasks.size + room <= this.maxTasks) break;
      this.tasks.delete(task.id);
    }
  }
}

/** Answers an accepted request: 202, `Location` of the task monitor, the Task as the body. */
export function sendAccepted(reply: FastifyReply, task: Task) {
  return reply
    .code(202)
    .header('Location', taskMonitorUri(task.id))
    .header('Retry-After', '1')
    .send(task.resource());
}

/**
 * A finished operation as its monitor (and a synchronous caller) reports it: the error, or 204 — the
 * action itself returns no resource; the Task keeps the success message.
 */
export function sendOutcome(reply: FastifyReply, outcome: TaskOutcome) {
  if (outcome.statusCode >= 400) return reply.code(outcome.statusCode).send(errorBody(outcome.messages));
  return reply.code(204).send();
}

const login = { privileges: ['Login'] } as const;
const idParams = {
  type: 'object',
  properties: { id: { type: 'string' } },
  required: ['id'],
} as const;

export interface TasksPluginOptions {
  tasks: TaskStore;
}

/** `TaskService`, its `Tasks` collection, the tasks and their monitors. */
export async function tasksPlugin(app: FastifyInstance, { tasks }: TasksPluginOptions) {
  const find = (id: string) => {
    const task = tasks.get(id);
    if (!task) throw errors.resourceNotFound('Task', id);
    return task;
  };

  app.get(
    SERVICE_URI,
    { config: login, schema: { response: { 200: schemaRef('TaskService.json') } } },
    async () => ({
      '@odata.id': SERVICE_URI,
      '@odata.type': odataType('TaskService'),
      Id: 'TaskService',
      Name: 'Task Service',
      ServiceEnabled: true,
      DateTime: new Date().toISOString().replace(/\.\d{3}Z$/, 'Z'),
      CompletedTaskOverWritePolicy: 'Oldest',
      LifeCycleEventOnTaskStateChange: false,
      TaskAutoDeleteTimeoutMinutes: Math.ceil(tasks.retentionMs / 60_000),
      Status: { State: 'Enabled', Health: 'OK' },
      Tasks: link(TASKS_URI),
    }),
  );

  app.get(
    TASKS_URI,
    { config: login, schema: { response: { 200: schemaRef('Collection.json') } } },
    async () => {
      const members = tasks.all().map((t) => taskUri(t.id));
      return collection('TaskCollection', TASKS_URI, 'Task Collection', members);
    },
  );

  app.get<{ Params: { id: string } }>(
    `${TASKS_URI}/:id`,
    { config: login, schema: { params: idParams, response: { 200: schemaRef('Task.json') } } },
    async (request) => find(request.params.id).resource(),
  );

  // While running the monitor says 202 (and where to ask again); afterwards it gives the operation's result:
  // 204 without a body, or an error body, neither of which needs a schema here.
  app.get<{ Params: { id: string } }>(
    `${MONITORS_URI}/:id`,
    { config: login, schema: { params: idParams, response: { 202: schemaRef('Task.json') } } },
    async (request, reply) => {
      const task = find(request.params.id);
      if (task.outcome) return sendOutcome(reply, task.outcome);
      return sendAccepted(reply, task);
    },
  );
}
