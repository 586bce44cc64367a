// Runs inside a lab namespace: accepts connections on a unix socket (which,
// unlike a TCP port, the host namespace can reach) and forwards each to a
// TCP address inside the namespace.
//   node forwarder.js SOCKET HOST PORT
import { createConnection, createServer } from 'node:net'
import { rmSync } from 'node:fs'

const [socketPath, host, port] = process.argv.slice(2)
if (socketPath === undefined || host === undefined || port === undefined) {
  process.stderr.write('usage: forwarder SOCKET HOST PORT\n')
  process.exit(2)
}
rmSync(socketPath, { force: true })
const server = createServer(client => {
  const upstream = createConnection({ host, port: Number(port) })
  upstream.setNoDelay(true)
  client.pipe(upstream).pipe(client)
  client.on('error', () => { upstream.destroy() })
  upstream.on('error', () => { client.destroy() })
})
server.listen(socketPath, () => { process.stdout.write('ready\n') })
const stop = (): void => { server.close(); rmSync(socketPath, { force: true }); process.exit(0) }
process.once('SIGTERM', stop)
process.once('SIGINT', stop)
