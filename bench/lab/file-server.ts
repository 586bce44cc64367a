// Runs inside the lab's headquarters namespace: serves one file over plain
// HTTP, so that `curl` from a site measures what the WAN link itself carries
// for the same bytes (the physical reference of the benchmarks).
//   node file-server.js FILE HOST PORT      prints `ready` once listening
import { createReadStream, statSync } from 'node:fs'
import { createServer } from 'node:http'

const [file, host, port] = process.argv.slice(2)
if (file === undefined || host === undefined || port === undefined) {
  process.stderr.write('usage: file-server FILE HOST PORT\n')
  process.exit(2)
}
const sizeBytes = statSync(file).size
const server = createServer((request, response) => {
  if (request.method !== 'GET') {
    response.writeHead(405).end()
    return
  }
  response.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': sizeBytes })
  createReadStream(file, { highWaterMark: 1024 * 1024 }).pipe(response)
})
server.listen(Number(port), host, () => { process.stdout.write('ready\n') })
const stop = (): void => { server.close(); process.exit(0) }
process.once('SIGTERM', stop)
process.once('SIGINT', stop)
