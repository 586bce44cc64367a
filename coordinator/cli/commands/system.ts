import { Command } from 'commander'
import { clientFrom, print, printJson, run, withApiOptions } from '../context.js'
import { followEvents } from '../event-follower.js'
import { formatBytes, table } from '../format.js'

/** Commands about the coordinator itself and the signed-in operator. */
export function systemCommands (): Command[] {
  const health = withApiOptions(new Command('health'))
    .description('check that the coordinator answers (no token needed)')
    .action(async options => {
      await run(async () => {
        const client = clientFrom(options)
        const answer = await client.get('/v1/health')
        client.close()
        if (options.json === true) return printJson(answer)
        print(`${answer.status}: meshdeploy ${answer.version}, up ${answer.uptimeSeconds} s, signing key ${answer.coordinatorKeyId}`)
      })
    })

  const whoami = withApiOptions(new Command('whoami'))
    .description('show the operator the token belongs to and its role')
    .action(async options => {
      await run(async () => {
        const client = clientFrom(options)
        const me = await client.get('/v1/me')
        client.close()
        if (options.json === true) return printJson(me)
        print(Object.entries(me).map(([key, value]) => `${key.padEnd(10)} ${typeof value === 'object' ? JSON.stringify(value) : String(value)}`).join('\n'))
      })
    })

  const stats = withApiOptions(new Command('stats'))
    .description('what the origin served since the coordinator started')
    .action(async options => {
      await run(async () => {
        const client = clientFrom(options)
        const answer = await client.get('/v1/stats')
        client.close()
        if (options.json === true) return printJson(answer)
        print(table(['ORIGIN REQUESTS', 'ORIGIN BYTES'], [[answer.origin.requests, formatBytes(answer.origin.bytesServed)]]))
      })
    })

  const metrics = withApiOptions(new Command('metrics'))
    .description('print the coordinator\'s Prometheus metrics')
    .action(async options => {
      await run(async () => {
        const client = clientFrom(options)
        const text = await client.getText('/metrics')
        client.close()
        process.stdout.write(text)
      })
    })

  const openapi = withApiOptions(new Command('openapi'))
    .description('print the API\'s OpenAPI 3.1 document')
    .action(async options => {
      await run(async () => {
        const client = clientFrom(options, { raw: true })
        const document = await client.get('/v1/openapi.json')
        client.close()
        printJson(document)
      })
    })

  const events = withApiOptions(new Command('events'))
    .description('follow the coordinator\'s live events as JSON lines (reconnects and resumes by itself) until interrupted')
    .option('--task <id>', 'only the events of one task')
    .addHelpText('after', '\nExample:\n  meshdeploy events --task task-3f9a0c1b7d2e4a65 | jq .data.state')
    .action(async options => {
      await run(async () => {
        const client = clientFrom(options)
        const stop = new AbortController()
        const interrupt = (): void => { stop.abort() }
        process.once('SIGINT', interrupt)
        process.once('SIGTERM', interrupt)
        const path = options.task !== undefined ? `/v1/events?taskId=${encodeURIComponent(options.task)}` : '/v1/events'
        try {
          await followEvents(client, path, {
            signal: stop.signal,
            onMessage: message => {
              let data: unknown = message.data
              try { data = JSON.parse(message.data) } catch {}
              process.stdout.write(JSON.stringify({ id: message.id, event: message.event, data }) + '\n')
            },
            onState: state => { if (state !== 'live') process.stderr.write(`events: ${state}\n`) }
          })
        } finally {
          process.off('SIGINT', interrupt)
          process.off('SIGTERM', interrupt)
          client.close()
        }
      })
    })

  return [health, whoami, stats, metrics, openapi, events]
}
