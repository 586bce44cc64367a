/**
 * Bad input, agent: an unreachable coordinator, a clock ahead or behind, a
 * data folder already in use, a coordinator that cannot prove who it is, a
 * damaged identity, a blocked device. Each case asserts the named error or
 * reason and that nothing on the device or the coordinator changed.
 */
import anyTest, { type TestFn } from 'ava'
import { mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { Agent } from '../../agent/agent.js'
import { ApiClient } from '../../coordinator/cli/api-client.js'
import { startCoordinator, type RunningCoordinator } from '../../coordinator/main.js'
import { silentLogger } from '../../protocol/logger.js'
import { collect } from '../../coordinator/store/level-store.js'
import { freePort, waitFor } from '../helpers/processes.js'
import { makeTestCertificates, type TestCertificates } from '../helpers/tls.js'
import { cachedChunks, filesUnder, openAgentLab, pinnedKey, startLabAgent, type AgentLab } from './harness.js'

interface Context {
  lab: AgentLab
  certificates: TestCertificates
  secure: RunningCoordinator
  secureToken: string
}

const test = anyTest as TestFn<Context>
const DAY_MS = 24 * 3600 * 1000

test.before(async t => {
  t.context.lab = await openAgentLab()
  const folder = join(t.context.lab.root, 'certificates')
  await mkdir(folder)
  t.context.certificates = await makeTestCertificates(folder)
  t.context.secure = await startCoordinator({
    dataDir: join(t.context.lab.root, 'secure-coordinator'), port: 0, logger: silentLogger(), tlsCertPath: t.context.certificates.certPath, tlsKeyPath: t.context.certificates.keyPath
  })
  const api = new ApiClient({ url: t.context.secure.url, token: t.context.secure.services.bootstrapAdminToken!, tls: { caPem: t.context.certificates.caPem } })
  t.context.secureToken = (await api.post('/v1/enrollment-tokens', { maxUses: 100 })).token
  api.close()
})

test.after.always(async t => {
  await t.context.secure?.close()
  await t.context.lab?.close()
})

/** Devices enrolled and enrollment-token uses at a coordinator: what a refused start must not change. */
async function enrollmentState (coordinator: RunningCoordinator): Promise<unknown> {
  const store = coordinator.services.store.collections
  return {
    devices: (await collect(store.devices.values())).length,
    uses: (await collect(store.enrollmentTokens.values())).map(token => token.uses)
  }
}

async function exists (path: string): Promise<boolean> {
  return await stat(path).then(() => true, () => false)
}

async function taskFor (lab: AgentLab, hostname: string): Promise<string> {
  return (await lab.api.post('/v1/tasks', { packageId: lab.packageId, action: 'install', targets: { deviceIds: [hostname] } })).id
}

/** Starts that must fail before the agent has an identity: the error's name, and no trace on either side. */
const refusedStarts: Array<{ name: string, error: string, start: (c: Context, dataDir: string) => Promise<unknown>, coordinator: (c: Context) => RunningCoordinator }> = [
  {
    name: 'the coordinator is down at enrollment',
    error: 'CoordinatorUnreachableError',
    coordinator: c => c.lab.coordinator,
    start: async (c, dataDir) => await Agent.start({ dataDir, coordinatorUrl: `http://127.0.0.1:${await freePort()}`, allowInsecureHttp: true, enrollToken: c.lab.enrollToken, enrollRetryMs: 2000, logger: silentLogger() })
  },
  {
    name: 'a plain http:// coordinator without --insecure-http',
    error: 'InsecureTransportError',
    coordinator: c => c.lab.coordinator,
    start: async (c, dataDir) => await Agent.start({ dataDir, coordinatorUrl: c.lab.coordinator.url, enrollToken: c.lab.enrollToken, logger: silentLogger() })
  },
  {
    name: 'a coordinator whose certificate does not match the pinned fingerprint',
    error: 'CertificatePinError',
    coordinator: c => c.secure,
    start: async (c, dataDir) => await Agent.start({ dataDir, coordinatorUrl: c.secure.url, enrollToken: c.secureToken, tls: { pinSha256: 'ab'.repeat(32) }, logger: silentLogger() })
  },
  {
    name: 'a coordinator whose certificate is from another CA',
    error: 'UntrustedCertificateError',
    coordinator: c => c.secure,
    start: async (c, dataDir) => await Agent.start({ dataDir, coordinatorUrl: c.secure.url, enrollToken: c.secureToken, tls: { caPem: await readFile(c.certificates.otherCaPath, 'utf8') }, logger: silentLogger() })
  },
  {
    name: 'a coordinator whose certificate only the system CAs would have to vouch for',
    error: 'UntrustedCertificateError',
    coordinator: c => c.secure,
    start: async (c, dataDir) => await Agent.start({ dataDir, coordinatorUrl: c.secure.url, enrollToken: c.secureToken, logger: silentLogger() })
  },
  {
    name: 'a clock-skew tolerance beyond the bound',
    error: 'RangeError',
    coordinator: c => c.lab.coordinator,
    start: async (c, dataDir) => await Agent.start({ dataDir, coordinatorUrl: c.lab.proxy.url, allowInsecureHttp: true, enrollToken: c.lab.enrollToken, clockSkewMs: 2 * DAY_MS, logger: silentLogger() })
  }
]

for (const [index, kase] of refusedStarts.entries()) {
  test.serial(`agent case ${index + 1}: ${kase.name} → ${kase.error}`, async t => {
    const dataDir = join(t.context.lab.root, `refused-start-${index + 1}`)
    const before = await enrollmentState(kase.coordinator(t.context))
    const error = await t.throwsAsync(kase.start(t.context, dataDir))
    t.is(error?.name, kase.error, error?.message)
    t.false(await exists(join(dataDir, 'agent.json')), 'no identity was written')
    t.deepEqual(await enrollmentState(kase.coordinator(t.context)), before, 'no device enrolled, no token use spent')
  })
}

let caseNumber = refusedStarts.length

test.serial(`agent case ${++caseNumber}: a second agent on a data folder in use → DataFolderLockedError`, async t => {
  const { lab } = t.context
  const first = await startLabAgent(lab, 'locked-folder')
  try {
    const identity = await readFile(join(first.dataDir, 'agent.json'), 'utf8')
    const error = await t.throwsAsync(Agent.start({ dataDir: first.dataDir, coordinatorUrl: lab.proxy.url, allowInsecureHttp: true, enrollToken: lab.enrollToken, logger: silentLogger() }))
    t.is(error?.name, 'DataFolderLockedError')
    t.is(await readFile(join(first.dataDir, 'agent.json'), 'utf8'), identity, 'the identity is untouched')
    // The first agent goes on working.
    const taskId = await taskFor(lab, 'locked-folder')
    await waitFor(async () => (await lab.coordinator.services.tasks.row(taskId, first.agent.identity.deviceId))?.state === 'succeeded' ? true : undefined, 'the first agent to deploy', 60_000)
  } finally {
    await first.stop()
  }
})

test.serial(`agent case ${++caseNumber}: a damaged agent.json → IdentityCorruptError`, async t => {
  const { lab } = t.context
  const dataDir = join(lab.root, 'damaged-identity')
  await mkdir(dataDir, { recursive: true })
  await writeFile(join(dataDir, 'agent.json'), '{"version":1,"deviceId":')
  const before = await enrollmentState(lab.coordinator)
  const error = await t.throwsAsync(Agent.start({ dataDir, coordinatorUrl: lab.proxy.url, allowInsecureHttp: true, enrollToken: lab.enrollToken, logger: silentLogger() }))
  t.is(error?.name, 'IdentityCorruptError')
  t.is(await readFile(join(dataDir, 'agent.json'), 'utf8'), '{"version":1,"deviceId":', 'the file is left for the operator to inspect')
  t.deepEqual(await enrollmentState(lab.coordinator), before, 'the agent did not enroll over it')
})

const clockCases: Array<{ name: string, offsetMs: number, reason: string }> = [
  { name: 'the device clock eight days ahead', offsetMs: 8 * DAY_MS, reason: 'expired' },
  { name: 'the device clock a day behind', offsetMs: -DAY_MS, reason: 'not-yet-valid' }
]

for (const kase of clockCases) {
  test.serial(`agent case ${++caseNumber}: ${kase.name} → ${kase.reason}`, async t => {
    const { lab } = t.context
    const hostname = `clock-${kase.offsetMs}`
    const taskId = await taskFor(lab, hostname)
    lab.proxy.rewrite(answer => answer)
    const agent = await startLabAgent(lab, hostname, { now: () => Date.now() + kase.offsetMs })
    try {
      const refusal = await agent.refusal(taskId)
      t.is(refusal.reason, kase.reason, refusal.message)
      t.deepEqual(await filesUnder(agent.installRoot), [], 'nothing installed')
      t.deepEqual(await cachedChunks(agent.dataDir), [], 'nothing cached')
      t.is((await agent.agent.store.getTask(taskId))?.manifest, undefined, 'no manifest accepted')
    } finally {
      await agent.stop()
    }
  })
}

test.serial(`agent case ${++caseNumber}: the coordinator goes down and the agent restarts meanwhile → it waits, keeps its state, and resumes`, async t => {
  const { lab } = t.context
  lab.proxy.rewrite(answer => answer)
  const hostname = 'coordinator-down'
  const taskId = await taskFor(lab, hostname)
  let agent = await startLabAgent(lab, hostname)
  try {
    const deviceId = agent.agent.identity.deviceId
    await waitFor(async () => (await lab.coordinator.services.tasks.row(taskId, deviceId))?.state === 'succeeded' ? true : undefined, 'the task to succeed', 60_000)
    const local = await agent.agent.store.getTask(taskId)
    const identity = await readFile(join(agent.dataDir, 'agent.json'), 'utf8')
    await agent.stop()
    lab.proxy.setDown(true)
    // A restart while the coordinator is away needs nothing from it.
    agent = await startLabAgent(lab, hostname)
    await new Promise(resolve => setTimeout(resolve, 500))
    t.deepEqual(await agent.agent.store.getTask(taskId), local, 'the task state is kept')
    t.is(await readFile(join(agent.dataDir, 'agent.json'), 'utf8'), identity, 'the identity is kept')
    lab.proxy.setDown(false)
    const second = await taskFor(lab, hostname)
    await waitFor(async () => (await lab.coordinator.services.tasks.row(second, deviceId))?.state === 'succeeded' ? true : undefined, 'a new task after the outage', 60_000)
    t.is((await agent.agent.store.getTask(taskId))?.attempt, local?.attempt, 'the finished task did not run again')
  } finally {
    lab.proxy.setDown(false)
    await agent.stop()
  }
})

test.serial(`agent case ${++caseNumber}: the device is blocked while its agent runs → device-blocked, no new task, nothing removed`, async t => {
  const { lab } = t.context
  lab.proxy.rewrite(answer => answer)
  const hostname = 'blocked-while-running'
  const agent = await startLabAgent(lab, hostname)
  try {
    const deviceId = agent.agent.identity.deviceId
    await waitFor(async () => agent.agent.assignments !== undefined ? true : undefined, 'a first assignments answer')
    const key = await pinnedKey(agent.dataDir)
    const refusalsBefore = lab.proxy.refusals.length
    await lab.api.post(`/v1/devices/${deviceId}/block`, { reason: 'test' })
    const taskId = await taskFor(lab, hostname)
    const refused = await waitFor(async () => lab.proxy.refusals.slice(refusalsBefore).find(refusal => refusal.path === '/v1/agents/assignments'), 'the held request to be refused')
    t.is(refused.status, 401)
    t.is(refused.reason, 'device-blocked')
    t.is(await agent.agent.store.getTask(taskId), undefined, 'the task never reached the device')
    t.is(await lab.coordinator.services.tasks.row(taskId, deviceId), undefined)
    t.is(await pinnedKey(agent.dataDir), key, 'the agent keeps its identity for when it is unblocked')
    await lab.api.post(`/v1/devices/${deviceId}/unblock`)
    await waitFor(async () => (await lab.coordinator.services.tasks.row(taskId, deviceId))?.state === 'succeeded' ? true : undefined, 'the task after unblocking', 60_000)
  } finally {
    await agent.stop()
  }
})

test.serial('control: agents that trust the coordinator\'s CA or pin its certificate enroll over HTTPS', async t => {
  const { lab, secure, certificates, secureToken } = t.context
  for (const [name, tls] of [['by-ca', { caPem: certificates.caPem }], ['by-pin', { pinSha256: certificates.fingerprint }]] as const) {
    const dataDir = join(lab.root, `tls-${name}`)
    const agent = await Agent.start({ dataDir, coordinatorUrl: secure.url, enrollToken: secureToken, tls, hostname: name, logger: silentLogger() })
    try {
      const stored = JSON.parse(await readFile(join(dataDir, 'agent.json'), 'utf8'))
      t.deepEqual(stored.tls, tls, 'the trust is kept in agent.json')
      t.is(new URL(stored.coordinatorUrl).origin, new URL(secure.url).origin)
    } finally {
      await agent.stop()
    }
    // A later start needs neither the token nor the trust again.
    const again = await Agent.start({ dataDir, coordinatorUrl: secure.url, logger: silentLogger() })
    await waitFor(async () => again.assignments !== undefined ? true : undefined, 'an assignments answer over HTTPS')
    await again.stop()
    await rm(dataDir, { recursive: true, force: true })
  }
})
