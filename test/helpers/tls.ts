import { execFile } from 'node:child_process'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { certificateFingerprint } from '../../protocol/index.js'

const run = promisify(execFile)

export interface TestCertificates {
  /** The CA that signed the server certificate. */
  caPath: string
  caPem: string
  /** The server certificate (for 127.0.0.1 and localhost) and its key. */
  certPath: string
  keyPath: string
  /** SHA-256 fingerprint of the server certificate, as --pin-sha256 takes it. */
  fingerprint: string
  /** A CA that signed nothing here: trusting it must not be enough. */
  otherCaPath: string
}

async function openssl (args: string[], cwd: string): Promise<void> {
  await run('openssl', args, { cwd })
}

async function makeCa (folder: string, name: string): Promise<void> {
  await openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.pem`,
    '-days', '2', '-subj', `/CN=meshdeploy test ${name}`], folder)
}

/** Makes a CA, a server certificate it signs for 127.0.0.1/localhost, and an unrelated CA, with openssl. */
export async function makeTestCertificates (folder: string): Promise<TestCertificates> {
  await makeCa(folder, 'ca')
  await makeCa(folder, 'other-ca')
  await openssl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=127.0.0.1'], folder)
  await writeFile(join(folder, 'server.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n')
  await openssl(['x509', '-req', '-in', 'server.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'server.pem', '-days', '2', '-extfile', 'server.ext'], folder)
  const certPem = await readFile(join(folder, 'server.pem'), 'utf8')
  return {
    caPath: join(folder, 'ca.pem'),
    caPem: await readFile(join(folder, 'ca.pem'), 'utf8'),
    certPath: join(folder, 'server.pem'),
    keyPath: join(folder, 'server.key'),
    fingerprint: certificateFingerprint(certPem),
    otherCaPath: join(folder, 'other-ca.pem')
  }
}
