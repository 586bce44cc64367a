import '../../protocol/polyfill.js'
import { createServer } from 'node:net'
import { mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import test from 'ava'
import { Agent } from '../../agent/agent.js'
import { ApiClient } from '../../coordinator/cli/api-client.js'
import { startCoordinator } from '../../coordinator/main.js'
import { silentLogger } from '../../protocol/logger.js'
import { tempFolder } from '../helpers/temp.js'

async function freePort (): Promise<number> {
  return await new Promise((resolve, reject) => {
    const server = createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number }
      server.close(() => { resolve(port) })
    })
  })
}

test('an agent installed while the coordinator is down keeps trying and enrolls once it is up; past its patience it gives up with the reason', async t => {
  const root = await tempFolder(t, 'md-enroll-')
  const port = await freePort()
  const url = `http://127.0.0.1:${port}`
  // Given up at once: no patience.
  const impatient = Agent.start({ dataDir: join(root, 'impatient'), coordinatorUrl: url, allowInsecureHttp: true, enrollToken: 'unused', installRoot: join(root, 'install'), logger: silentLogger(), enrollRetryMs: 0 })
  await t.throwsAsync(impatient, { name: 'CoordinatorUnreachableError' })

  // A coordinator that comes up after the agent started: its token is made beforehand on the same data.
  const dataDir = join(root, 'coordinator')
  const first = await startCoordinator({ dataDir, port: 0, logger: silentLogger() })
  const api = new ApiClient({ url: first.url, token: first.services.bootstrapAdminToken! })
  const { token } = await api.post('/v1/enrollment-tokens', { maxUses: 5 })
  api.close()
  await first.close()
  await mkdir(join(root, 'install'), { recursive: true })
  const starting = Agent.start({ dataDir: join(root, 'patient'), coordinatorUrl: url, allowInsecureHttp: true, enrollToken: token, hostname: 'patient', installRoot: join(root, 'install'), logger: silentLogger(), enrollRetryMs: 60_000 })
  let settled = false
  void starting.finally(() => { settled = true }).catch(() => {})
  await new Promise(resolve => setTimeout(resolve, 1500))
  t.false(settled, 'still trying while the coordinator is down')
  const coordinator = await startCoordinator({ dataDir, port, logger: silentLogger() })
  try {
    const agent = await starting
    try {
      const device = await coordinator.services.devices.get(agent.identity.deviceId)
      t.is(device?.hostname, 'patient')
    } finally {
      await agent.stop()
    }
  } finally {
    await coordinator.close()
  }
})
