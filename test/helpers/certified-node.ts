import type { Libp2p } from '@libp2p/interface'
import { CertificateExchange } from '../../agent/p2p/certificate-exchange.js'
import type { PeerGate } from '../../agent/p2p/gater.js'
import { fromHex, trustKeys, type SignedEnvelope } from '../../protocol/index.js'
import { silentLogger } from '../../protocol/logger.js'

/** What an enrollment answer carries for a node that joins the mesh the way an agent does. */
export interface EnrolledTrust {
  certificate?: SignedEnvelope
  coordinatorPublicKey: string
}

/** Lets a hand-built node present the device certificate it was enrolled with (and check the agents'), as agents do. */
export async function presentCertificate (node: Libp2p, gate: PeerGate, enrolled: EnrolledTrust): Promise<CertificateExchange> {
  const exchange = new CertificateExchange({
    node,
    gate,
    certificate: () => enrolled.certificate,
    keys: () => trustKeys(fromHex(enrolled.coordinatorPublicKey)),
    logger: silentLogger()
  })
  await exchange.start()
  return exchange
}
