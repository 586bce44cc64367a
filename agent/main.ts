import '../protocol/polyfill.js'
import { Agent, type AgentInit } from './agent.js'
import { createLogger } from '../protocol/logger.js'
import { describeError } from '../protocol/index.js'

export { Agent, type AgentInit }

export interface RunAgentOptions extends Omit<AgentInit, 'logger'> {
  logLevel?: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent'
}

/** Runs an agent until SIGINT or SIGTERM. */
export async function runAgent (options: RunAgentOptions): Promise<void> {
  const logger = createLogger(options.logLevel ?? 'info', 'agent')
  let agent: Agent
  try {
    agent = await Agent.start({ ...options, logger })
  } catch (error) {
    logger.fatal({ err: describeError(error) }, 'the agent could not start')
    logger.flush()
    process.stderr.write(`meshdeploy agent: ${describeError(error)}\n`)
    process.exitCode = 2
    return
  }
  process.stdout.write(JSON.stringify({ event: 'agent-started', deviceId: agent.identity.deviceId, peerId: agent.identity.peerId, site: agent.identity.site, peerAddresses: agent.mesh?.addresses() ?? [], ...(agent.metricsUrl !== undefined ? { metricsUrl: agent.metricsUrl } : {}) }) + '\n')
  await new Promise<void>(resolve => {
    const stop = (): void => { resolve() }
    process.once('SIGINT', stop)
    process.once('SIGTERM', stop)
  })
  await agent.stop()
  logger.flush()
}
