import ssh2 from 'ssh2'

type KeyPairOptions = Parameters<typeof ssh2.utils.generateKeyPairSync>[1]

/**
 * An ed25519 key pair in OpenSSH format from ssh2's generator, checked to
 * read back. The generator strips the leading zero byte of a public key that
 * starts with one (about one key in 256), and the pair it writes then does
 * not parse (mscdex/ssh2 #1390, #1513): such a pair is drawn again, as
 * `ssh-keygen` would never have written it.
 */
export function ed25519KeyPair (options?: KeyPairOptions): { private: string, public: string } {
  for (let attempt = 0; attempt < 32; attempt++) {
    const pair = options !== undefined ? ssh2.utils.generateKeyPairSync('ed25519', options) : ssh2.utils.generateKeyPairSync('ed25519')
    const passphrase = (options as { passphrase?: string } | undefined)?.passphrase
    if (!(ssh2.utils.parseKey(pair.public) instanceof Error) && !(ssh2.utils.parseKey(pair.private, passphrase) instanceof Error)) return pair
  }
  throw new Error('ssh2 generated no readable ed25519 key pair in 32 attempts')
}
