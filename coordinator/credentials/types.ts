/** How a credential logs in: an SSH private key, or a user name and password. */
export type CredentialType = 'ssh-key' | 'account'

export const CREDENTIAL_TYPES: readonly CredentialType[] = ['ssh-key', 'account']

/** A secret sealed with AES-256-GCM under the coordinator's credential key. */
export interface SealedSecret {
  /** Which credential key sealed it (the first bytes of its SHA-256, hex). */
  keyId: string
  /** base64 */
  nonce: string
  /** base64 */
  ciphertext: string
  /** base64 */
  tag: string
}

/**
 * An account or SSH key that push installs log in with, as stored: what may
 * be shown, and the secret sealed. Nothing of the secret (key, passphrase,
 * password) is ever stored in the clear, returned, logged or audited.
 */
export interface CredentialRecord {
  id: string
  /** Unique, chosen by the operator. */
  name: string
  type: CredentialType
  /** The user name it logs in as. */
  user: string
  /** ssh-key: the public key's SHA-256 fingerprint as ssh-keygen -l prints it (SHA256:…). */
  fingerprint?: string
  /** ssh-key: the key's algorithm (ssh-ed25519, ssh-rsa, ecdsa-sha2-nistp256, …). */
  keyType?: string
  createdAt: string
  createdBy: string
  sealed: SealedSecret
}

/** What the API shows of a credential. */
export type CredentialView = Omit<CredentialRecord, 'sealed'>

/** The secret of a credential, only ever held in memory while a push logs in with it. */
export type CredentialSecret =
  | { type: 'ssh-key', privateKey: string, passphrase?: string }
  | { type: 'account', password: string }
