import test from 'ava'
import { publicKeyFromRaw } from '@libp2p/crypto/keys'
import { peerIdFromPublicKey } from '@libp2p/peer-id'
import { generateKeyPair, peerIdOf } from '../../protocol/index.js'

test('a device\'s peer id is the one libp2p derives from its ed25519 key', t => {
  for (let run = 0; run < 50; run++) {
    const { publicKey } = generateKeyPair()
    t.is(peerIdOf(publicKey), peerIdFromPublicKey(publicKeyFromRaw(publicKey)).toString())
  }
  // Leading zero bytes of the key are carried through the base58 encoding.
  const zeros = new Uint8Array(32)
  t.is(peerIdOf(zeros), peerIdFromPublicKey(publicKeyFromRaw(zeros)).toString())
})

test('a key of another length is refused', t => {
  t.throws(() => peerIdOf(new Uint8Array(31)), { instanceOf: TypeError })
})
